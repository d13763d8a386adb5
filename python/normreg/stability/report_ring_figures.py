"""The ring part of the stability report's figures: the sample grid of every arm, the final
state of each arm over seeds, and the training curves (normreg.stability.report writes the
report around them; the digits part's figures are in report_digits_figures.py)."""

from __future__ import annotations

import math
from pathlib import Path

from ..study._io import atomic_savefig
from .report_common import METRICS, _f, _ms, _plt, _values
from .ring import ring_modes

__all__ = ["_scatter_grid", "_summary_figure", "_curves_figure"]


def _scatter_grid(by_arm: dict[str, list[dict]], path: Path, seed: int = 0) -> bool:
    plt = _plt()
    rows = [(arm, next((r for r in recs if r["seed"] == seed), None)) for arm, recs in by_arm.items()]
    rows = [(a, r) for a, r in rows if r is not None and r["summary"].get("snapshots")]
    if not rows:
        return False
    steps = sorted({int(k) for _, r in rows for k in r["summary"]["snapshots"]})
    modes = ring_modes().numpy()
    fig, axes = plt.subplots(
        len(rows), len(steps), figsize=(1.6 * len(steps) + 1.2, 1.6 * len(rows)), squeeze=False
    )
    for i, (arm, r) in enumerate(rows):
        snaps = r["summary"]["snapshots"]
        for j, s in enumerate(steps):
            ax = axes[i][j]
            ax.scatter(modes[:, 0], modes[:, 1], s=14, marker="x", c="tab:red", linewidths=0.8, zorder=3)
            pts = snaps.get(str(s))
            if pts:
                xy = [(p[0], p[1]) for p in pts if all(map(math.isfinite, p))]
                if xy:
                    xs, ys = zip(*xy)
                    ax.scatter(xs, ys, s=1.5, c="tab:blue", alpha=0.5, linewidths=0)
            ax.set_xlim(-3, 3)
            ax.set_ylim(-3, 3)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_aspect("equal")
            if i == 0:
                ax.set_title(f"step {s}", fontsize=8)
            if j == 0:
                ax.set_ylabel(arm, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"G's samples over training (seed {seed}; red x: the 8 modes)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / len(rows)))
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return True


def _summary_figure(by_arm: dict[str, list[dict]], path: Path) -> None:
    plt = _plt()
    arms = list(by_arm)
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.35 * len(arms) + 1.6), sharey=True)
    y = range(len(arms))
    div = [sum(bool(r["summary"]["diverged"]) for r in by_arm[a]) for a in arms]
    n = [len(by_arm[a]) for a in arms]
    axes[0].barh(list(y), div, color="tab:red")
    for yi, d, k in zip(y, div, n):
        axes[0].text(d + 0.05, yi, f"{d}/{k}", va="center", fontsize=7)
    axes[0].set_xlim(0, max(n) + 0.8)
    axes[0].set_xlabel("diverged runs")
    for ax, m, scale in ((axes[1], "modes_covered", 1.0), (axes[2], "hq_fraction", 100.0)):
        for yi, a in zip(y, arms):
            vals = [v * scale for v in _values(by_arm[a], m)]
            ax.scatter(vals, [yi] * len(vals), s=14, c="tab:blue", alpha=0.7)
            mu, _, k = _ms(vals)
            if k:
                ax.plot([mu, mu], [yi - 0.3, yi + 0.3], c="k", lw=1.2)
        ax.set_xlabel(METRICS[m][0] + " (dots: seeds, bar: mean)")
    axes[1].set_xlim(-0.3, 8.3)
    axes[2].set_xlim(-3, 103)
    axes[0].set_yticks(list(y))
    axes[0].set_yticklabels(arms, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("Final state of every run", fontsize=10)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def _curves_figure(by_arm: dict[str, list[dict]], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    cmap = plt.get_cmap("tab20")
    for k, (arm, recs) in enumerate(by_arm.items()):
        curves = [r["summary"].get("curve") or [] for r in recs]
        if not curves or not curves[0]:
            continue
        steps = [p["step"] for p in curves[0]]
        for ax, m, scale in ((axes[0], "modes_covered", 1.0), (axes[1], "hq_fraction", 100.0)):
            mean = []
            for i in range(len(steps)):
                vals = [scale * _f(c[i][m]) for c in curves if len(c) > i]
                mean.append(sum(vals) / len(vals))
            ax.plot(steps, mean, label=arm, color=cmap(k % 20), lw=1.3, ls="-" if k < 10 else "--")
    axes[0].set_ylabel("modes covered (mean over seeds)")
    axes[1].set_ylabel("high-quality samples, % (mean over seeds)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


# ---- the answer -----------------------------------------------------------------------------
