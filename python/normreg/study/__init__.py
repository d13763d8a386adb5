"""Choosing λ and measuring what norm regularization does: ``normreg sweep`` and ``normreg study``.

* :func:`sweep` — a grid over trainer options with seeds and k-fold cross-validation or a
  held-out split, resumable, with a selection criterion, a results CSV, a plot and the
  best config as TOML (see docs/choosing_lambda.md).
* :func:`run_study` — named, reproducible experiments (``loss-ablation``,
  ``weight-penalty``) that write a markdown report with tables and figures.
"""

from __future__ import annotations

from .sweep import (
    METRIC_DIRECTIONS,
    Backend,
    Criterion,
    Point,
    Store,
    SweepResult,
    default_backend,
    expand_grid,
    load_sweep,
    parse_grid,
    parse_value,
    run_points,
    summarize,
    sweep,
)

__all__ = [
    "METRIC_DIRECTIONS",
    "Backend",
    "Criterion",
    "Point",
    "Store",
    "SweepResult",
    "default_backend",
    "expand_grid",
    "load_sweep",
    "parse_grid",
    "parse_value",
    "run_points",
    "summarize",
    "sweep",
]
