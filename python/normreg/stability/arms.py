"""The stability study's arms, seeds and run settings (shared by the runner and the report)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "StabilityArm",
    "ARMS",
    "BASE",
    "SMOKE",
    "SMOKE_ARMS",
    "SEEDS",
    "STEPS",
    "arm_names",
    "DIGITS_ARMS",
    "DIGITS_BASE",
    "DIGITS_SMOKE",
    "DIGITS_SMOKE_ARMS",
    "DIGITS_SEEDS",
    "DIGITS_STEPS",
    "PARTS",
]


@dataclass(frozen=True)
class StabilityArm:
    name: str
    group: str
    options: dict


L2_STRENGTHS = (0.1, 1.0, 10.0)
R1_GAMMAS = (0.1, 1.0, 10.0)
L1_STRENGTH = 0.1
SEEDS = 5

ARMS: tuple[StabilityArm, ...] = (
    StabilityArm("none", "none", {}),
    *(StabilityArm(f"R1 γ={g:g}", "R1", {"r1_gamma": g}) for g in R1_GAMMAS),
    *(
        StabilityArm(f"L2 λ={s:g}", "norm", {"d_penalty": "l2", "d_penalty_strength": s})
        for s in L2_STRENGTHS
    ),
    StabilityArm(
        f"L1 prox λ={L1_STRENGTH:g}", "norm", {"d_penalty": "l1", "d_penalty_strength": L1_STRENGTH}
    ),
    # elastic net = the L1 arm's L1 part plus the middle L2 arm's squared-L2 part
    StabilityArm(
        "elastic net λ1=0.1, λ2=1",
        "norm",
        {"d_penalty": "elastic_net", "d_penalty_strength": 1.1, "l1_ratio": 1.0 / 11.0},
    ),
    StabilityArm("spectral norm", "SN", {"spectral_norm": True}),
    StabilityArm(
        "R1 γ=1 + L2 λ=1", "combined", {"r1_gamma": 1.0, "d_penalty": "l2", "d_penalty_strength": 1.0}
    ),
    StabilityArm(
        "adaptive L2 (target 0.6)",
        "adaptive",
        {"d_penalty": "l2", "d_penalty_strength": 1.0, "adaptive_target": 0.6},
    ),
)

STEPS = 2000
BASE: dict[str, Any] = {
    "steps": STEPS,
    "hidden": 64,
    "batch_size": 256,
    "eval_every": 100,
    "eval_samples": 2000,
    "log_every": 50,
    "checkpoint_every": STEPS,
    "snapshots": (0, 250, 500, 1000, 2000),
    "snapshot_samples": 500,
}
SMOKE: dict[str, Any] = {
    "steps": 6,
    "hidden": 16,
    "batch_size": 32,
    "eval_every": 3,
    "eval_samples": 200,
    "log_every": 2,
    "checkpoint_every": 3,
    "snapshots": (0, 3, 6),
    "snapshot_samples": 50,
}
SMOKE_ARMS = ("none", "R1 γ=1", "L1 prox λ=0.1", "spectral norm", "adaptive L2 (target 0.6)")


def arm_names() -> list[str]:
    return [a.name for a in ARMS]


# ---- the digits part: the same arms on unconditional 8x8 digits (normreg.gan's image trainer) ----
# The strengths are the ring's: the L1 threshold and the L2 shrinkage per step are λ times the
# learning rate, so λ measures the penalty against Adam's (lr-sized) step on either testbed.
# R1 is the trainer's lazy R1 (every 16 steps, weighted by 16; StyleGAN2's practice).
PARTS = ("ring", "digits")
DIGITS_SEEDS = 3
DIGITS_STEPS = 1500
_D = {"penalty_on": "d", "penalty_mode": "prox"}
DIGITS_ARMS: tuple[StabilityArm, ...] = (
    StabilityArm("none", "none", {"weight_penalty": "none"}),
    *(StabilityArm(f"R1 γ={g:g}", "R1", {"weight_penalty": "none", "r1_weight": g}) for g in R1_GAMMAS),
    *(
        StabilityArm(f"L2 λ={s:g}", "norm", {**_D, "weight_penalty": "l2", "weight_penalty_strength": s})
        for s in L2_STRENGTHS
    ),
    StabilityArm(
        f"L1 prox λ={L1_STRENGTH:g}",
        "norm",
        {**_D, "weight_penalty": "l1", "weight_penalty_strength": L1_STRENGTH},
    ),
    StabilityArm(
        "elastic net λ1=0.1, λ2=1",
        "norm",
        {**_D, "weight_penalty": "elastic_net", "weight_penalty_strength": 1.1, "l1_ratio": 1.0 / 11.0},
    ),
    StabilityArm("spectral norm", "SN", {"weight_penalty": "none", "d_spectral_norm": True}),
    StabilityArm(
        "R1 γ=1 + L2 λ=1",
        "combined",
        {**_D, "r1_weight": 1.0, "weight_penalty": "l2", "weight_penalty_strength": 1.0},
    ),
    StabilityArm(
        "adaptive L2 (target 0.6)",
        "adaptive",
        {
            **_D,
            "weight_penalty": "l2",
            "weight_penalty_strength": 1.0,
            "penalty_schedule": "adaptive",
            "adaptive_target": 0.6,
        },
    ),
)
DIGITS_BASE: dict[str, Any] = {
    "task": "unconditional",
    "dataset": "digits",
    "width": 0.5,
    "steps": DIGITS_STEPS,
    "batch_size": 64,
    "ema_decay": 0.995,
    "eval_every": 500,
    "sample_every": DIGITS_STEPS,
    "checkpoint_every": DIGITS_STEPS,
    "log_every": 50,
}
DIGITS_SMOKE: dict[str, Any] = {
    "steps": 3,
    "width": 0.25,
    "batch_size": 16,
    "eval_every": 3,
    "sample_every": 3,
    "checkpoint_every": 3,
    "log_every": 1,
    "eval_samples": 64,
    "max_images": 200,
}
DIGITS_SMOKE_ARMS = ("none", "spectral norm", "adaptive L2 (target 0.6)")
