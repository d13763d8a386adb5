"""``normreg sweep``: choose options (λ, penalty type, ...) by cross-validation or a held-out split.

A sweep is a grid over one or more trainer options, several seeds per point and, with
``folds=k``, k-fold cross-validation (each fold holds out a different part of the
training set as validation). Every finished run is stored as one JSON file written
atomically, so an interrupted sweep resumes where it stopped and never reruns a finished
run; the results CSV, the per-point summary, the plot and the best config are regenerated
from those files.

>>> from normreg.study import sweep
>>> result = sweep({"task": "completion", "steps": 400},
...                grid={"recon_weight": [1, 10, 100]}, out_dir="runs/sweep",
...                seeds=3, criterion="classifier_score+kid")        # doctest: +SKIP
>>> result.best_options                                              # doctest: +SKIP
{'recon_weight': 10}

Outputs in ``out_dir``: ``results.csv`` (one row per run), ``summary.csv`` (one row per
grid point: mean, std and count of each metric over seeds and folds, and the criterion's
score), ``sweep.png`` (each metric against each swept option, error bars = std over seeds
and folds), ``best.toml`` (a config ``normreg train --config`` accepts), ``sweep.json``
(the sweep's own spec, so ``--resume`` needs nothing else), ``points/*.json`` (the store),
``runs/<key>/`` (the trainer's run directories).

The pieces below it: :mod:`~normreg.study.grid` (the trainer seam, option parsing, the grid),
:mod:`~normreg.study.sweep_points` (the base config, the seeds, the points of a grid),
:mod:`~normreg.study.criterion` (selection), :mod:`~normreg.study.runner` (points, their
store, serial and parallel execution, the thread count), :mod:`~normreg.study.records` (CSVs
and summaries), :mod:`~normreg.study.sweep_plot` (``sweep.png``); this module ties them into
:func:`sweep` and :func:`load_sweep`, and writes the best config.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._io import (
    atomic_write_text,
    read_json,
    remove_stale_temporaries,
    to_jsonable,
)
from .criterion import Criterion  # noqa: F401
from .grid import (  # noqa: F401
    Backend,
    _check_option,
    _set_dotted,
    default_backend,
    expand_grid,
    parse_grid,
    parse_value,
)
from .records import METRIC_DIRECTIONS, results_csv, summarize, summary_csv
from .runner import Point, Store, resolve_threads, run_points  # noqa: F401
from .sweep_plot import plot_sweep
from .sweep_points import _base_dict, _seed_list, make_points

__all__ = [
    "Backend",
    "default_backend",
    "Criterion",
    "METRIC_DIRECTIONS",
    "Point",
    "Store",
    "SweepResult",
    "expand_grid",
    "parse_grid",
    "parse_value",
    "run_points",
    "summarize",
    "sweep",
    "load_sweep",
]


# ----------------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    out_dir: Path
    grid: dict
    criterion: Criterion
    records: list[dict]
    summary: list[dict]  # one per grid point, with "score"
    best_index: int
    best_options: dict
    best_config: Any
    files: dict = field(default_factory=dict)

    @property
    def best(self) -> dict:
        return self.summary[self.best_index]


def sweep(
    base=None,
    grid: Mapping[str, Sequence] | None = None,
    out_dir: str | os.PathLike = "sweep",
    *,
    seeds: int | Sequence[int] = 1,
    folds: int = 1,
    criterion: str | Mapping[str, float] | Criterion | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    plot: bool = True,
    keep_runs: bool = True,
    jobs: int = 1,
    threads: int | None = None,
    backend: Backend | None = None,
) -> SweepResult:
    """Run a grid of trainings, select the best point, write CSV, plot and best config.

    Parameters
    ----------
    base : TrainConfig, dict of options, path of a TOML config, or None (defaults)
        The options every point starts from.
    grid : mapping option name -> list of values
        Dotted names reach nested options. ``seed`` and the fold options are not swept
        here: use ``seeds`` and ``folds``.
    out_dir : path
        Where the store, the runs and the outputs go.
    seeds : int or list of ints
        A count (seeds ``base.seed, base.seed + 1, ...``) or the seeds themselves.
    folds : int
        1: train on the training split and score on its validation split (held out).
        k > 1: k-fold cross-validation, each run holds out one fold of the training set.
    criterion : str, mapping, Criterion or None
        See :class:`Criterion`; None: ``"psnr"`` (or, resuming, the sweep's own). ``"psnr"`` alone picks the blurriest model of a GAN; see
        docs/choosing_lambda.md.
    resume : bool
        Reuse finished runs in ``out_dir`` (a run is identified by its full config, so
        only runs whose config is unchanged are reused). Without it, a non-empty
        ``out_dir`` is an error unless ``overwrite``.
    overwrite : bool
        Delete ``out_dir``'s previous results first.
    jobs, threads : int
        Runs at once (worker processes, real trainer only) and torch threads per run.
    """
    user_backend = backend
    backend = backend or default_backend()
    if criterion is not None:
        criterion = Criterion.parse(criterion)
    if resume and overwrite:
        raise ValueError(
            "'resume' and 'overwrite' exclude each other: resume keeps finished runs, overwrite deletes them"
        )
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise ValueError(f"'folds' must be an int >= 1 (1 = held-out validation split), got {folds!r}")
    out = Path(out_dir)
    manifest_path = out / "sweep.json"
    if grid is None:
        if resume and manifest_path.is_file():
            spec = read_json(manifest_path)
            return sweep(
                spec["base"],
                spec["grid"],
                out,
                seeds=spec["seeds"],
                folds=spec["folds"],
                criterion=spec["criterion"] if criterion is None else criterion,
                resume=True,
                progress=progress,
                plot=plot,
                keep_runs=keep_runs,
                jobs=jobs,
                threads=threads,
                backend=user_backend,
            )
        raise ValueError(
            "'grid' is required (name -> list of values), unless resuming a sweep that has sweep.json"
        )
    criterion = criterion if criterion is not None else Criterion.parse("psnr")
    base_d = _base_dict(base, backend)
    grid = (
        {str(k): list(v) if not isinstance(v, (str, bytes)) else v for k, v in grid.items()}
        if isinstance(grid, Mapping)
        else grid
    )
    expand_grid(grid)  # type checks
    if not grid:
        raise ValueError(
            "'grid' is empty; give at least one option to sweep, e.g. {'recon_weight': [1, 10, 100]}"
        )
    for name in grid:
        _check_option(base_d, name, "grid")
    seed_list = _seed_list(seeds, int(base_d.get("seed", 0)))
    points = make_points(base_d, grid, seed_list, folds, backend)

    prev = None
    if out.exists() and any(out.iterdir()):
        if overwrite:
            shutil.rmtree(out)
        elif not resume:
            raise ValueError(
                f"'out_dir' {os.fspath(out)!r} is not empty; pass resume=True (--resume) to continue it "
                "or overwrite=True (--overwrite) to start again"
            )
        elif manifest_path.is_file():
            prev = read_json(manifest_path)
    threads = resolve_threads(threads, jobs, prev, manifest_path)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    spec = {
        "base": base_d,
        "grid": grid,
        "seeds": seed_list,
        "folds": folds,
        "criterion": str(criterion),
        "threads": threads,
    }
    atomic_write_text(manifest_path, json.dumps(to_jsonable(spec), indent=1))

    records = run_points(
        points,
        out,
        backend=user_backend,
        split="val",
        progress=progress,
        desc="sweep",
        keep_runs=keep_runs,
        jobs=jobs,
        threads=threads,
    )
    return _finish(out, base_d, grid, criterion, records, backend, plot=plot)


def load_sweep(
    out_dir: str | os.PathLike, criterion=None, backend: Backend | None = None, plot: bool = False
) -> SweepResult:
    """Rebuild a finished sweep's result (and outputs) from its directory without running anything.

    Use it to select again with another criterion: ``load_sweep(d, "classifier_score+kid")``.
    """
    out = Path(out_dir)
    manifest_path = out / "sweep.json"
    if not manifest_path.is_file():
        raise ValueError(f"'out_dir' {os.fspath(out)!r} has no sweep.json; is it a sweep directory?")
    backend = backend or default_backend()
    spec = read_json(manifest_path)
    crit = Criterion.parse(criterion if criterion is not None else spec["criterion"])
    points = make_points(spec["base"], spec["grid"], spec["seeds"], spec["folds"], backend)
    store = Store(out)
    missing = [p for p in points if not store.has(p.key)]
    if missing:
        raise ValueError(
            f"'out_dir': {len(missing)} of {len(points)} runs are not finished; resume the sweep first"
        )
    records = [store.load(p.key) for p in points]
    return _finish(out, spec["base"], spec["grid"], crit, records, backend, plot=plot)


def _finish(
    out: Path, base_d: dict, grid: dict, criterion: Criterion, records, backend, plot: bool
) -> SweepResult:
    names = list(grid)
    summ = summarize(records, names)
    scores = criterion.scores([row["mean"] for row in summ])
    for row, s in zip(summ, scores):
        row["score"] = s
    finite = [i for i, s in enumerate(scores) if s != -math.inf]
    if not finite:
        missing = [m for m in criterion.metrics if not any(m in r["metrics"] for r in records)]
        hint = f"; the runs report no {', '.join(missing)}" if missing else ""
        raise ValueError(f"'criterion' {criterion} gives no finite score for any point{hint}")
    best_i = max(finite, key=lambda i: scores[i])  # ties: the first point in grid order
    best_opts = summ[best_i]["labels"]
    best_d = json.loads(json.dumps(base_d))
    for k, v in best_opts.items():
        _set_dotted(best_d, k, v)
    best_cfg = backend.config_cls.from_dict(best_d)
    files = {
        "results": out / "results.csv",
        "summary": out / "summary.csv",
        "best": out / "best.toml",
    }
    atomic_write_text(files["results"], results_csv(records, names))
    atomic_write_text(files["summary"], summary_csv(summ, names))
    _write_best_toml(files["best"], best_cfg, best_opts, summ[best_i], criterion)
    if plot:
        files["plot"] = out / "sweep.png"
        plot_sweep(summ, names, criterion, best_i, files["plot"])
    return SweepResult(out, grid, criterion, list(records), summ, best_i, dict(best_opts), best_cfg, files)


def _write_best_toml(path: Path, cfg, opts: Mapping, row: Mapping, criterion: Criterion) -> None:
    body = cfg.to_toml()
    if not isinstance(body, str):  # a to_toml that wrote a file instead of returning text
        raise TypeError("config_cls.to_toml() must return the TOML text")
    lines = [
        "# Best point of a normreg sweep; train it with: normreg train --config best.toml",
        f"# criterion: {criterion}",
        f"# chosen: {', '.join(f'{k} = {v!r}' for k, v in opts.items())}",
    ]
    for m in criterion.metrics:
        mu, sd, n = row["mean"].get(m, math.nan), row["std"].get(m, math.nan), row["n"].get(m, 0)
        lines.append(
            f"# {m}: {mu:.6g} +- {sd:.2g} (std over {n} runs)" if n > 1 else f"# {m}: {mu:.6g} (one run)"
        )
    atomic_write_text(path, "\n".join(lines) + "\n" + body)


def config_fields(cfg_cls) -> list[str]:
    """Field names of a dataclass config (used for CLI help)."""
    if dataclasses.is_dataclass(cfg_cls):
        return [f.name for f in dataclasses.fields(cfg_cls)]
    return []
