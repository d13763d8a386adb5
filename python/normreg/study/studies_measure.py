"""A study's measurements beyond the trainer's metrics: the histogram of output intensities
and its distance to the real one, the fraction of exactly-zero weights, the wall time per
step (:func:`make_measure`, and :class:`StudyMeasure` for worker processes). The studies are
defined in :mod:`.studies_defs` and run by :mod:`.studies`."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from normreg.gan import trainer_from_checkpoint
from normreg.gan.data import completion_mask

# 17 bins centred on the 17 grey levels of the 8x8 digits (0..16 mapped to [-1, 1]).
from .records import HIST_EDGES
from .studies_defs import Study, get_study


# ----------------------------------------------------------------------------------------
# Measurements beyond the trainer's metrics (need the real trainer)
# ----------------------------------------------------------------------------------------
def _region_mask(cfg, size: int):
    """1 where G has to invent the image: the hidden part (completion) or everything."""

    if cfg.task == "completion":
        return completion_mask(cfg.mask, size)[0, 0].bool()
    return torch.ones(size, size, dtype=torch.bool)


def wasserstein1(a, b) -> float:
    """W1 distance between two 1-d empirical distributions of equal size (mean |sorted a - sorted b|)."""

    a, b = torch.as_tensor(a).flatten().double(), torch.as_tensor(b).flatten().double()
    if a.numel() != b.numel():
        # quantile functions on a common grid
        q = torch.linspace(0, 1, max(a.numel(), b.numel()), dtype=torch.float64)
        return float((torch.quantile(a, q) - torch.quantile(b, q)).abs().mean())
    return float((a.sort().values - b.sort().values).abs().mean())


def histogram(values) -> list[float]:
    """Fraction of values in each of the 17 grey-level bins (values clamped to [-1, 1])."""

    v = torch.as_tensor(values).flatten().double().clamp(-1.0, 1.0)
    counts = torch.histogram(v, bins=torch.tensor(HIST_EDGES, dtype=torch.float64)).hist
    return (counts / max(1, v.numel())).tolist()


class StudyMeasure:
    """A study's extra measurements as a picklable ``measure(run_dir, cfg, summary)``.

    Holds only the study's name and mode, so worker processes rebuild it by name.
    """

    def __init__(self, name: str, mode: str, split: str = "val"):
        self.name, self.mode, self.split = name, mode, split

    def __call__(self, run_dir: Path, cfg, summary: dict) -> dict:
        return make_measure(get_study(self.name), self.mode, self.split)(run_dir, cfg, summary)


def make_measure(study: Study, mode: str, split: str = "val") -> Callable[[Path, Any, dict], dict]:
    """``measure(run_dir, cfg, summary)`` for the study's extra measurements."""

    def measure(run_dir: Path, cfg, summary: dict) -> dict:

        out: dict[str, Any] = {}
        trainer = trainer_from_checkpoint(run_dir)
        if "histogram" in study.measures:
            real, _ = trainer.data.split(split)
            inputs = trainer.eval_inputs[split]
            if cfg.eval_samples and real.shape[0] > cfg.eval_samples:
                real, inputs = real[: cfg.eval_samples], inputs[: cfg.eval_samples]
            fake = trainer.generate(inputs)
            region = _region_mask(cfg, real.shape[-1])
            f, r = fake[..., region], real[..., region]
            out["hist_w1"] = wasserstein1(f, r)
            out["out_std"] = float(f.double().std())
            out["real_std"] = float(r.double().std())
            out["hist_fake"] = histogram(f)
            out["hist_real"] = histogram(r)
            k = 8
            out["examples"] = {
                "input": inputs[:k].tolist()
                if cfg.task != "completion"
                else (inputs[:k, :1] * (1 - inputs[:k, 1:2])).tolist(),
                "output": fake[:k].tolist(),
                "target": real[:k].tolist(),
            }
        if "sparsity" in study.measures:
            ws = [p.detach() for n, p in trainer.G.named_parameters() if p.ndim > 1]
            total = sum(w.numel() for w in ws)
            zeros = sum(int((w == 0).sum()) for w in ws)
            out["zero_fraction"] = zeros / max(1, total)
            out["n_weights"] = total
            small = sum(int((w.abs() < 1e-3).sum()) for w in ws)
            out["near_zero_fraction"] = small / max(1, total)
        if "step_time" in study.measures:
            n = study.time_steps if mode == "full" else 3
            warm = 2
            times = []
            for i in range(n + warm):
                t0 = time.perf_counter()
                trainer.step()
                if i >= warm:
                    times.append(time.perf_counter() - t0)
            out["step_ms"] = 1e3 * statistics.median(times)
            out["step_ms_min"] = 1e3 * min(times)
            out["train_step_ms"] = (
                1e3 * float(summary.get("seconds", math.nan)) / max(1, int(summary.get("steps", 1)))
            )
            out["threads"] = torch.get_num_threads()
        return out

    return measure
