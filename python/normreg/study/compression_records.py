"""What ``normreg study compression``'s runner and its report share: the plan's constants,
the records on disk and their summaries (mean, std and n per method and target)."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._io import read_json

__all__ = [
    "PARTS",
    "METHODS",
    "METRICS",
    "TARGETS",
    "SEEDS",
    "SETUP",
    "SMOKE",
    "STUDY",
    "LATENCY_REPEATS",
    "grid_target",
    "load_records",
    "summarize",
]

PARTS = ("digits", "textures")
METHODS = ("group_lasso", "slimming", "l0", "magnitude")
METRICS = ("psnr", "ssim", "classifier_score", "kid")
TARGETS = (0.5, 0.25, 0.125)
SEEDS = 3
STUDY = "compression"

#: per part: the dense run's TrainConfig options and the CompressConfig options.
#: textures: 32 px super-resolution with fewer steps than the trainer's default (2000 dense
#: steps take ~9 min on one core; the study has 3 dense and 36 compressed runs per part).
SETUP: dict[str, dict[str, Any]] = {
    "digits": {
        "title": "digits completion (8x8, the default `normreg train` run)",
        "dense": {},
        "compress": {},
    },
    "textures": {
        "title": "texture super-resolution (32 px, 2x, skimage's photos)",
        "dense": {
            "dataset": "textures",
            "task": "superres",
            "steps": 800,
            "eval_every": 400,
            "sample_every": 400,
            "checkpoint_every": 400,
        },
        "compress": {"sparse_steps": 300, "finetune_steps": 150},
    },
}
SMOKE = {
    "parts": ("digits",),
    "methods": ("slimming", "magnitude"),
    "targets": (0.5,),
    "seeds": 1,
    "dense": {"steps": 30, "eval_every": 30, "sample_every": 30, "checkpoint_every": 30, "eval_samples": 64},
    "compress": {"sparse_steps": 20, "finetune_steps": 10, "interval": 5},
    "latency_repeats": 1,
}
LATENCY_REPEATS = 10


def grid_target(targets) -> float:
    """The target the sample grids show: 0.25 when the study has it, else the middle one."""
    targets = sorted(set(targets))
    return 0.25 if 0.25 in targets else targets[len(targets) // 2]


def load_records(out_dir: str | os.PathLike) -> list[dict]:
    """The study's records (``points/*.json``), sorted by key; a corrupt one raises ``ValueError``."""
    return [read_json(p) for p in sorted(Path(out_dir, "points").glob("*.json"))]


# ---- summaries of the records (mean, std, n per method and target) ----------------------------


def _f(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _ms(vals: Sequence[float]) -> tuple[float, float, int]:
    vals = [v for v in vals if math.isfinite(v)]
    if not vals:
        return math.nan, math.nan, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else math.nan), len(vals)


def _row(recs: Sequence[dict], getters: dict) -> dict:
    mean, std, n = {}, {}, {}
    for name, get in getters.items():
        mean[name], std[name], n[name] = _ms([_f(get(r)) for r in recs])
    return {"mean": mean, "std": std, "n": n}


def _lat(rec: dict, batch: int, threads: int, key: str = "speedup") -> float:
    for row in (rec.get("latency") or {}).get("rows", []):
        if row["batch"] == batch and row["threads"] == threads:
            return _f(row[key])
    return math.nan


TRIVIAL_DB = 0.05


def _trivial(rec: dict) -> bool:
    """Does the compressed G give (nearly) the trivial answer, its input itself? Its test PSNR
    within :data:`TRIVIAL_DB` of the input's: a G whose channels all went does that when the
    architecture adds its input back (the superres U-Net)."""
    t = rec["compressed"]["test"]
    a, b = _f(t.get("psnr")), _f(t.get("baseline_psnr"))
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= TRIVIAL_DB


def summarize(records: Sequence[dict]) -> dict:
    """``{part: {"dense": row, "points": {(method, target): row}}}``, each row mean/std/n per
    quantity over seeds."""
    out: dict = {}
    for part in dict.fromkeys(r["part"] for r in records):
        dense = [r for r in records if r["part"] == part and r["kind"] == "dense"]
        comp = [r for r in records if r["part"] == part and r["kind"] == "compress"]
        d_get = {m: (lambda r, m=m: (r.get("metrics") or {}).get(m)) for m in METRICS}
        c_get = {m: (lambda r, m=m: r["compressed"]["test"].get(m)) for m in METRICS}
        c_get |= {
            "mac_fraction": lambda r: r["mac_fraction"],
            "param_fraction": lambda r: r["params"] / r["dense_params"],
            "target_met": lambda r: 1.0 if r["target_met"] else 0.0,
            "speedup_b64_t1": lambda r: _lat(r, 64, 1),
            "speedup_b64_t2": lambda r: _lat(r, 64, 2),
            "speedup_b1_t1": lambda r: _lat(r, 1, 1),
            "ms_b64_t1": lambda r: _lat(r, 64, 1, "compressed_ms"),
            "dense_ms_b64_t1": lambda r: _lat(r, 64, 1, "dense_ms"),
            "seconds": lambda r: r.get("seconds"),
            "trivial": lambda r: 1.0 if _trivial(r) else 0.0,
        }
        points = {}
        for key in dict.fromkeys((r["method"], r["target"]) for r in comp):
            points[key] = _row([r for r in comp if (r["method"], r["target"]) == key], c_get)
        out[part] = {
            "dense": _row(dense, d_get),
            "points": points,
            "dense_ms_b64_t1": _ms([_lat(r, 64, 1, "dense_ms") for r in comp]),
        }
    return out
