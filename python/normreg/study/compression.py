"""``normreg study compression``: which channel penalty gives the smallest G at equal quality?

For each part (the digits completion of the default ``normreg train`` run; 32 px texture
super-resolution) and seed, a dense run is trained; :func:`normreg.gan.compress.compress`
then compresses its G with every method (``group_lasso``, ``slimming``, ``l0`` and the
``magnitude`` baseline) to every target fraction of the dense MACs (0.5, 0.25, 0.125).

Phases, each resumable (one JSON record per run under ``OUT/points/``, atomic writes):

1. **dense** and **compress** runs in worker processes (``jobs``, one torch thread each); a
   compress job starts as soon as its dense run is done. Compress runs skip their own
   latency timing: two jobs side by side would distort it.
2. **latency**, serially in this process, with nothing else of the study running: for every
   compressed run its G and the dense G of its seed take turns
   (:func:`normreg.gan.compress.measure_latency`, batch 1 and 64, 1 and 2 threads).
3. **report**: :func:`normreg.study.compression_report.write_report` (tables, Pareto figures,
   sample grids, the targets checked).

The plan of runs is made by :mod:`.compression_plan`, each run (and its latency, and the
sample grids) done by :mod:`.compression_runs`, the settings and records are in
:mod:`.compression_records`; this module schedules the phases and is the command line.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from normreg.study.compression_report import write_report

from ._io import (
    atomic_write_text,
    prepare_study_dir,
    read_json,
    remove_stale_temporaries,
    resolve_jobs,
    to_jsonable,
)
from .compression_plan import study_plan
from .compression_records import (  # noqa: F401
    LATENCY_REPEATS,
    METHODS,
    PARTS,
    SEEDS,
    SETUP,
    SMOKE,
    STUDY,
    TARGETS,
    grid_target,
    load_records,
)
from .compression_runs import _latency_one, _run_dir, _run_job, _sample_grid

__all__ = [
    "PARTS",
    "METHODS",
    "TARGETS",
    "SEEDS",
    "study_plan",
    "run_compression_study",
    "load_records",
    "run_cli",
]


def run_compression_study(
    out_dir: str | os.PathLike,
    *,
    mode: str = "full",
    parts=None,
    methods=None,
    targets=None,
    seeds: int | None = None,
    jobs: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    keep_runs: bool = False,
    progress: bool = True,
    report: bool = True,
) -> Path:
    """Run the study into ``out_dir``; returns the path of ``report.md``.

    ``keep_runs=False`` deletes the run directories (checkpoints) once the latency phase and
    the sample grids no longer need them; the records and the report stay.
    """
    if resume and overwrite:
        raise ValueError("'resume' and 'overwrite' exclude each other")
    jobs = resolve_jobs(jobs)
    plan = study_plan(mode, parts, methods, targets, seeds)
    out = Path(out_dir)
    manifest = out / "study.json"
    prev = prepare_study_dir(out, STUDY, mode, resume, overwrite) or {}
    (out / "points").mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    elapsed0 = float(prev.get("elapsed_s", 0.0))
    t0 = time.perf_counter()

    def save_manifest(phase: str) -> None:
        atomic_write_text(
            manifest,
            json.dumps(
                {
                    "study": STUDY,
                    "mode": mode,
                    "jobs": jobs,
                    "phase": phase,
                    "runs": len(plan),
                    "elapsed_s": elapsed0 + time.perf_counter() - t0,
                },
                indent=1,
            )
            + "\n",
        )

    def say(msg: str) -> None:
        if progress:
            print(
                f"normreg study compression: {msg} ({time.perf_counter() - t0:.0f} s)",
                file=sys.stderr,
                flush=True,
            )

    done = {p.stem for p in (out / "points").glob("*.json")}
    # a compress job whose dense run was redone (resume after its directory went) is redone too
    todo = [j for j in plan if j["key"] not in done]
    for j in todo:
        if j["kind"] == "compress" and j["dense_key"] in done and not _run_dir(out, j["dense_key"]).is_dir():
            raise ValueError(
                f"'out_dir': the dense run {j['dense_key']!r} is recorded but its directory is gone "
                "(the study was run without keep_runs and finished?); start again with overwrite=True"
            )
    save_manifest("train")
    n_done = len(plan) - len(todo)
    say(f"{len(plan)} runs ({n_done} done), {jobs} at a time")
    waiting = [j for j in todo if j["kind"] == "compress"]
    ready = [j for j in todo if j["kind"] == "dense"]
    finished_dense = {j["key"] for j in plan if j["kind"] == "dense" and j["key"] in done}
    try:
        with ProcessPoolExecutor(max_workers=jobs) as ex:
            running: dict = {}
            while ready or waiting or running:
                ready += [j for j in waiting if j["dense_key"] in finished_dense]
                waiting = [j for j in waiting if j["dense_key"] not in finished_dense]
                # dense runs first (they unlock five to twelve compress runs each)
                ready.sort(key=lambda j: (j["kind"] != "dense", j["seed"]))
                while ready and len(running) < jobs:
                    j = ready.pop(0)
                    running[ex.submit(_run_job, j, os.fspath(out), 1)] = j
                if not running:
                    raise RuntimeError(
                        f"compress runs wait on dense runs that are not planned: {waiting[:3]}"
                    )
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for f in finished:
                    j = running.pop(f)
                    f.result()  # a failed run stops the study; --resume continues from here
                    n_done += 1
                    if j["kind"] == "dense":
                        finished_dense.add(j["key"])
                    say(f"[{n_done}/{len(plan)}] {j['key']}")
                    save_manifest("train")
    finally:
        save_manifest("train")
    # -- latency, serially ---------------------------------------------------------------------------
    repeats = SMOKE["latency_repeats"] if mode == "smoke" else LATENCY_REPEATS
    lat_dir = out / "latency"
    comp = [j for j in plan if j["kind"] == "compress"]
    for i, j in enumerate(comp, 1):
        path = lat_dir / f"{j['key']}.json"
        if path.is_file():
            continue
        rec = read_json(out / "points" / f"{j['key']}.json")
        lat = _latency_one(out, rec, repeats)
        atomic_write_text(path, json.dumps(to_jsonable(lat)) + "\n")
        say(
            f"latency [{i}/{len(comp)}] {j['key']}: batch 64, 1 thread "
            f"{next(r['speedup'] for r in lat['rows'] if r['batch'] == 64 and r['threads'] == 1):.2f}x"
        )
        save_manifest("latency")
    # -- sample grids (seed 0, the middle target), while the checkpoints are there ----------------
    for part in dict.fromkeys(j["part"] for j in comp):
        grid = out / f"samples-{part}.png"
        if not grid.is_file():
            _sample_grid(out, [j for j in comp if j["part"] == part], grid)
            say(f"sample grid {grid.name}")
    path = out / "report.md"
    if report:
        save_manifest("report")
        path = write_report(out, mode=mode)
    save_manifest("done")
    if not keep_runs:
        shutil.rmtree(out / "runs", ignore_errors=True)
    return path


def run_cli(args) -> int:
    """``normreg study compression`` (called from normreg.study.cli with its parsed arguments)."""
    try:
        path = run_compression_study(
            args.out or "study-compression",
            mode="smoke" if args.smoke else "full",
            jobs=args.jobs,
            resume=args.resume,
            overwrite=args.overwrite,
            keep_runs=args.keep_runs,
            progress=not args.quiet,
        )
    except OSError as exc:
        print(
            f"normreg study: error: cannot write or read {exc.filename!r}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    except (ValueError, TypeError) as exc:
        print(f"normreg study: error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0
