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
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path

import torch

from normreg.gan import TrainConfig, train
from normreg.gan.compress import COMPRESS_METHODS, CompressConfig, compress, measure_latency
from normreg.gan.plots import save_grid
from normreg.gan.train import trainer_from_checkpoint
from normreg.study._io import atomic_savefig
from normreg.study.compression_report import write_report
from normreg.study.report_parts import _plt

from ._io import (
    atomic_write_text,
    prepare_study_dir,
    read_json,
    remove_stale_temporaries,
    resolve_jobs,
    to_jsonable,
)
from .compression_records import (
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


def _key_dense(part: str, seed: int) -> str:
    return f"{part}_s{seed}_dense"


def _key_compress(part: str, seed: int, method: str, target: float) -> str:
    return f"{part}_s{seed}_{method}_{target:g}"


def study_plan(
    mode: str = "full", parts=None, methods=None, targets=None, seeds: int | None = None
) -> list[dict]:
    """Every run of the study: ``{"key", "kind" ("dense" | "compress"), "part", "seed", ...}``,
    the dense runs first, then the compress runs seed-major (an interrupted study has every
    method at its first seeds). Configs are validated here, before anything runs."""

    if mode not in ("full", "smoke"):
        raise ValueError(f"'mode' must be 'full' or 'smoke', got {mode!r}")
    smoke = mode == "smoke"

    def pick(name: str, given, default, known) -> tuple:
        chosen = (
            tuple((given,) if isinstance(given, (str, float, int)) else given)
            if given is not None
            else default
        )
        bad = [v for v in chosen if known is not None and v not in known]
        if bad or not chosen:
            raise ValueError(
                f"'{name}': unknown or no value(s) {bad!r}; choose from {', '.join(map(repr, known))}"
            )
        return chosen

    parts = pick("parts", parts, SMOKE["parts"] if smoke else PARTS, PARTS)
    methods = pick("methods", methods, SMOKE["methods"] if smoke else METHODS, COMPRESS_METHODS)
    targets = pick("targets", targets, SMOKE["targets"] if smoke else TARGETS, None)
    n_seeds = (SMOKE["seeds"] if smoke else SEEDS) if seeds is None else seeds
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
        raise ValueError(f"'seeds' must be an int >= 1, got {seeds!r}")
    dense, comp = [], []
    for seed in range(n_seeds):
        for part in parts:
            opts = {**SETUP[part]["dense"], **(SMOKE["dense"] if smoke else {}), "seed": seed}
            cfg = TrainConfig().replace(**opts) if opts else TrainConfig()
            dense.append(
                {
                    "key": _key_dense(part, seed),
                    "kind": "dense",
                    "part": part,
                    "seed": seed,
                    "config": cfg.to_dict(),
                }
            )
            for target in targets:
                for method in methods:
                    copts = {
                        **SETUP[part]["compress"],
                        **(SMOKE["compress"] if smoke else {}),
                        "method": method,
                        "target_macs": float(target),
                    }
                    if method == "magnitude":
                        copts["sparse_steps"] = 0
                    cc = CompressConfig(**copts)  # ValueError for a bad target
                    comp.append(
                        {
                            "key": _key_compress(part, seed, method, float(target)),
                            "kind": "compress",
                            "part": part,
                            "seed": seed,
                            "method": method,
                            "target": float(target),
                            "dense_key": _key_dense(part, seed),
                            "compress_config": _asdict(cc),
                        }
                    )
    return dense + comp


def _asdict(cc) -> dict:

    return asdict(cc)


def _run_dir(out: Path, key: str) -> Path:
    return out / "runs" / key


def _run_job(job: dict, out_dir: str, threads: int) -> str:
    """One dense or compress run in a worker; writes ``points/KEY.json`` when done."""

    torch.set_num_threads(threads)
    out = Path(out_dir)
    run_dir = _run_dir(out, job["key"])
    t0 = time.perf_counter()
    if job["kind"] == "dense":
        summary = train(TrainConfig.from_dict(job["config"]), run_dir, overwrite=True, progress=False)
        record = {
            **{k: job[k] for k in ("key", "kind", "part", "seed", "config")},
            "metrics": summary.get("metrics"),
            "val_metrics": summary.get("val_metrics"),
            "params_g": summary.get("params_g"),
        }
    else:
        cc = CompressConfig(**job["compress_config"])
        report = compress(
            _run_dir(out, job["dense_key"]), run_dir, cc, overwrite=True, progress=False, latency=False
        )
        record = {
            **{
                k: job[k]
                for k in ("key", "kind", "part", "seed", "method", "target", "dense_key", "compress_config")
            },
            **{
                k: report.get(k)
                for k in (
                    "dense_macs",
                    "macs",
                    "mac_fraction",
                    "target_met",
                    "dense_params",
                    "params",
                    "pruned_channels",
                    "prunable_channels",
                    "topped_up_channels",
                    "final_lambda",
                    "check_max_abs_diff",
                )
            },
            "dense": report["dense"],
            "compressed": report["compressed"],
        }
    record["seconds"] = time.perf_counter() - t0
    record["threads"] = threads
    atomic_write_text(out / "points" / f"{job['key']}.json", json.dumps(to_jsonable(record)) + "\n")
    return job["key"]


def _latency_one(out: Path, rec: dict, repeats: int) -> dict:
    """Time the compressed G of ``rec`` against its seed's dense G (both EMA samplers)."""

    dense = trainer_from_checkpoint(_run_dir(out, rec["dense_key"]))
    small = trainer_from_checkpoint(_run_dir(out, rec["key"]))
    x_all = dense.eval_inputs["val"]

    def make_input(b: int) -> torch.Tensor:
        return x_all[torch.arange(b) % x_all.shape[0]]

    rows = measure_latency({"dense": dense.sampler, "compressed": small.sampler}, make_input, repeats=repeats)
    for row in rows:
        row["speedup"] = row["dense_ms"] / row["compressed_ms"]
    return {"rows": rows, "repeats": repeats, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}


def _sample_grid(out: Path, jobs: list[dict], path: Path) -> None:
    """Rows: input, dense G, the compressed G of every method (lowest seed, :func:`grid_target`),
    target; for one part."""

    seed = min(j["seed"] for j in jobs)
    t = grid_target([j["target"] for j in jobs])
    chosen = [j for j in jobs if j["seed"] == seed and j["target"] == t]
    dense = trainer_from_checkpoint(_run_dir(out, chosen[0]["dense_key"]))
    inputs = dense.grid_inputs[:8]
    rows, labels = [], []
    if dense.cfg.paired:
        shown = inputs[:, : dense.data.channels]
        if dense.cfg.task == "completion":
            m = inputs[:, -1:]
            shown = shown * (1 - m) + m * (-0.5)
        rows.append(shown)
        labels.append("input")
    rows.append(dense.generate(inputs))
    labels.append("dense")
    for j in chosen:
        small = trainer_from_checkpoint(_run_dir(out, j["key"]))
        rows.append(small.generate(inputs))
        labels.append(f"{j['method']}")
    if dense.cfg.paired:
        rows.append(dense.grid_targets[:8])
        labels.append("target")

    with tempfile.TemporaryDirectory() as tmp:
        canvas = save_grid(rows, Path(tmp) / "grid.png")
    plt = _plt()
    h, w = canvas.shape[:2]
    cell = (h - 1) / len(rows)
    fig, ax = plt.subplots(figsize=(1.2 + w / 60, 0.3 + h / 60))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_yticks([1 + cell * (i + 0.5) for i in range(len(rows))], labels)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(
        f"{dense.cfg.task} on {dense.cfg.dataset}: dense G and each method at {t:g} of the MACs (seed {seed})",
        fontsize=8,
    )
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


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
