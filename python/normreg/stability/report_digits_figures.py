"""The figures of the digits part of the stability report: the sample grid of every arm, the final
state of every run, the validation KID curves. The tables and the text are in
:mod:`.report_digits`, the numbers both use in :mod:`.report_digits_numbers`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..study._io import atomic_savefig
from .report_common import _f, _ms, _plt
from .report_digits_numbers import DIGITS_METRICS, _dvalues, _n_div


def _digits_grid(by_arm: dict[str, list[dict]], path: Path, seed: int = 0) -> bool:
    plt = _plt()

    rows = [(a, next((r for r in recs if r["seed"] == seed), None)) for a, recs in by_arm.items()]
    rows = [(a, r) for a, r in rows if r is not None and r["summary"].get("grid")]
    if not rows:
        return False
    ncol = min(4, len(rows))
    nrow = math.ceil(len(rows) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.6 * ncol, 2.9 * nrow), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (arm, r) in enumerate(rows):
        g = np.asarray(r["summary"]["grid"], dtype=float)  # (n, 8, 8) in [-1, 1]
        n, h, w = g.shape
        side = int(math.ceil(math.sqrt(n)))
        canvas = np.full((side * (h + 1) - 1, side * (w + 1) - 1), 0.2)  # light grey gaps
        for i in range(n):
            y, x = divmod(i, side)
            canvas[y * (h + 1) : y * (h + 1) + h, x * (w + 1) : x * (w + 1) + w] = (g[i] + 1) / 2
        ax = axes.flat[k]
        ax.imshow(1 - canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        m = r["summary"]["metrics"]
        kid, cp = _f(m.get("kid")), _f(m.get("classes_present"))
        ax.set_title(
            f"{arm}\nKID {kid:.0f}, {cp:.0f} classes" if math.isfinite(kid) else f"{arm}\nnon-finite",
            fontsize=8,
        )
    fig.suptitle(
        f"Digits: {len(rows[0][1]['summary']['grid'])} samples of the final EMA generator per arm "
        f"(seed {seed}, the same latents for every arm)",
        fontsize=9,
    )
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return True


def _digits_final(by_arm: dict[str, list[dict]], path: Path, floor: float) -> None:
    plt = _plt()
    arms = list(by_arm)
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.35 * len(arms) + 1.6), sharey=True)
    y = list(range(len(arms)))
    div = [_n_div(by_arm[a]) for a in arms]
    n = [len(by_arm[a]) for a in arms]
    axes[0].barh(y, div, color="tab:red")
    for yi, d, k in zip(y, div, n):
        axes[0].text(d + 0.05, yi, f"{d}/{k}", va="center", fontsize=7)
    axes[0].set_xlim(0, max(n) + 0.8)
    axes[0].set_xlabel("diverged runs (non-finite, or < 5 classes)")
    seeds = sorted({r["seed"] for recs in by_arm.values() for r in recs})
    colors = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(seeds)}
    for ax, m in ((axes[1], "kid"), (axes[2], "class_entropy_normalized")):
        for yi, a in zip(y, arms):
            recs = [r for r in by_arm[a] if math.isfinite(_dvalues([r], m)[0])]
            ax.scatter(
                [_dvalues([r], m)[0] for r in recs],
                [yi] * len(recs),
                s=16,
                alpha=0.85,
                c=[colors[r["seed"]] for r in recs],
            )
            mu, _, k = _ms(_dvalues(recs, m))
            if k:
                ax.plot([mu, mu], [yi - 0.3, yi + 0.3], c="k", lw=1.2)
        ax.set_xlabel(DIGITS_METRICS[m][0] + " (dots: seeds, bar: mean)")
    for s in seeds:  # each seed's KID floor (its split's real-vs-real KID), in the seed's colour
        f = next(
            (
                _f(r["summary"]["metrics"].get("kid_floor"))
                for recs in by_arm.values()
                for r in recs
                if r["seed"] == s
            ),
            math.nan,
        )
        if math.isfinite(f) and f > 0:
            axes[1].axvline(f, color=colors[s], ls="--", lw=1)
            axes[1].text(
                f,
                1.01,
                f"floor s{s}",
                color=colors[s],
                fontsize=7,
                ha="center",
                transform=axes[1].get_xaxis_transform(),
            )
    from matplotlib.lines import Line2D

    axes[2].legend(
        handles=[Line2D([], [], ls="", marker="o", color=colors[s], label=f"seed {s}") for s in seeds],
        fontsize=7,
        loc="lower left",
    )
    axes[1].set_xscale("log")
    from matplotlib.ticker import LogLocator, NullFormatter

    axes[1].xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes[1].xaxis.set_minor_formatter(NullFormatter())
    axes[2].set_xlim(-0.03, 1.03)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(arms, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("Digits: final state of every run (KID of the EMA generator on the test split)", fontsize=10)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def _digits_curves(by_arm: dict[str, list[dict]], path: Path) -> bool:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    cmap = plt.get_cmap("tab20")
    drawn = False
    for k, (arm, recs) in enumerate(by_arm.items()):
        curves = [r["summary"].get("curve") or [] for r in recs]
        curves = [c for c in curves if c]
        if not curves:
            continue
        steps = [p["step"] for p in curves[0]]
        mean = []
        for i in range(len(steps)):
            vals = [_f(c[i]["kid"]) for c in curves if len(c) > i]
            mean.append(sum(vals) / len(vals))
        ax.plot(
            steps, mean, label=arm, color=cmap(k % 20), lw=1.3, ls="-" if k < 10 else "--", marker="o", ms=3
        )
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("validation KID ×10³ (mean over seeds, log scale)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return True
