"""``normreg study stability``: does a norm penalty on D stabilize GAN training?

Arms (on the ring of 8 Gaussians, :mod:`normreg.stability.ring`, 5 seeds; and the same arms on
unconditional 8x8 digits with the image trainer, :mod:`normreg.stability.digits`, 3 seeds): no
regularization; R1 with γ ∈ {0.1, 1, 10}; normreg.SquaredL2 on D's weights at three
strengths; normreg.L1 and normreg.ElasticNet on D (all through ProxAdam's proximal step);
spectral norm on D; R1 + SquaredL2; and SquaredL2 scaled by the adaptive controller
(:class:`~normreg.stability.adaptive.AdaptiveLambda`, target 0.6).

Runs are stored one JSON record each under ``OUT/points/`` (atomic writes, so an
interrupted study resumes with ``resume=True``), two at a time in worker processes with one
torch thread each. :func:`normreg.stability.report.write_report` writes ``report.md``,
``results.csv`` and the figures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

from normreg.gan import TrainConfig
from normreg.stability.digits import train_digits_run
from normreg.stability.report import write_report
from normreg.stability.ring import RingConfig, train_ring

from ..study._io import atomic_write_text, prepare_study_dir, resolve_jobs, to_jsonable
from .arms import (
    ARMS,
    BASE,
    DIGITS_ARMS,
    DIGITS_BASE,
    DIGITS_SEEDS,
    DIGITS_SMOKE,
    DIGITS_SMOKE_ARMS,
    PARTS,
    SEEDS,
    SMOKE,
    SMOKE_ARMS,
    StabilityArm,
    arm_names,
)

__all__ = [
    "StabilityArm",
    "ARMS",
    "BASE",
    "SMOKE",
    "arm_names",
    "study_runs",
    "run_stability_study",
    "SEEDS",
    "DIGITS_SEEDS",
    "PARTS",
]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", name.replace("γ", "g").replace("λ", "l")).strip("_")


def study_runs(mode: str = "full", arms=None, seeds: int | None = None, parts=PARTS) -> list[dict]:
    """Every (part, arm, seed) of the study as ``{"key", "part", "arm", "group", "seed", "config"}``
    (configs validated): the ring runs first, then the digits runs."""
    if mode not in ("full", "smoke"):
        raise ValueError(f"'mode' must be 'full' or 'smoke', got {mode!r}")
    if isinstance(parts, str):
        parts = (parts,)
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise ValueError(f"'parts': unknown or no part(s) {bad!r}; choose from {', '.join(map(repr, PARTS))}")
    out = []
    if "ring" in parts:
        out += _ring_runs(mode, arms, seeds)
    if "digits" in parts:
        out += _digits_runs(mode, arms, seeds)
    return out


def _chosen(all_arms, smoke_arms, mode: str, arms) -> list[StabilityArm]:
    known = {a.name: a for a in all_arms}
    if arms is None:
        return [known[n] for n in smoke_arms] if mode == "smoke" else list(all_arms)
    if isinstance(arms, str):
        arms = [arms]
    bad = [a for a in arms if a not in known]
    if bad:
        raise ValueError(
            f"'arms': unknown arm(s) {', '.join(map(repr, bad))}; choose from {', '.join(map(repr, known))}"
        )
    return [known[n] for n in arms]


def _n_seeds(mode: str, seeds, default: int) -> int:
    n_seeds = (1 if mode == "smoke" else default) if seeds is None else seeds
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
        raise ValueError(f"'seeds' must be an int >= 1, got {seeds!r}")
    return n_seeds


def _digits_runs(mode: str, arms, seeds) -> list[dict]:
    chosen = _chosen(DIGITS_ARMS, DIGITS_SMOKE_ARMS, mode, arms)
    n_seeds = _n_seeds(mode, seeds, DIGITS_SEEDS)
    base = {**DIGITS_BASE, **(DIGITS_SMOKE if mode == "smoke" else {})}
    out = []
    for seed in range(n_seeds):
        for arm in chosen:
            cfg = TrainConfig.from_dict({**base, **arm.options, "seed": seed})
            out.append(
                {
                    "key": f"digits_{_slug(arm.name)}_s{seed}",
                    "part": "digits",
                    "arm": arm.name,
                    "group": arm.group,
                    "seed": seed,
                    "config": cfg.to_dict(),
                }
            )
    return out


def _ring_runs(mode: str, arms, seeds) -> list[dict]:
    chosen = _chosen(ARMS, SMOKE_ARMS, mode, arms)
    n_seeds = _n_seeds(mode, seeds, SEEDS)
    base = {**BASE, **(SMOKE if mode == "smoke" else {})}
    out = []
    for seed in range(n_seeds):  # seed-major: an interrupted study has every arm at its first seeds
        for arm in chosen:
            cfg = RingConfig.from_dict({**base, **arm.options, "seed": seed})
            out.append(
                {
                    "key": f"{_slug(arm.name)}_s{seed}",
                    "part": "ring",
                    "arm": arm.name,
                    "group": arm.group,
                    "seed": seed,
                    "config": cfg.to_dict(),
                }
            )
    return out


def _run_one(run: dict, out_dir: str, keep_runs: bool, threads: int) -> str:

    torch.set_num_threads(threads)
    run_dir = Path(out_dir) / "runs" / run["key"]
    t0 = time.process_time()
    if run.get("part") == "digits":
        summary = train_digits_run(run["config"], run_dir, grid=run["seed"] == 0)
    else:
        summary = train_ring(RingConfig.from_dict(run["config"]), run_dir, overwrite=True)
    summary["cpu_seconds"] = time.process_time() - t0
    if run["seed"] != 0:
        summary.pop("snapshots", None)  # scatter grids show seed 0; keep the records small
    record = {**{k: run[k] for k in ("key", "part", "arm", "group", "seed", "config")}, "summary": summary}
    atomic_write_text(Path(out_dir) / "points" / f"{run['key']}.json", json.dumps(to_jsonable(record)) + "\n")
    if not keep_runs:
        shutil.rmtree(run_dir, ignore_errors=True)
    return run["key"]


def load_records(out_dir: str | os.PathLike) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(out_dir, "points").glob("*.json"))]


def run_stability_study(
    out_dir: str | os.PathLike,
    *,
    mode: str = "full",
    arms=None,
    seeds: int | None = None,
    parts=PARTS,
    jobs: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    keep_runs: bool = False,
    progress: bool = True,
    report: bool = True,
) -> Path:
    """Run the study into ``out_dir`` (``points/``, then ``report.md``); returns the report's path."""
    if resume and overwrite:
        raise ValueError("'resume' and 'overwrite' exclude each other")
    jobs = resolve_jobs(jobs)
    runs = study_runs(mode, arms, seeds, parts)
    out = Path(out_dir)
    manifest = out / "study.json"
    prepare_study_dir(out, "stability", mode, resume, overwrite)
    (out / "points").mkdir(parents=True, exist_ok=True)
    prev_elapsed = json.loads(manifest.read_text()).get("elapsed_s", 0.0) if manifest.is_file() else 0.0
    todo = [r for r in runs if not (out / "points" / f"{r['key']}.json").is_file()]
    t0 = time.perf_counter()

    def save_manifest() -> None:
        atomic_write_text(
            manifest,
            json.dumps(
                {
                    "study": "stability",
                    "mode": mode,
                    "jobs": jobs,
                    "elapsed_s": prev_elapsed + time.perf_counter() - t0,
                },
                indent=1,
            ),
        )

    save_manifest()
    done = len(runs) - len(todo)
    try:
        if jobs == 1:
            for r in todo:
                _run_one(r, os.fspath(out), keep_runs, 1)
                done += 1
                if progress:
                    print(f"[{done}/{len(runs)}] {r['key']}", file=sys.stderr, flush=True)
                save_manifest()
        else:
            with ProcessPoolExecutor(max_workers=jobs) as ex:
                futs = [ex.submit(_run_one, r, os.fspath(out), keep_runs, 1) for r in todo]
                for f in as_completed(futs):
                    key = f.result()
                    done += 1
                    if progress:
                        print(
                            f"[{done}/{len(runs)}] {key} ({time.perf_counter() - t0:.0f} s)",
                            file=sys.stderr,
                            flush=True,
                        )
                    save_manifest()
    finally:
        save_manifest()
    if not report:
        return out / "report.md"

    return write_report(out, mode=mode)


def run_cli(args) -> int:
    """``normreg study stability`` (called from normreg.study.cli with its parsed arguments)."""
    try:
        path = run_stability_study(
            args.out or "study-stability",
            mode="smoke" if args.smoke else "full",
            jobs=args.jobs,
            resume=args.resume,
            overwrite=args.overwrite,
            keep_runs=args.keep_runs,
            progress=not args.quiet,
        )
    except (ValueError, TypeError) as exc:
        print(f"normreg: error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0
