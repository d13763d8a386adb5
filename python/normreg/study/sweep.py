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
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
import os
import re
import shutil
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._io import (
    atomic_savefig,
    atomic_write_text,
    config_key,
    from_jsonable_float,
    read_json,
    remove_stale_temporaries,
    to_jsonable,
)
from .records import METRIC_DIRECTIONS, results_csv, summarize, summary_csv

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

# Options a grid may not sweep: they have their own arguments.
_RESERVED = {"seed": "seeds", "fold": "folds", "folds": "folds"}


# ----------------------------------------------------------------------------------------
# The trainer, behind a small seam (the real one by default; tests may pass a stand-in).
# ----------------------------------------------------------------------------------------
@dataclass
class Backend:
    """What a sweep needs from a trainer.

    config_cls : class with ``from_dict``, ``to_dict`` (and ``to_toml``/``from_toml``)
    train      : ``train(cfg, run_dir, overwrite=..., resume=..., progress=...) -> dict``
    evaluate   : ``evaluate(run_dir, split=...) -> dict`` of metrics
    fold_fields: names of the config fields for k-fold CV: (number of folds, held-out fold)
    """

    config_cls: Any
    train: Callable[..., dict]
    evaluate: Callable[..., dict]
    fold_fields: tuple[str, str] = ("folds", "fold")


def default_backend() -> Backend:
    """The real trainer, :mod:`normreg.gan`."""
    from normreg import gan

    return Backend(config_cls=gan.TrainConfig, train=gan.train, evaluate=gan.evaluate)


# ----------------------------------------------------------------------------------------
# Grid parsing and expansion
# ----------------------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """One option value from the command line: TOML literal if it is one, else a string.

    ``"10"`` -> 10, ``"1e-4"`` -> 0.0001, ``"true"`` -> True, ``"l1"`` -> "l1".
    """
    text = text.strip()
    if text.lower() in {"true", "false"}:
        return text.lower() == "true"
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return float(text)  # "1e-4" is not a TOML float (TOML wants "1.0e-4"), "inf", ...
    except ValueError:
        return text


def _parse_values(spec: str) -> list:
    """``"1,10,100"`` or ``"log:1e-4:1e-1:4"`` (4 log-spaced values) or ``"lin:0:1:5"``."""
    m = re.fullmatch(r"\s*(log|lin):([^:]+):([^:]+):(\d+)\s*", spec)
    if m:
        kind, a, b, n = m.group(1), float(m.group(2)), float(m.group(3)), int(m.group(4))
        if n < 1:
            raise ValueError(f"'grid': {spec!r} asks for {n} values; use at least 1")
        if kind == "log":
            if a <= 0 or b <= 0:
                raise ValueError(f"'grid': log-spaced values need positive ends, got {spec!r}")
            if n == 1:
                return [a]
            return [float(f"{a * (b / a) ** (i / (n - 1)):.6g}") for i in range(n)]
        return [a] if n == 1 else [float(f"{a + (b - a) * i / (n - 1):.6g}") for i in range(n)]
    values = [parse_value(v) for v in spec.split(",") if v.strip()]
    if not values:
        raise ValueError(f"'grid': no values in {spec!r}; write name=v1,v2,...")
    return values


def parse_grid(items: Iterable[str]) -> dict[str, list]:
    """``["recon_weight=1,10,100", "weight_penalty=l1,l2"]`` -> ``{name: [values]}``."""
    grid: dict[str, list] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"'grid': {item!r} is not name=v1,v2,...; e.g. --grid recon_weight=1,10,100")
        name, spec = item.split("=", 1)
        name = name.strip()
        if not name:
            raise ValueError(f"'grid': {item!r} has no option name before '='")
        grid[name] = _parse_values(spec)
    return grid


def expand_grid(grid: Mapping[str, Sequence]) -> list[dict]:
    """The cartesian product of a grid, in the grid's order (last name varies fastest)."""
    if not isinstance(grid, Mapping):
        raise TypeError(f"'grid' must be a mapping name -> list of values, got {type(grid).__name__}")
    names = list(grid)
    values = []
    for name in names:
        v = grid[name]
        if isinstance(v, (str, bytes)) or not isinstance(v, Sequence):
            raise TypeError(f"'grid'[{name!r}] must be a list of values, got {type(v).__name__}")
        if len(v) == 0:
            raise ValueError(f"'grid'[{name!r}] is empty; give at least one value")
        values.append(list(v))
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def _get_dotted(d: Mapping, name: str) -> Any:
    cur: Any = d
    for part in name.split("."):
        cur = cur[part]
    return cur


def _set_dotted(d: dict, name: str, value: Any) -> None:
    parts = name.split(".")
    cur = d
    for part in parts[:-1]:
        cur = cur[part]
    cur[parts[-1]] = value


def _all_names(d: Mapping, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        out.append(prefix + k)
        if isinstance(v, Mapping):
            out.extend(_all_names(v, prefix + k + "."))
    return out


def _check_option(base: Mapping, name: str, arg: str) -> None:
    if name in _RESERVED:
        raise ValueError(f"'{arg}': {name!r} cannot be swept here; use the '{_RESERVED[name]}' argument instead")
    try:
        _get_dotted(base, name)
    except (KeyError, TypeError):
        names = _all_names(base)
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; options are: {', '.join(sorted(names))}"
        raise ValueError(f"'{arg}': unknown option {name!r}{hint}") from None


# ----------------------------------------------------------------------------------------
# Selection criterion
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Criterion:
    """How to rank grid points: one metric, or a weighted combination of several.

    ``terms`` is a tuple of (metric, weight, direction) with weight > 0 and direction +1
    (higher is better) or -1 (lower is better); the direction comes from
    :data:`METRIC_DIRECTIONS` (or a ``max:``/``min:`` prefix), so a user never has to
    remember that KID needs a minus sign.

    One metric: a point's score is ``direction * mean``. Several: each metric's point means
    are standardized over the grid (z-scores), so that metrics on different scales (PSNR in
    dB, KID ~ 1e-3) can be weighed against each other, and the score is
    ``sum(weight * direction * z)``. Higher scores are better.
    """

    terms: tuple[tuple[str, float, int], ...]

    @classmethod
    def parse(cls, spec: str | Mapping[str, float] | Criterion) -> Criterion:
        """``"psnr"``, ``"kid"``, ``"classifier_score+kid"``, ``"2*classifier_score + 1*kid"``,
        ``"max:my_metric"``, or a mapping ``{"classifier_score": 2, "kid": 1}``."""
        if isinstance(spec, Criterion):
            return spec
        if isinstance(spec, Mapping):
            items = list(spec.items())
        elif isinstance(spec, str):
            if not spec.strip():
                raise ValueError("'criterion' is empty; e.g. 'psnr', 'kid' or '2*classifier_score+kid'")
            items = []
            for raw in spec.split("+"):
                term = raw.strip().replace(" ", "")
                m = re.fullmatch(r"(?:([0-9.eE+-]+)\*)?((?:max:|min:)?[A-Za-z_][A-Za-z0-9_]*)", term)
                if not m:
                    raise ValueError(
                        f"'criterion': cannot read term {raw.strip()!r}; write metric or weight*metric, "
                        "joined by '+', e.g. '2*classifier_score+kid'"
                    )
                items.append((m.group(2), float(m.group(1)) if m.group(1) else 1.0))
        else:
            raise TypeError(f"'criterion' must be a string or a mapping metric -> weight, got {type(spec).__name__}")
        terms = []
        for name, weight in items:
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise ValueError(f"'criterion': weight of {name!r} must be a finite number, got {weight!r}")
            if weight <= 0:
                raise ValueError(
                    f"'criterion': weight of {name!r} must be > 0, got {weight}; the sign comes from the "
                    "metric's direction (lower KID is better), use 'min:'/'max:' for other metrics"
                )
            if name.startswith(("max:", "min:")):
                direction, name = (+1 if name[:3] == "max" else -1), name[4:]
            elif name in METRIC_DIRECTIONS:
                direction = METRIC_DIRECTIONS[name]
            else:
                known = ", ".join(sorted(METRIC_DIRECTIONS))
                raise ValueError(
                    f"'criterion': unknown metric {name!r}; known: {known}; "
                    f"for another metric say max:{name} or min:{name}"
                )
            terms.append((name, float(weight), direction))
        names = [t[0] for t in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"'criterion': a metric appears twice in {spec!r}")
        return cls(tuple(terms))

    @property
    def metrics(self) -> list[str]:
        return [t[0] for t in self.terms]

    def __str__(self) -> str:
        parts = []
        for name, w, d in self.terms:
            default = METRIC_DIRECTIONS.get(name)
            label = name if default == d else f"{'max' if d > 0 else 'min'}:{name}"
            parts.append(label if w == 1 else f"{w:g}*{label}")
        return "+".join(parts)

    def scores(self, means: Sequence[Mapping[str, float]]) -> list[float]:
        """Score of each point from its metric means; NaN/missing metrics score -inf."""
        n = len(means)
        vals = {m: [from_jsonable_float(p.get(m, math.nan)) for p in means] for m in self.metrics}
        if len(self.terms) == 1:
            name, _w, d = self.terms[0]
            return [d * v if math.isfinite(v) else -math.inf for v in vals[name]]
        out = [0.0] * n
        for name, w, d in self.terms:
            finite = [v for v in vals[name] if math.isfinite(v)]
            mu = sum(finite) / len(finite) if finite else 0.0
            sd = math.sqrt(sum((v - mu) ** 2 for v in finite) / len(finite)) if finite else 0.0
            for i, v in enumerate(vals[name]):
                if not math.isfinite(v):
                    out[i] = -math.inf
                elif out[i] != -math.inf:
                    out[i] += w * d * ((v - mu) / sd if sd > 0 else 0.0)
        return out


# ----------------------------------------------------------------------------------------
# Runs and their store
# ----------------------------------------------------------------------------------------
@dataclass
class Point:
    """One run: labels (the swept options or a study's arm), a seed, a fold, a full config."""

    labels: dict
    seed: int
    fold: int | None
    config: dict
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            self.key = config_key(self.config)


class Store:
    """``out_dir/points/<key>.json``, one per finished run, each written atomically."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.root = Path(out_dir)
        self.points_dir = self.root / "points"
        self.runs_dir = self.root / "runs"

    def path(self, key: str) -> Path:
        return self.points_dir / f"{key}.json"

    def run_dir(self, key: str) -> Path:
        return self.runs_dir / key

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def check(self, key: str) -> bool:
        """``has(key)`` for a readable record; a corrupt one is reported (naming its file),
        removed, and its run done again."""
        path = self.path(key)
        if not path.is_file():
            return False
        try:
            rec = self.load(key)
            if not isinstance(rec, dict) or "metrics" not in rec:
                raise ValueError(f"{os.fspath(path)!r} is not a run record")
        except ValueError as exc:
            print(f"normreg: warning: {exc}; that run is done again", file=sys.stderr)
            path.unlink()
            return False
        return True

    def load(self, key: str) -> dict:
        return read_json(self.path(key))

    def save(self, record: dict) -> None:
        atomic_write_text(self.path(record["key"]), json.dumps(to_jsonable(record), indent=1, sort_keys=True))


def _scalars(d: Mapping) -> dict:
    """The numeric scalar entries of a dict (metrics to tabulate)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[k] = float(v)
        elif hasattr(v, "item") and getattr(v, "ndim", getattr(v, "dim", lambda: 1)) in (0,):
            out[k] = float(v.item())
    return out


def _call_train(backend: Backend, cfg, run_dir: Path, progress: bool) -> dict:
    fresh = not run_dir.exists() or not any(run_dir.iterdir())
    if fresh:
        return backend.train(cfg, run_dir, overwrite=True, resume=False, progress=progress)
    try:  # an interrupted run: continue from its checkpoint if the trainer can
        return backend.train(cfg, run_dir, overwrite=False, resume=True, progress=progress)
    except (ValueError, FileNotFoundError):
        return backend.train(cfg, run_dir, overwrite=True, resume=False, progress=progress)


def _execute(p: Point, store: Store, backend: Backend, split: str, measure, keep_runs: bool) -> None:
    """Train, evaluate and measure one point; store its record atomically."""
    cfg = backend.config_cls.from_dict(p.config)
    run_dir = store.run_dir(p.key)
    t0 = time.perf_counter()
    status, error = "finished", None
    try:
        summary = _call_train(backend, cfg, run_dir, progress=False) or {}
    except FloatingPointError as exc:  # the trainer's NonFiniteError: the run diverged
        summary, status, error = dict(getattr(exc, "summary", None) or {}), "diverged", str(exc)
    train_s = time.perf_counter() - t0
    if status == "diverged":
        metrics: Mapping = {}  # every metric NaN: a diverged point is never selected
    else:
        # the trainer's summary already holds the validation metrics of the finished run
        metrics = summary.get(f"{split}_metrics") if split == "val" else None
        if not isinstance(metrics, Mapping):
            metrics = backend.evaluate(run_dir, split=split) or {}
    record = {
        "key": p.key,
        "labels": p.labels,
        "seed": p.seed,
        "fold": p.fold,
        "config": p.config,
        "metrics": _scalars(dict(metrics)),
        "summary": _scalars(summary),
        "wall_time_s": train_s,
        "split": split,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "extra": {},
        "status": status,
    }
    if error is not None:
        record["error"] = error
    if measure is not None and status == "finished":
        more = dict(measure(run_dir, cfg, summary) or {})
        record["metrics"].update(_scalars(more))
        record["extra"] = {k: v for k, v in more.items() if k not in record["metrics"]}
    store.save(record)
    if not keep_runs:
        shutil.rmtree(run_dir, ignore_errors=True)


def _worker(p: Point, out_dir: str, split: str, measure, keep_runs: bool, threads: int) -> str:
    """One run in a worker process (the real trainer, ``threads`` torch threads)."""
    import torch

    torch.set_num_threads(threads)
    _execute(p, Store(out_dir), default_backend(), split, measure, keep_runs)
    return p.key


def run_points(
    points: Sequence[Point],
    out_dir: str | os.PathLike,
    *,
    backend: Backend | None = None,
    split: str = "val",
    measure=None,
    progress: bool = True,
    desc: str = "sweep",
    keep_runs: bool = True,
    jobs: int = 1,
    threads: int | None = None,
) -> list[dict]:
    """Train and evaluate every point not already in the store; return all records in order.

    ``measure(run_dir, cfg, summary)`` may add more metrics per run (a study's histograms,
    weight sparsity); its scalar entries join ``metrics``, the rest go to ``extra``. With
    ``jobs > 1`` it must be picklable (a module-level function or an instance of a module-level
    class, as :class:`normreg.study.studies.StudyMeasure`), since the workers call it.

    ``jobs > 1`` runs that many points at once in worker processes, each with ``threads``
    torch threads (default 1); on a small machine two single-threaded runs use the cores
    better than one run with two threads. It needs the real trainer (``backend=None``).
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"'jobs' must be an int >= 1, got {jobs!r}")
    if jobs > 1 and backend is not None:
        raise ValueError("'jobs' > 1 runs the real trainer in worker processes; pass backend=None or jobs=1")
    store = Store(out_dir)
    todo = [p for p in points if not store.check(p.key)]
    # the same config twice (e.g. two arms that coincide) runs once
    seen: set[str] = set()
    todo = [p for p in todo if not (p.key in seen or seen.add(p.key))]
    n_unique = len({p.key for p in points})
    bar = None
    tty = sys.stderr.isatty()
    if progress:
        # the output folder first, then a bar on a terminal or one line per finished run
        done_before = n_unique - len(todo)
        print(
            f"normreg {desc}: {n_unique} runs in {os.fspath(out_dir)}"
            + (f" ({done_before} already done)" if done_before else ""),
            file=sys.stderr,
            flush=True,
        )
    if progress and todo and tty:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_unique, initial=n_unique - len(todo), desc=desc, unit="run", dynamic_ncols=True)
    t_start = time.perf_counter()
    finished = [0]

    def describe(p: Point) -> str:
        label = " ".join(f"{v}" for v in p.labels.values())
        return f"{label} seed={p.seed}" + (f" fold={p.fold}" if p.fold is not None else "")

    def show(p: Point) -> None:
        if bar is not None:
            bar.set_postfix_str(describe(p))

    def ran(p: Point) -> None:
        finished[0] += 1
        if bar is not None:
            bar.update(1)
        elif progress:
            k, el = finished[0], time.perf_counter() - t_start
            eta = el / k * (len(todo) - k)
            print(
                f"{desc}: run {n_unique - len(todo) + k}/{n_unique} done ({describe(p)}); "
                f"{el:.0f} s so far, ETA {eta:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    import torch

    old_threads = torch.get_num_threads()
    try:
        if jobs == 1 or len(todo) <= 1:
            backend = backend or default_backend()
            if threads is not None:
                torch.set_num_threads(threads)
            for p in todo:
                show(p)
                _execute(p, store, backend, split, measure, keep_runs)
                ran(p)
        else:
            import multiprocessing as mp
            from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

            if measure is not None:
                import pickle

                try:
                    pickle.dumps(measure)
                except Exception as e:
                    raise ValueError(
                        f"'measure' must be picklable when jobs > 1 (a module-level function or class instance): {e}"
                    ) from None
            ctx = mp.get_context("spawn")  # no fork after torch started its thread pool
            with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as ex:
                pending = {ex.submit(_worker, p, os.fspath(out_dir), split, measure, keep_runs, threads or 1): p
                           for p in todo}
                try:
                    while pending:
                        done, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for f in done:
                            p = pending.pop(f)
                            f.result()  # a failed run stops the sweep (finished ones stay stored)
                            show(p)
                            ran(p)
                except BaseException:
                    ex.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        torch.set_num_threads(old_threads)
        if bar is not None:
            bar.close()
    records = []
    for p in points:  # the same run may serve several points (labels): report it under each
        rec = store.load(p.key)
        rec.update(labels=dict(p.labels), seed=p.seed, fold=p.fold)
        records.append(rec)
    return records


# ----------------------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------------------
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


def _base_dict(base, backend: Backend) -> dict:
    if base is None:
        return backend.config_cls().to_dict()
    if isinstance(base, (str, os.PathLike)):
        path = Path(base)
        if not path.is_file():
            raise ValueError(f"'base': config file {os.fspath(path)!r} does not exist")
        return backend.config_cls.from_toml(path).to_dict()
    if isinstance(base, Mapping):
        # validate through the config class (fills defaults, rejects unknown options)
        return backend.config_cls.from_dict(dict(base)).to_dict()
    if hasattr(base, "to_dict"):
        return base.to_dict()
    raise TypeError(f"'base' must be a TrainConfig, a dict of options or a TOML path, got {type(base).__name__}")


def _seed_list(seeds, base_seed: int) -> list[int]:
    if isinstance(seeds, bool):
        raise TypeError(f"'seeds' must be a count or a list of ints, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"'seeds' must be >= 1, got {seeds}")
        return [base_seed + i for i in range(seeds)]
    seeds = list(seeds)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"'seeds' must be a positive count or a non-empty list of ints, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"'seeds' has repeated seeds: {seeds}")
    return seeds


def make_points(
    base: dict, grid: Mapping[str, Sequence], seeds: Sequence[int], folds: int, backend: Backend
) -> list[Point]:
    """Every (grid point, seed, fold) as a :class:`Point` with a validated config."""
    folds_field, fold_field = backend.fold_fields
    points = []
    for opts in expand_grid(grid):
        for seed in seeds:
            for fold in range(folds) if folds > 1 else [None]:
                cfg = json.loads(json.dumps(base))  # deep copy of plain data
                for name, value in opts.items():
                    _set_dotted(cfg, name, value)
                cfg["seed"] = seed
                if fold is not None:
                    cfg[folds_field], cfg[fold_field] = folds, fold
                try:  # validate now, before any run starts, and store the normalized dict
                    cfg = backend.config_cls.from_dict(cfg).to_dict()
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"'grid': the point {opts} is not a valid config: {exc}") from exc
                # labels as the config holds them (an int λ becomes the float the config stores)
                labels = {name: _get_dotted(cfg, name) for name in opts}
                points.append(Point(labels=labels, seed=seed, fold=fold, config=cfg))
    return points


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
        raise ValueError("'resume' and 'overwrite' exclude each other: resume keeps finished runs, overwrite deletes them")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise ValueError(f"'folds' must be an int >= 1 (1 = held-out validation split), got {folds!r}")
    out = Path(out_dir)
    manifest_path = out / "sweep.json"
    if grid is None:
        if resume and manifest_path.is_file():
            spec = read_json(manifest_path)
            return sweep(
                spec["base"], spec["grid"], out, seeds=spec["seeds"], folds=spec["folds"],
                criterion=spec["criterion"] if criterion is None else criterion,
                resume=True, progress=progress, plot=plot, keep_runs=keep_runs, jobs=jobs, threads=threads,
                backend=user_backend,
            )
        raise ValueError("'grid' is required (name -> list of values), unless resuming a sweep that has sweep.json")
    criterion = criterion if criterion is not None else Criterion.parse("psnr")
    base_d = _base_dict(base, backend)
    grid = {str(k): list(v) if not isinstance(v, (str, bytes)) else v for k, v in grid.items()} if isinstance(grid, Mapping) else grid
    expand_grid(grid)  # type checks
    if not grid:
        raise ValueError("'grid' is empty; give at least one option to sweep, e.g. {'recon_weight': [1, 10, 100]}")
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

    records = run_points(points, out, backend=user_backend, split="val", progress=progress, desc="sweep",
                         keep_runs=keep_runs, jobs=jobs, threads=threads)
    return _finish(out, base_d, grid, criterion, records, backend, plot=plot)


def resolve_threads(threads: int | None, jobs: int, prev: Mapping | None, manifest: Path) -> int:
    """The torch threads every run of a sweep or study uses, recorded in its manifest.

    Thread counts can change a run's floating-point results (torch's reductions split
    differently), so a resumed sweep reuses the recorded count: ``threads=None`` takes it, a
    different explicit count is refused. A new sweep records ``threads``, or 1 with
    ``jobs > 1``, or torch's current count.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"'threads' must be a positive int or None, got {threads!r}")
    recorded = prev.get("threads") if isinstance(prev, Mapping) else None
    if recorded is not None:
        if threads is not None and threads != recorded:
            raise ValueError(
                f"'threads' = {threads} differs from the {recorded} torch thread(s) the runs in "
                f"{os.fspath(manifest.parent)!r} used (recorded in {manifest.name}); the resumed runs would not "
                "match the finished ones: omit --threads (the recorded count is used) or start a new sweep"
            )
        return int(recorded)
    if threads is not None:
        return threads
    if jobs > 1:
        return 1
    import torch

    return torch.get_num_threads()


def load_sweep(out_dir: str | os.PathLike, criterion=None, backend: Backend | None = None, plot: bool = False) -> SweepResult:
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
        raise ValueError(f"'out_dir': {len(missing)} of {len(points)} runs are not finished; resume the sweep first")
    records = [store.load(p.key) for p in points]
    return _finish(out, spec["base"], spec["grid"], crit, records, backend, plot=plot)


def _finish(out: Path, base_d: dict, grid: dict, criterion: Criterion, records, backend, plot: bool) -> SweepResult:
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
        lines.append(f"# {m}: {mu:.6g} +- {sd:.2g} (std over {n} runs)" if n > 1 else f"# {m}: {mu:.6g} (one run)")
    atomic_write_text(path, "\n".join(lines) + "\n" + body)


# ----------------------------------------------------------------------------------------
# Plot
# ----------------------------------------------------------------------------------------
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
                    ax.plot([x], [r["mean"].get(m, math.nan) if m != "score" else r["score"]], "*", ms=13, color="C3")
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
    import textwrap

    title = f"sweep: {spread}; ★ best by {criterion}"
    width_chars = max(30, int(fig.get_figwidth() * 10))  # about 10 characters an inch at 10 pt
    fig.suptitle("\n".join(textwrap.wrap(title, width_chars)), fontsize=10)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def config_fields(cfg_cls) -> list[str]:
    """Field names of a dataclass config (used for CLI help)."""
    if dataclasses.is_dataclass(cfg_cls):
        return [f.name for f in dataclasses.fields(cfg_cls)]
    return []
