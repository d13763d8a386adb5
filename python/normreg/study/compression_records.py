"""What ``normreg study compression``'s runner and its report share: the plan's constants
and the records on disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._io import read_json

__all__ = ["PARTS", "METHODS", "TARGETS", "SEEDS", "SETUP", "SMOKE", "STUDY", "LATENCY_REPEATS", "grid_target",
           "load_records"]

PARTS = ("digits", "textures")
METHODS = ("group_lasso", "slimming", "l0", "magnitude")
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
        "dense": {"dataset": "textures", "task": "superres", "steps": 800, "eval_every": 400,
                  "sample_every": 400, "checkpoint_every": 400},
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
