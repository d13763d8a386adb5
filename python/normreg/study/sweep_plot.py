"""The sweep's figure: each metric against each swept option, mean ± std over seeds and
folds (:func:`plot_sweep`, drawn by :func:`normreg.study.sweep.sweep` and ``load_sweep``)."""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence

from ._io import atomic_savefig
from .criterion import Criterion
from .records import METRIC_DIRECTIONS

__all__ = ["plot_sweep"]


def _is_numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def plot_sweep(
    summ: Sequence[dict],
    names: Sequence[str],
    criterion: Criterion,
    best_index: int,
    path: str | os.PathLike,
    metrics: Sequence[str] | None = None,
) -> None:
    """Each metric (rows) against each swept option (columns), mean ± std over seeds and folds.

    With several swept options, each panel is the slice through the best point: the other
    options are held at their best values (named in the panel's title).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if metrics is None:
        present = sorted({m for row in summ for m in row["mean"]})
        first = [m for m in criterion.metrics if m in present]
        metrics = first + [m for m in present if m not in first and m in METRIC_DIRECTIONS]
        metrics += [m for m in present if m not in metrics][: max(0, 6 - len(metrics))]
    metrics = list(metrics) or ["score"]
    best_labels = summ[best_index]["labels"]
    fig, axes = plt.subplots(
        len(metrics), len(names), figsize=(3.6 * len(names) + 0.6, 2.5 * len(metrics) + 0.6), squeeze=False
    )
    for j, name in enumerate(names):
        others = {k: v for k, v in best_labels.items() if k != name}
        rows = [r for r in summ if all(r["labels"][k] == v for k, v in others.items())]
        xs_raw = [r["labels"][name] for r in rows]
        numeric = _is_numeric(xs_raw)
        order = sorted(range(len(rows)), key=lambda i: xs_raw[i]) if numeric else list(range(len(rows)))
        rows = [rows[i] for i in order]
        xs_raw = [xs_raw[i] for i in order]
        xs = xs_raw if numeric else list(range(len(rows)))
        # λ grids are log-spaced: a log axis as soon as the values span a factor of 4.
        logx = numeric and min(xs) > 0 and max(xs) / min(xs) >= 4
        for i, m in enumerate(metrics):
            ax = axes[i][j]
            ys = [r["mean"].get(m, math.nan) if m != "score" else r["score"] for r in rows]
            es = [r["std"].get(m, 0.0) if m != "score" else 0.0 for r in rows]
            ax.errorbar(xs, ys, yerr=es, fmt="o-", capsize=3, color="C0")
            for x, r in zip(xs, rows):
                if r["labels"] == best_labels:
                    ax.plot(
                        [x],
                        [r["mean"].get(m, math.nan) if m != "score" else r["score"]],
                        "*",
                        ms=13,
                        color="C3",
                    )
            if logx:
                ax.set_xscale("log")
            if not numeric:
                ax.set_xticks(xs, [str(v) for v in xs_raw])
            d = METRIC_DIRECTIONS.get(m)
            ax.set_ylabel(m + ("" if d is None else (" (↑)" if d > 0 else " (↓)")))
            if i == len(metrics) - 1:
                ax.set_xlabel(name)
            if i == 0 and others:
                ax.set_title(", ".join(f"{k}={v}" for k, v in others.items()), fontsize=8)
            ax.grid(alpha=0.3)
    n_runs = summ[best_index]["n_runs"]
    spread = f"mean ± std over {n_runs} runs per point" if n_runs > 1 else "one run per point"

    title = f"sweep: {spread}; ★ best by {criterion}"
    width_chars = max(30, int(fig.get_figwidth() * 10))  # about 10 characters an inch at 10 pt
    fig.suptitle("\n".join(textwrap.wrap(title, width_chars)), fontsize=10)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110, bbox_inches="tight")
    plt.close(fig)
