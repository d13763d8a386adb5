"""The digits part of ``normreg study stability``: one unconditional run of the image trainer.

Each run is ``normreg.gan.train`` on scikit-learn's 8x8 digits (``--task unconditional``) with
one arm's options (:data:`~normreg.stability.arms.DIGITS_ARMS`). Its record holds the trainer's
test metrics (KID x 10^3 of the EMA generator against the test split, as the trainer reports
it), the class coverage of the same generated images
(:func:`~normreg.stability.coverage.image_run_coverage`), the validation KID over training,
whether the run diverged, and for seed 0 a dense sample grid of the final EMA generator.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

import torch

from normreg.gan import TrainConfig, train, trainer_from_checkpoint
from normreg.gan.trainer import NonFiniteError
from normreg.stability.coverage import image_run_coverage

__all__ = ["train_digits_run", "COLLAPSE_CLASSES", "GRID_SAMPLES"]

#: a run counts as collapsed when its final EMA generator's images fall in fewer than this
#: many of the 10 classes (each class present in >= 1% of the samples)
COLLAPSE_CLASSES = 5
GRID_SAMPLES = 64  # the seed-0 sample grid: 8 x 8 images


def _kid_curve(run_dir: Path) -> list[dict[str, float]]:

    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    out = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("split") == "val" and row.get("kid"):
                out.append({"step": int(row["step"]), "kid": float(row["kid"])})
    return out


def train_digits_run(config: dict, run_dir: Path, grid: bool = False) -> dict[str, Any]:
    """Train one digits run per ``config`` (a TrainConfig dict) into ``run_dir``; its summary record."""

    cfg = TrainConfig.from_dict(config)
    t0 = time.perf_counter()
    nonfinite = None
    try:
        tsum = train(cfg, run_dir, overwrite=True, progress=False)
    except NonFiniteError as exc:
        tsum = exc.summary or {}
        nonfinite = {"step": exc.step, "name": exc.name, "value": exc.value}
    out: dict[str, Any] = {
        "steps": int(tsum.get("steps", 0)),
        "nonfinite_at": nonfinite,
        "losses": tsum.get("losses", {}),
        "curve": _kid_curve(run_dir),
        "params_d": tsum.get("params_d"),
    }
    metrics: dict[str, Any] = {
        "kid": math.nan,
        "kid_floor": math.nan,
        "class_entropy": math.nan,
        "class_entropy_normalized": math.nan,
        "classes_present": math.nan,
        "class_confidence": math.nan,
    }
    if nonfinite is None:
        cov = image_run_coverage(run_dir, "test")  # the trainer's test metrics + class coverage
        metrics.update({k: cov[k] for k in ("kid", "kid_floor", "class_confidence", "n")})
        metrics.update(
            {
                "class_entropy": cov["class_entropy"],
                "class_entropy_normalized": cov["class_entropy_normalized"],
                "classes_present": cov["class_classes_present"],
            }
        )
        out["class_histogram"] = cov["class_histogram"]
        if grid:
            trainer = trainer_from_checkpoint(run_dir)
            z = torch.randn(GRID_SAMPLES, cfg.z_dim, generator=torch.Generator().manual_seed(2024))
            imgs = trainer.generate(z.to(trainer.device)).cpu()[:, 0]
            out["grid"] = [[[round(float(v), 4) for v in row] for row in img] for img in imgs]
    lam = out["losses"].get("lam_d")
    if lam is not None:
        out["lam_d_final"] = lam  # adaptive: D's penalty strength in force at the last step
    out["metrics"] = metrics
    out["diverged"] = nonfinite is not None or not (metrics["classes_present"] >= COLLAPSE_CLASSES)
    out["seconds"] = time.perf_counter() - t0
    out["ms_per_step"] = 1000 * float(tsum.get("seconds", math.nan)) / max(1, out["steps"])
    return out
