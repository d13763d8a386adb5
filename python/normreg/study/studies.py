"""Named, reproducible experiments: ``normreg study loss-ablation | weight-penalty``.

Each study is a list of arms (named trainer configs) run with several seeds through the
sweep's resumable store, plus measurements the trainer's own metrics do not cover (the
histogram of output intensities, the fraction of exactly-zero weights, the wall time per
step), and a markdown report with tables and figures written by :mod:`.report`.

``mode="full"`` is the experiment (≥ 3 seeds per arm); ``mode="smoke"`` runs every code
path with a few steps, one seed and a few arms, for the tests.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from normreg.gan import trainer_from_checkpoint
from normreg.gan.data import completion_mask
from normreg.study.report import write_report

from ._io import (
    atomic_write_text,
    prepare_study_dir,
    read_json,
    remove_stale_temporaries,
    to_jsonable,
)
from .grid import Backend, default_backend
from .records import HIST_EDGES
from .runner import Point, run_points
from .sweep import resolve_threads

__all__ = ["Arm", "Study", "STUDIES", "run_study", "study_points"]

# 17 bins centred on the 17 grey levels of the 8x8 digits (0..16 mapped to [-1, 1]).


@dataclass(frozen=True)
class Arm:
    """One configuration of a study: a name for tables, a group, trainer options."""

    name: str
    options: dict
    group: str = "main"


@dataclass
class Study:
    name: str
    title: str
    question: str
    base: dict  # trainer options shared by every arm (full mode)
    arms: list[Arm]
    seeds: int = 3
    smoke: dict = field(default_factory=dict)  # options replacing base's in smoke mode
    smoke_arms: Sequence[str] | None = None  # names of the arms a smoke run keeps
    measures: tuple[str, ...] = ()  # "histogram", "sparsity", "step_time"
    time_steps: int = 0  # step_time: timed extra steps per run (full mode)

    def arms_for(self, mode: str) -> list[Arm]:
        if mode == "smoke" and self.smoke_arms is not None:
            keep = set(self.smoke_arms)
            return [a for a in self.arms if a.name in keep]
        return list(self.arms)

    def base_for(self, mode: str) -> dict:
        return {**self.base, **(self.smoke if mode == "smoke" else {})}

    def seeds_for(self, mode: str) -> list[int]:
        return [0] if mode == "smoke" else list(range(self.seeds))


# ----------------------------------------------------------------------------------------
# loss-ablation: pix2pix Table 1 on the digits completion task, and a denoising control
# ----------------------------------------------------------------------------------------
_NO_PENALTY = {"weight_penalty": "none", "weight_penalty_strength": 0.0}
_QUIET = {"eval_every": 100_000, "sample_every": 100_000, "checkpoint_every": 100_000, "log_every": 50}


def _loss_arms(task_group: str, lam: float = 100.0) -> list[Arm]:
    g = task_group
    return [
        Arm("L1", {"recon": "l1", "recon_weight": lam, "adv_weight": 0.0}, g),
        Arm("L2", {"recon": "l2", "recon_weight": lam, "adv_weight": 0.0}, g),
        Arm("GAN", {"recon": "none", "adv_weight": 1.0, "conditional_d": False}, g),
        Arm("cGAN", {"recon": "none", "adv_weight": 1.0, "conditional_d": True}, g),
        Arm("L1 + cGAN", {"recon": "l1", "recon_weight": lam, "adv_weight": 1.0, "conditional_d": True}, g),
        Arm("L2 + cGAN", {"recon": "l2", "recon_weight": lam, "adv_weight": 1.0, "conditional_d": True}, g),
    ]


def _loss_ablation() -> Study:
    completion = {"task": "completion", "mask": "bottom_half"}
    denoise = {"task": "denoise", "noise_std": 0.5}
    arms = [Arm(a.name, {**completion, **a.options}, "completion") for a in _loss_arms("completion")]
    for lam in (1.0, 10.0, 100.0, 1000.0):
        arms.append(
            Arm(
                f"L1 + cGAN, λ={lam:g}",
                {**completion, "recon": "l1", "recon_weight": lam, "adv_weight": 1.0, "conditional_d": True},
                "lambda",
            )
        )
    control = [a for a in _loss_arms("denoise") if a.name in ("L1", "L2", "cGAN", "L1 + cGAN")]
    arms += [Arm(a.name, {**denoise, **a.options}, "denoise") for a in control]
    return Study(
        name="loss-ablation",
        title="Loss ablation: L1, L2 and GAN terms for image completion",
        question=(
            "Do L1 and L2 reconstruction terms improve GAN image synthesis, and does a GAN term "
            "improve on L1/L2 alone? The pix2pix ablation (Isola et al. 2017, Table 1) on the 8x8 "
            "digits with the bottom half hidden, a λ sweep of L1 + cGAN, and a denoising control "
            "task whose answer is much less ambiguous."
        ),
        base={"dataset": "digits", "steps": 1000, "batch_size": 64, "width": 0.5, **_NO_PENALTY, **_QUIET},
        arms=arms,
        seeds=3,
        smoke={"steps": 4, "batch_size": 16, "log_every": 2, "eval_samples": 64, "max_images": 128},
        smoke_arms=["L1", "cGAN", "L1 + cGAN, λ=10", "L1 + cGAN"],
        measures=("histogram",),
    )


# ----------------------------------------------------------------------------------------
# weight-penalty: L1, L2, elastic net and L0 on G's weights, as a loss term and as a prox step
# ----------------------------------------------------------------------------------------
WEIGHT_PENALTY_LAMBDAS = (1e-3, 1e-2, 1e-1)
WEIGHT_PENALTY_MODES = ("loss", "prox")
# add_grad computes the same gradient as the loss term (one fused pass instead of autograd),
# so its images match "loss" up to rounding: it is run at one λ, for its wall time.
ADD_GRAD_LAMBDA = 1e-2


def _weight_penalty() -> Study:
    arms = [
        Arm(
            "none",
            {"weight_penalty": "none", "weight_penalty_strength": 0.0, "penalty_mode": "add_grad"},
            "none",
        )
    ]
    for pen in ("l1", "l2", "elastic_net", "l0"):
        for mode in WEIGHT_PENALTY_MODES:
            if pen == "l0" and mode != "prox":
                continue  # L0 has no gradient: only its proximal step (hard threshold) exists
            for lam in WEIGHT_PENALTY_LAMBDAS:
                arms.append(
                    Arm(
                        f"{pen} {mode} λ={lam:g}",
                        {"weight_penalty": pen, "weight_penalty_strength": lam, "penalty_mode": mode},
                        pen,
                    )
                )
            if mode == "loss":
                arms.append(
                    Arm(
                        f"{pen} add_grad λ={ADD_GRAD_LAMBDA:g}",
                        {
                            "weight_penalty": pen,
                            "weight_penalty_strength": ADD_GRAD_LAMBDA,
                            "penalty_mode": "add_grad",
                        },
                        pen,
                    )
                )
    return Study(
        name="weight-penalty",
        title="Weight penalties on G: image quality against exact sparsity, and the cost of each way",
        question=(
            "What do L1, L2, elastic-net and L0 penalties on the generator's weights do to image "
            "quality (KID, classifier score) and to the fraction of exactly-zero weights, applied as "
            "a loss term (autograd), as a fused gradient (add_grad_) or as a proximal step (ProxAdam), "
            "and what does each way cost per step?"
        ),
        base={
            "dataset": "digits",
            "task": "completion",
            "mask": "bottom_half",
            "steps": 600,
            "batch_size": 64,
            "width": 0.5,
            "recon": "l1",
            "recon_weight": 100.0,
            "adv_weight": 1.0,
            "conditional_d": True,
            "penalty_on": "g",
            # metrics must describe the network whose zeros are counted, not an average of it
            "ema_decay": 0.0,
            **_QUIET,
        },
        arms=arms,
        seeds=3,
        smoke={"steps": 4, "batch_size": 16, "log_every": 2, "eval_samples": 64, "max_images": 128},
        smoke_arms=["none", "l1 loss λ=0.01", "l1 add_grad λ=0.01", "l1 prox λ=0.01", "l0 prox λ=0.01"],
        measures=("sparsity", "step_time"),
        time_steps=30,
    )


STUDIES: dict[str, Callable[[], Study]] = {"loss-ablation": _loss_ablation, "weight-penalty": _weight_penalty}


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise ValueError(f"'name': unknown study {name!r}; choose one of {', '.join(STUDIES)}")
    return STUDIES[name]()


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
