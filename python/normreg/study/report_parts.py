"""The parts every study report is made of: numbers (``mean ± std`` formatting, two-arm
comparisons, markdown tables), the figures (bars, histograms, sample grids, curves over
lambda) and the generated sentences. ``normreg.study.report`` (the loss-ablation and
weight-penalty reports) and ``normreg.study.compression_report`` are built from them."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._io import atomic_savefig, from_jsonable_float
from .records import HIST_EDGES, METRIC_DIRECTIONS

__all__ = ["fmt_pm", "compare"]


# ----------------------------------------------------------------------------------------
# Numbers
# ----------------------------------------------------------------------------------------
def fmt_pm(
    mean: float, std: float, scale: float = 1.0, digits: int | None = None, n: int | None = None
) -> str:
    """``mean ± std`` with a precision that follows the spread; the mean alone for one run
    (``n < 2``: a single run has no spread to show) or a NaN std."""
    if mean is None or not math.isfinite(mean):
        return "–" if mean is None or math.isnan(mean) else ("∞" if mean > 0 else "-∞")
    if (n is not None and n < 2) or (std is not None and math.isnan(std)):
        m = mean * scale
        if digits is None:
            digits = 3 if m == 0 else max(0, min(4, 2 - int(math.floor(math.log10(abs(m))))))
        return f"{m:.{digits}f}"
    m, s = mean * scale, (std or 0.0) * scale
    if digits is None:
        ref = s if s > 0 else abs(m)
        digits = 3 if ref == 0 else max(0, min(4, 1 - int(math.floor(math.log10(ref))) + (0 if s > 0 else 1)))
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def _stats(row: dict, metric: str) -> tuple[float, float, int]:
    return (
        from_jsonable_float(row["mean"].get(metric, math.nan)),
        from_jsonable_float(row["std"].get(metric, math.nan)),
        int(row["n"].get(metric, 0)),
    )


def compare(a: dict, b: dict, metric: str) -> tuple[str, float, float]:
    """Is arm ``a`` better than ``b`` on ``metric`` beyond the seeds' spread?

    Returns (verdict, difference a - b, its standard error), verdict one of "better",
    "worse", "within spread", "n/a". A difference counts when ``|d| > 2 se`` with
    ``se = sqrt(s_a²/n_a + s_b²/n_b)`` (and with one seed per arm nothing counts).
    """
    ma, sa, na = _stats(a, metric)
    mb, sb, nb = _stats(b, metric)
    if not (math.isfinite(ma) and math.isfinite(mb)) or na == 0 or nb == 0:
        return "n/a", math.nan, math.nan
    d = ma - mb
    se = math.sqrt(sa**2 / na + sb**2 / nb)
    if na < 2 or nb < 2 or abs(d) <= 2 * se:
        return "within spread", d, se
    good = d * METRIC_DIRECTIONS.get(metric, 1) > 0
    return ("better" if good else "worse"), d, se


_LABEL = {
    "psnr": "PSNR (dB) ↑",
    "ssim": "SSIM ↑",
    "classifier_score": "classifier score ↑",
    "kid": "KID ↓",
    "hist_w1": "intensity W1 ↓",
    "out_std": "output std",
    "zero_fraction": "exact zeros (%)",
    "near_zero_fraction": "|w| < 1e-3 (%)",
    "step_ms": "ms / step",
}
_SCALE = {"zero_fraction": 100.0, "near_zero_fraction": 100.0}


def _table(
    rows: Sequence[dict], metrics: Sequence[str], first: str = "arm", extra: Sequence[dict] = ()
) -> str:
    head = [first, "seeds", *[_LABEL.get(m, m) for m in metrics]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["labels"]["arm"], str(row["n_runs"])]
        for m in metrics:
            mu, sd, n = _stats(row, m)
            cells.append(fmt_pm(mu, sd, _SCALE.get(m, 1.0), n=n))
        lines.append("| " + " | ".join(cells) + " |")
    for e in extra:
        lines.append("| " + " | ".join([e["name"], e.get("n", ""), *[e.get(m, "") for m in metrics]]) + " |")
    return "\n".join(lines)


def _rows(summ: Sequence[dict], group: str) -> list[dict]:
    return [r for r in summ if r["labels"].get("group") == group]


def _by_name(rows: Sequence[dict]) -> dict[str, dict]:
    return {r["labels"]["arm"]: r for r in rows}


def _real_row(records: Sequence[dict], group: str) -> dict:
    """Reference values of the real images: classifier score, KID floor, their spread."""
    rec = [r for r in records if r["labels"].get("group") == group]

    def ms(key: str, scale: float = 1.0) -> str:
        vals = [from_jsonable_float(r["metrics"].get(key, math.nan)) for r in rec]
        vals = [v for v in vals if math.isfinite(v)]
        if not vals:
            return ""
        mu = sum(vals) / len(vals)
        sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        return fmt_pm(mu, sd, scale, n=len(vals))

    return {
        "name": "*real images*",
        "classifier_score": ms("real_classifier_score"),
        "kid": ms("kid_floor") + " (floor)" if ms("kid_floor") else "",
        "out_std": ms("real_std"),
        "hist_w1": "0",
    }


# ----------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------
def _suptitle(fig, text: str, fontsize: int = 9) -> None:
    """A figure title wrapped to the figure's width (a long one-line title is clipped)."""

    fig.suptitle(
        "\n".join(textwrap.wrap(text, max(30, int(fig.get_figwidth() * 100 / fontsize)))), fontsize=fontsize
    )


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _bar_figure(
    rows: Sequence[dict], records: Sequence[dict], metrics: Sequence[str], path: Path, title: str
) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics), 3.6), squeeze=False)
    names = [r["labels"]["arm"] for r in rows]
    for ax, m in zip(axes[0], metrics):
        scale = _SCALE.get(m, 1.0)
        mus = [_stats(r, m)[0] * scale for r in rows]
        sds = [_stats(r, m)[1] * scale for r in rows]
        xs = list(range(len(rows)))
        ax.bar(xs, [v if math.isfinite(v) else 0 for v in mus], yerr=sds, capsize=3, color="C0", alpha=0.55)
        for x, r in zip(xs, rows):
            vals = [
                from_jsonable_float(rec["metrics"].get(m, math.nan)) * scale
                for rec in records
                if rec["labels"] == r["labels"]
            ]
            ax.plot([x] * len(vals), vals, "k.", ms=4)
        ax.set_xticks(xs, names, rotation=45, ha="right", fontsize=8)
        ax.set_title(_LABEL.get(m, m), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    _suptitle(fig, title + " (bars: mean ± std over seeds; dots: seeds)")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _hist_figure(rows: Sequence[dict], records: Sequence[dict], path: Path, title: str) -> None:
    plt = _plt()
    n = len(rows)
    cols = min(4, n)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.0 * cols, 2.4 * nrows), squeeze=False, sharey=True)
    centers = [(a + b) / 2 for a, b in zip(HIST_EDGES[:-1], HIST_EDGES[1:])]
    width = HIST_EDGES[1] - HIST_EDGES[0]
    for k, r in enumerate(rows):
        ax = axes[k // cols][k % cols]
        recs = [
            rec for rec in records if rec["labels"] == r["labels"] and "hist_fake" in rec.get("extra", {})
        ]
        if not recs:
            ax.set_visible(False)
            continue
        fake = [sum(rec["extra"]["hist_fake"][i] for rec in recs) / len(recs) for i in range(len(centers))]
        real = [sum(rec["extra"]["hist_real"][i] for rec in recs) / len(recs) for i in range(len(centers))]
        ax.bar(centers, real, width=width, color="0.75", label="real")
        ax.step(centers, fake, where="mid", color="C3", label="output")
        ax.set_yscale("log")
        ax.set_ylim(1e-3, 1)
        ax.set_title(r["labels"]["arm"], fontsize=9)
        if k == 0:
            ax.legend(fontsize=7)
    for k in range(n, nrows * cols):
        axes[k // cols][k % cols].set_visible(False)
    _suptitle(fig, title)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _samples_figure(rows: Sequence[dict], records: Sequence[dict], path: Path, title: str) -> None:

    plt = _plt()
    first = {}
    wanted = [r["labels"] for r in rows]
    for rec in records:
        if rec["labels"] not in wanted:
            continue
        key = rec["labels"]["arm"]
        if "examples" in rec.get("extra", {}) and (key not in first or rec["seed"] < first[key]["seed"]):
            first[key] = rec
    names = [r["labels"]["arm"] for r in rows if r["labels"]["arm"] in first]
    if not names:
        return
    ex0 = first[names[0]]["extra"]["examples"]
    lines = [("input", np.array(ex0["input"])), ("real", np.array(ex0["target"]))]
    lines += [(n, np.array(first[n]["extra"]["examples"]["output"])) for n in names]
    k = lines[0][1].shape[0]
    fig, axes = plt.subplots(len(lines), k, figsize=(0.75 * k + 1.4, 0.78 * len(lines)), squeeze=False)
    for i, (label, imgs) in enumerate(lines):
        for j in range(k):
            ax = axes[i][j]
            img = imgs[j]
            img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0)) * 0.5 + 0.5
            ax.imshow(img, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    _suptitle(fig, title)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _lambda_figure(rows: Sequence[dict], refs: dict[str, dict], metrics: Sequence[str], path: Path) -> None:
    plt = _plt()
    lams = [float(r["labels"]["arm"].split("λ=")[1]) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: lams[i])
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.0), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        scale = _SCALE.get(m, 1.0)
        ax.errorbar(
            [lams[i] for i in order],
            [_stats(rows[i], m)[0] * scale for i in order],
            yerr=[_stats(rows[i], m)[1] * scale for i in order],
            fmt="o-",
            capsize=3,
            label="L1 + cGAN",
        )
        for k, (name, row) in enumerate(refs.items()):
            mu, sd, _ = _stats(row, m)
            if math.isfinite(mu):
                ax.axhline(mu * scale, color=f"C{k + 1}", ls="--", lw=1, label=name)
                ax.axhspan((mu - sd) * scale, (mu + sd) * scale, color=f"C{k + 1}", alpha=0.12)
        ax.set_xscale("log")
        ax.set_xlabel("λ (L1 weight)")
        ax.set_title(_LABEL.get(m, m), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    _suptitle(
        fig, "L1 + cGAN against λ (mean ± std over seeds); dashed: the arms without a GAN or without L1"
    )
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100, bbox_inches="tight")
    plt.close(fig)


# ----------------------------------------------------------------------------------------
# Sentences
# ----------------------------------------------------------------------------------------
def _sentence(a: dict | None, b: dict | None, metric: str) -> str | None:
    if a is None or b is None:
        return None
    verdict, d, se = compare(a, b, metric)
    if verdict == "n/a":
        return None
    sa, sb = _stats(a, metric), _stats(b, metric)
    scale = _SCALE.get(metric, 1.0)
    name = _LABEL.get(metric, metric)
    what = {
        "better": "better than",
        "worse": "worse than",
        "within spread": "not distinguishable from",
    }[verdict]
    return (
        f"{a['labels']['arm']} is {what} {b['labels']['arm']} on {name}: "
        f"{fmt_pm(sa[0], sa[1], scale, n=sa[2])} vs {fmt_pm(sb[0], sb[1], scale, n=sb[2])} "
        f"(difference {d * scale:+.3g}, 2 × standard error {2 * se * scale:.2g})."
    )


def _best_of(rows: Sequence[dict], metric: str) -> str | None:
    d = METRIC_DIRECTIONS.get(metric, 1)
    cand = [r for r in rows if math.isfinite(_stats(r, metric)[0])]
    if len(cand) < 2:
        return None
    ranked = sorted(cand, key=lambda r: -d * _stats(r, metric)[0])
    best, second = ranked[0], ranked[1]
    verdict, _, _ = compare(best, second, metric)
    tail = "ahead of" if verdict == "better" else "tied within the seeds' spread with"
    return f"Best {_LABEL.get(metric, metric)}: {best['labels']['arm']}, {tail} {second['labels']['arm']}."
