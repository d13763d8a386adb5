"""The work of ``normreg study compression`` on one run: a dense or compress run in a worker
(:func:`_run_job`, which writes its record), the latency of a compressed G against its seed's
dense G, and a part's sample grid from the checkpoints. :mod:`.compression_plan` lists the
runs, :mod:`.compression` schedules them."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from normreg.gan import TrainConfig, train
from normreg.gan.compress import CompressConfig, compress, measure_latency
from normreg.gan.plots import save_grid
from normreg.gan.train import trainer_from_checkpoint
from normreg.study._io import atomic_savefig
from normreg.study.report_parts import _plt

from ._io import atomic_write_text, to_jsonable
from .compression_records import grid_target


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
