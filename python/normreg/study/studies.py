"""Named, reproducible experiments: ``normreg study loss-ablation | weight-penalty``.

Each study is a list of arms (named trainer configs) run with several seeds through the
sweep's resumable store, plus measurements the trainer's own metrics do not cover (the
histogram of output intensities, the fraction of exactly-zero weights, the wall time per
step), and a markdown report with tables and figures written by :mod:`.report`.

The studies are defined in :mod:`.studies_defs` and measured by :mod:`.studies_measure`;
this module makes their points and runs them.

``mode="full"`` is the experiment (≥ 3 seeds per arm); ``mode="smoke"`` runs every code
path with a few steps, one seed and a few arms, for the tests.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from normreg.study.report import write_report

from ._io import (
    atomic_write_text,
    prepare_study_dir,
    read_json,
    remove_stale_temporaries,
    to_jsonable,
)
from .grid import Backend, default_backend
from .records import HIST_EDGES  # noqa: F401
from .runner import Point, resolve_threads, run_points
from .studies_defs import (  # noqa: F401
    ADD_GRAD_LAMBDA,
    STUDIES,
    WEIGHT_PENALTY_LAMBDAS,
    WEIGHT_PENALTY_MODES,
    Arm,
    Study,
    get_study,
)
from .studies_measure import StudyMeasure, histogram, make_measure, wasserstein1  # noqa: F401

__all__ = ["Arm", "Study", "STUDIES", "run_study", "study_points"]


# ----------------------------------------------------------------------------------------
# Running a study
# ----------------------------------------------------------------------------------------
def study_points(study: Study, mode: str, backend: Backend) -> tuple[list[Point], list[str]]:
    """Every (arm, seed) as a validated :class:`Point`; and notes on arms left out."""
    notes = []
    base = study.base_for(mode)
    points = []
    for arm in study.arms_for(mode):
        for seed in study.seeds_for(mode):
            d = {**base, **arm.options, "seed": seed}
            try:
                cfg = backend.config_cls.from_dict(d).to_dict()
            except (TypeError, ValueError) as exc:
                raise ValueError(f"study {study.name!r}, arm {arm.name!r}: invalid config: {exc}") from exc
            points.append(
                Point(labels={"arm": arm.name, "group": arm.group}, seed=seed, fold=None, config=cfg)
            )
    return points, notes


def run_study(
    name: str,
    out_dir: str | os.PathLike,
    *,
    mode: str = "full",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    keep_runs: bool = False,
    jobs: int | None = None,
    threads: int | None = None,
    backend: Backend | None = None,
) -> Path:
    """Run the named study into ``out_dir`` and write ``out_dir/report.md`` with its figures.

    Parameters
    ----------
    name : "loss-ablation" | "weight-penalty"
    mode : "full" (the experiment, ≥ 3 seeds) | "smoke" (a few steps, one seed, few arms)
    resume : continue an interrupted study (finished runs are kept, see :func:`sweep`)
    overwrite : delete ``out_dir``'s previous results first
    keep_runs : keep each run's directory (checkpoints, samples); default: keep only the results
    jobs : runs at once, in worker processes (None: 2 if the machine has 2 or more cores, else 1)
    threads : torch threads per run (None: 1 with several jobs, torch's default with one)

    Returns the path of the report.
    """
    study = get_study(name)
    if mode not in ("full", "smoke"):
        raise ValueError(f"'mode' must be 'full' or 'smoke', got {mode!r}")
    if resume and overwrite:
        raise ValueError(
            "'resume' and 'overwrite' exclude each other: resume keeps finished runs, overwrite deletes them"
        )
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"'threads' must be a positive int or None, got {threads!r}")
    if jobs is None:
        jobs = 1 if backend is not None else min(2, os.cpu_count() or 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"'jobs' must be a positive int or None, got {jobs!r}")
    user_backend = backend
    backend = backend or default_backend()
    points, notes = study_points(study, mode, backend)
    out = Path(out_dir)
    manifest = out / "study.json"
    prev = prepare_study_dir(out, name, mode, resume, overwrite)
    threads = resolve_threads(threads, jobs, prev, manifest)  # recorded in study.json, reused on resume
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        prev_elapsed = prev.get("elapsed_s", 0.0) if isinstance(prev, dict) else 0.0
        head = {"study": name, "mode": mode, "threads": threads}
        atomic_write_text(manifest, json.dumps({**head, "elapsed_s": prev_elapsed}, indent=1))
        records = run_points(
            points,
            out,
            backend=user_backend,
            split="val",
            measure=StudyMeasure(name, mode),
            progress=progress,
            desc=f"study {name}",
            keep_runs=keep_runs,
            jobs=jobs,
            threads=threads,
        )
    finally:
        elapsed = prev_elapsed + time.perf_counter() - t0
        atomic_write_text(manifest, json.dumps({**head, "elapsed_s": elapsed}, indent=1))
        torch.set_num_threads(old_threads)

    return write_report(
        study,
        records,
        out,
        mode=mode,
        notes=notes,
        elapsed_s=elapsed,
        threads=threads,
        jobs=jobs,
    )


def records_of(out_dir: str | os.PathLike) -> list[dict]:
    """All finished runs of a study directory (for re-plotting without running)."""
    return [read_json(p) for p in sorted(Path(out_dir, "points").glob("*.json"))]


def jsonable_summary(records: Sequence[dict]) -> str:
    return json.dumps(to_jsonable(records), indent=1)
