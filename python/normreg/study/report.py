"""The markdown report of a study: tables (mean ± std over seeds), figures, and what they say.

The statements under "What the numbers say" are generated from the numbers by fixed rules
(a difference counts only when it exceeds twice its standard error over seeds), so the
report says what was measured whichever way it comes out.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import normreg

from ._io import atomic_savefig, atomic_write_text, from_jsonable_float
from .records import HIST_EDGES, METRIC_DIRECTIONS, results_csv, summarize

__all__ = ["write_report", "compare", "fmt_pm"]


# ----------------------------------------------------------------------------------------
# Numbers
# ----------------------------------------------------------------------------------------
def fmt_pm(mean: float, std: float, scale: float = 1.0, digits: int | None = None, n: int | None = None) -> str:
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


def _table(rows: Sequence[dict], metrics: Sequence[str], first: str = "arm", extra: Sequence[dict] = ()) -> str:
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
    import textwrap

    fig.suptitle("\n".join(textwrap.wrap(text, max(30, int(fig.get_figwidth() * 100 / fontsize)))), fontsize=fontsize)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _bar_figure(rows: Sequence[dict], records: Sequence[dict], metrics: Sequence[str], path: Path, title: str) -> None:
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
            vals = [from_jsonable_float(rec["metrics"].get(m, math.nan)) * scale for rec in records
                    if rec["labels"] == r["labels"]]
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
        recs = [rec for rec in records if rec["labels"] == r["labels"] and "hist_fake" in rec.get("extra", {})]
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
    import numpy as np

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
        ax.errorbar([lams[i] for i in order], [_stats(rows[i], m)[0] * scale for i in order],
                    yerr=[_stats(rows[i], m)[1] * scale for i in order], fmt="o-", capsize=3, label="L1 + cGAN")
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
    _suptitle(fig, "L1 + cGAN against λ (mean ± std over seeds); dashed: the arms without a GAN or without L1")
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


# ----------------------------------------------------------------------------------------
# The reports
# ----------------------------------------------------------------------------------------
def _header(study, records, mode: str, elapsed_s: float, threads: int, jobs: int, notes: Sequence[str]) -> list[str]:
    import torch

    seeds = sorted({r["seed"] for r in records})
    steps = sorted({r["config"]["steps"] for r in records})
    out = [
        f"# {study.title}",
        "",
        f"Generated by `normreg study {study.name} --out DIR{' --smoke' if mode == 'smoke' else ''}` "
        f"on {time.strftime('%Y-%m-%d', time.gmtime())}: {len({r['key'] for r in records})} trainings, seeds {seeds}, "
        f"{', '.join(map(str, steps))} steps each, {elapsed_s / 60:.1f} min of wall time with "
        f"{jobs} run(s) at once, {threads} torch thread(s) each, on {os.cpu_count()} cores "
        f"({platform.machine()}, torch {torch.__version__}, normreg {normreg.__version__}).",
        "",
    ]
    if mode == "smoke":
        out += ["> **Smoke mode**: a few steps and one seed, to test the machinery. These numbers measure nothing.", ""]
    out += [
        "Every number is the mean ± sample standard deviation over seeds. A seed changes the "
        "initialization, the batches, the train/val/test split and the real-data classifier "
        "used for scoring, so the spread is that of the whole experiment. Metrics are computed "
        "on the validation split.",
        "",
        "## Question",
        "",
        study.question,
        "",
    ]
    if notes:
        out += ["Left out:", "", *[f"- {n}" for n in notes], ""]
    return out


def _loss_ablation_report(study, records, summ, out: Path, lines: list[str]) -> None:
    comp = _rows(summ, "completion")
    lam = _rows(summ, "lambda")
    den = _rows(summ, "denoise")
    cfg0 = records[0]["config"]
    metrics = ["psnr", "ssim", "classifier_score", "kid", "hist_w1", "out_std"]
    lines += [
        "## Setup",
        "",
        f"- Data: scikit-learn's 8x8 digits; task **completion**: G sees the top half (and the mask) "
        f"and draws the whole image; metrics look at what it had to invent where it matters "
        f"(intensity histogram and W1 over the hidden bottom half). Control task **denoise**: "
        f"Gaussian noise of std {records[-1]['config'].get('noise_std', 0.5)} on images in [-1, 1].",
        f"- Models: normreg.gan's U-Net G and patch D (width {cfg0['width']}), Adam lr "
        f"{cfg0['lr_g']}/{cfg0['lr_d']}, batch {cfg0['batch_size']}, {cfg0['steps']} steps, "
        f"EMA of G {cfg0['ema_decay']}, no weight penalty.",
        "- Arms (pix2pix Table 1): **L1**, **L2**: reconstruction only (λ = 100, no D); **GAN**: "
        "adversarial term only, D sees the output alone; **cGAN**: adversarial only, D sees (input, output); "
        "**L1 + cGAN**, **L2 + cGAN**: λ = 100 reconstruction plus the cGAN term.",
        "- Metrics: **PSNR** and **SSIM** against the true image (distortion: they reward the "
        "conditional mean, i.e. blur); **classifier score**: accuracy of a CNN trained on real "
        "digits on the completed images (the pix2pix FCN-score idea); **KID** between "
        "output and real images in that CNN's 128 features (cubic-kernel MMD², unnormalized features, "
        "so only its ratios are meaningful; the *floor* is KID between two samples of real images; "
        "the estimate is unbiased, so it can be negative, and values within the floor's spread cannot "
        "be told from real images at this sample size); **intensity W1**: Wasserstein-1 distance "
        "between the output and the real pixel intensities of the generated region; **output "
        "std**: their spread (real digits are nearly black-and-white, blur shrinks it).",
        "",
        "## Completion (bottom half hidden)",
        "",
        _table(comp, metrics, extra=[_real_row(records, "completion")]),
        "",
        "![metrics per arm](loss_ablation_metrics.png)",
        "",
        "Histogram of output intensities in the hidden half against the real one (mean over seeds, log scale):",
        "",
        "![histograms](loss_ablation_histograms.png)",
        "",
        "Validation inputs, their truth and each arm's completion (seed 0):",
        "",
        "![samples](loss_ablation_samples.png)",
        "",
    ]
    _bar_figure(comp, records, ["psnr", "classifier_score", "kid", "hist_w1"], out / "loss_ablation_metrics.png",
                "completion")
    _hist_figure(comp, records, out / "loss_ablation_histograms.png", "intensities of the hidden half: real (grey) vs output (red)")
    _samples_figure(comp, records, out / "loss_ablation_samples.png", "completion: input, truth, outputs")
    if lam:
        byc = _by_name(comp)
        refs = {k: byc[k] for k in ("L1", "cGAN") if k in byc}
        lines += [
            "## λ sweep of L1 + cGAN",
            "",
            _table(lam, metrics),
            "",
            "![lambda sweep](loss_ablation_lambda.png)",
            "",
        ]
        _lambda_figure(lam, refs, ["psnr", "classifier_score", "kid", "hist_w1"], out / "loss_ablation_lambda.png")
    if den:
        lines += [
            "## Control: denoising",
            "",
            "Denoising leaves far less to invent than completing half a digit: the conditional "
            "distribution of the answer is narrow, so its mean (what L1/L2 aim at) is close to a "
            "sharp sample, and a GAN term has less to add.",
            "",
            _table(den, metrics, extra=[_real_row(records, "denoise")]),
            "",
            "![denoise metrics](loss_ablation_denoise.png)",
            "",
        ]
        _bar_figure(den, records, ["psnr", "classifier_score", "kid", "hist_w1"], out / "loss_ablation_denoise.png",
                    "denoise")
    # findings
    c = _by_name(comp)
    said = []
    for m in ("psnr", "classifier_score", "kid", "hist_w1"):
        s = _best_of(comp, m)
        if s:
            said.append(s)
    for a, b in [("L1 + cGAN", "L1"), ("L2 + cGAN", "L2"), ("L1 + cGAN", "cGAN"), ("L2 + cGAN", "cGAN"),
                 ("cGAN", "GAN"), ("L1", "L2")]:
        for m in ("psnr", "classifier_score", "kid", "hist_w1"):
            s = _sentence(c.get(a), c.get(b), m)
            if s:
                said.append(s)
    if lam:
        ordered = sorted(lam, key=lambda r: float(r["labels"]["arm"].split("λ=")[1]))
        for m in ("psnr", "classifier_score", "kid"):
            vals = [_stats(r, m)[0] for r in ordered]
            if all(math.isfinite(v) for v in vals) and len(vals) > 1:
                best = ordered[max(range(len(vals)), key=lambda i: METRIC_DIRECTIONS[m] * vals[i])]
                trend = ("rises" if all(b >= a for a, b in zip(vals, vals[1:])) else
                         "falls" if all(b <= a for a, b in zip(vals, vals[1:])) else "is not monotone")
                said.append(f"Along λ, {_LABEL[m]} {trend} in the means; best at {best['labels']['arm'].split(', ')[1]}.")
    d = _by_name(den)
    for a, b in [("L1 + cGAN", "L1"), ("L1", "L2"), ("L1 + cGAN", "cGAN")]:
        for m in ("psnr", "classifier_score", "kid"):
            s = _sentence(d.get(a), d.get(b), m)
            if s:
                said.append("Denoise: " + s)
    lines += ["## What the numbers say", "",
              "Generated from the tables by one rule: a difference counts when it exceeds twice its "
              "standard error over seeds; otherwise the arms are called indistinguishable.", ""]
    lines += [f"- {s}" for s in said]
    lines.append("")


def _weight_penalty_report(study, records, summ, out: Path, lines: list[str]) -> None:
    cfg0 = records[0]["config"]
    metrics = ["kid", "classifier_score", "psnr", "zero_fraction", "near_zero_fraction", "step_ms"]
    lines += [
        "## Setup",
        "",
        f"- Task: the pix2pix completion of the 8x8 digits (L1 λ = {cfg0['recon_weight']:g} + cGAN), "
        f"{cfg0['steps']} steps, batch {cfg0['batch_size']}, penalty on G's weights only (biases and "
        "normalization layers are left unpenalized, `normreg.param_groups`). EMA of G is off, so the "
        "evaluated network is the one whose zeros are counted.",
        "- Penalties (see docs/conventions.md): `L1(λ)` = λ Σ|w|, `SquaredL2(λ)` = (λ/2) Σw², "
        "`ElasticNet(λ/2, λ/2)`, `L0(λ)` = λ·#{w ≠ 0}.",
        "- Ways: **loss**: `penalty.value(params)` added to G's loss, differentiated by autograd; "
        "**add_grad**: `penalty.add_grad_(params)` adds the gradient in one fused pass after backward; "
        "**prox**: `normreg.optim.ProxAdam` takes the Adam step and then the proximal step of "
        "lr·λ·R (soft threshold for L1, shrink for L2, hard threshold at √(2·lr·λ) for L0). "
        "L0 has no gradient, so it exists only as a proximal step.",
        "- **exact zeros**: the fraction of G's penalized weights that are exactly 0.0 at the end; "
        "**|w| < 1e-3**: those that are merely small. **ms / step**: median wall time of "
        f"{study.time_steps} extra training steps timed after training (machine shared with other "
        "jobs: compare within this table only).",
        "",
        "## Results",
        "",
        _table(summ, metrics),
        "",
        "![quality against sparsity](weight_penalty_sparsity.png)",
        "",
        "![time per step](weight_penalty_time.png)",
        "",
    ]
    _sparsity_figure(summ, out / "weight_penalty_sparsity.png")
    _time_figure(summ, records, out / "weight_penalty_time.png")
    said = []
    base = _by_name(summ).get("none")
    for r in summ:
        if r is base:
            continue
        zf = _stats(r, "zero_fraction")[0]
        if math.isfinite(zf) and zf > 0.01:
            parts = [f"{r['labels']['arm']}: {100 * zf:.1f}% exact zeros"]
            for m in ("kid", "classifier_score"):
                s = compare(r, base, m) if base else ("n/a", 0, 0)
                if s[0] != "n/a":
                    parts.append(f"{_LABEL[m]} {s[0]} vs no penalty" if s[0] != "within spread"
                                 else f"{_LABEL[m]} within the seeds' spread of no penalty")
            said.append("; ".join(parts) + ".")
    dense = [r["labels"]["arm"] for r in summ if r is not base and math.isfinite(_stats(r, "zero_fraction")[0])
             and _stats(r, "zero_fraction")[0] <= 0.001]
    if dense:
        said.append(f"No exact zeros (≤ 0.1%) with: {', '.join(dense)}.")
    times = _mode_times(records)
    if "none" in times and times["none"][0] > 0:
        t0 = times["none"][0]
        for mode, (mu, sd, n) in times.items():
            if mode != "none":
                said.append(f"Median step time with the penalty as {mode}: {mu:.2f} ± {sd:.2f} ms "
                            f"({mu / t0:.2f}× the {t0:.2f} ms of no penalty; {n} runs).")
    lines += ["## What the numbers say", "",
              "Generated from the table by one rule: a difference counts when it exceeds twice its "
              "standard error over seeds.", ""]
    lines += [f"- {s}" for s in said]
    lines.append("")


def _mode_times(records: Sequence[dict]) -> dict[str, tuple[float, float, int]]:
    groups: dict[str, list[float]] = {}
    for rec in records:
        mode = "none" if rec["config"]["weight_penalty"] == "none" else rec["config"]["penalty_mode"]
        v = from_jsonable_float(rec["metrics"].get("step_ms", math.nan))
        if math.isfinite(v):
            groups.setdefault(mode, []).append(v)
    out = {}
    for mode, vals in groups.items():
        mu = sum(vals) / len(vals)
        sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        out[mode] = (mu, sd, len(vals))
    return out


_MARKERS = {"loss": "o", "add_grad": "s", "grad": "D", "fused": "D", "prox": "^", "none": "*"}
_COLORS = {"none": "k", "l1": "C0", "l2": "C1", "elastic_net": "C2", "l0": "C3", "group_lasso": "C4"}


def _arm_parts(row: dict) -> tuple[str, str]:
    name = row["labels"]["arm"]
    if name == "none":
        return "none", "none"
    pen, mode = name.split()[:2]
    return pen, mode


def _sparsity_figure(summ: Sequence[dict], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
    seen = set()
    for ax, m in zip(axes, ("kid", "classifier_score")):
        scale = _SCALE.get(m, 1.0)
        for r in summ:
            pen, mode = _arm_parts(r)
            x, xs, _ = _stats(r, "zero_fraction")
            y, ys, _ = _stats(r, m)
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            label = f"{pen} / {mode}" if (pen, mode) not in seen and ax is axes[0] else None
            seen.add((pen, mode))
            ax.errorbar(100 * x, y * scale, xerr=100 * xs, yerr=ys * scale, fmt=_MARKERS.get(mode, "o"),
                        color=_COLORS.get(pen, "C5"), ms=6, capsize=2, label=label, alpha=0.85)
        ax.set_xlabel("exact zeros in G's weights (%)")
        ax.set_ylabel(_LABEL.get(m, m))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    _suptitle(fig, "quality against exact sparsity (each point: one penalty, way and λ; mean ± std over seeds)")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _time_figure(summ: Sequence[dict], records: Sequence[dict], path: Path) -> None:
    plt = _plt()
    groups: dict[tuple[str, str], list[float]] = {}
    for rec in records:
        cfg = rec["config"]
        pen = cfg["weight_penalty"]
        mode = "none" if pen == "none" else cfg["penalty_mode"]
        v = from_jsonable_float(rec["metrics"].get("step_ms", math.nan))
        if math.isfinite(v):
            groups.setdefault((pen, mode), []).append(v)
    keys = sorted(groups, key=lambda k: (k[0] != "none", k[0], ["loss", "add_grad", "grad", "fused", "prox", "none"].index(k[1])))
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(keys) + 1.5), 3.4))
    for i, k in enumerate(keys):
        vals = groups[k]
        mu = sum(vals) / len(vals)
        sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        ax.bar(i, mu, yerr=sd, capsize=3, color=_COLORS.get(k[0], "C5"), alpha=0.6)
        ax.plot([i] * len(vals), vals, "k.", ms=3)
    ax.set_xticks(range(len(keys)), [f"{p}\n{m}" for p, m in keys], fontsize=7)
    ax.set_ylabel("ms per training step (median)")
    ax.set_title("wall time per step by penalty and way (all λ and seeds; dots: runs)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_report(study, records: Sequence[dict], out_dir: str | os.PathLike, *, mode: str, notes: Sequence[str] = (),
                 elapsed_s: float = 0.0, threads: int = 1, jobs: int = 1) -> Path:
    """Write ``out_dir/report.md`` and its PNG figures; return the report's path."""
    out = Path(out_dir)
    order = {(a.name, a.group): i for i, a in enumerate(study.arms)}
    summ = sorted(summarize(records, ["arm", "group"]),
                  key=lambda r: order.get((r["labels"]["arm"], r["labels"]["group"]), len(order)))
    lines = _header(study, records, mode, elapsed_s, threads, jobs, notes)
    if study.name == "loss-ablation":
        _loss_ablation_report(study, records, summ, out, lines)
    elif study.name == "weight-penalty":
        _weight_penalty_report(study, records, summ, out, lines)
    else:  # pragma: no cover - every study has a report
        raise ValueError(f"no report for study {study.name!r}")
    lines += [
        "## Reproduce",
        "",
        "```",
        f"normreg study {study.name} --out DIR{' --smoke' if mode == 'smoke' else ''}"
        "        # add --resume to continue an interrupted run",
        "```",
        "",
        "Per-run numbers: `results.csv` beside this report; each run's full record (config, metrics, "
        "histograms, example outputs) in `points/` of the output directory.",
        "",
    ]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))

    atomic_write_text(out / "results.csv", results_csv(records, ["arm", "group"]))
    return path
