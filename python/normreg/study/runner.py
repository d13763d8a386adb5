"""A sweep's runs: the points, their store (one JSON file per finished run, written
atomically), and the runner that executes them serially or in worker processes, with the
torch thread count a sweep or study records (:func:`resolve_threads`)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ._io import (
    atomic_write_text,
    config_key,
    read_json,
    to_jsonable,
)
from .grid import Backend, default_backend


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
    class, as :class:`normreg.study.studies_measure.StudyMeasure`), since the workers call it.

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
            if measure is not None:
                try:
                    pickle.dumps(measure)
                except Exception as e:
                    raise ValueError(
                        f"'measure' must be picklable when jobs > 1 (a module-level function or class instance): {e}"
                    ) from None
            ctx = mp.get_context("spawn")  # no fork after torch started its thread pool
            with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as ex:
                pending = {
                    ex.submit(_worker, p, os.fspath(out_dir), split, measure, keep_runs, threads or 1): p
                    for p in todo
                }
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

    return torch.get_num_threads()
