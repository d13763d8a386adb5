"""The stability study's arms, seeds and run settings (shared by the runner and the report)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["StabilityArm", "ARMS", "BASE", "SMOKE", "SMOKE_ARMS", "SEEDS", "STEPS", "arm_names"]


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
    *(StabilityArm(f"L2 λ={s:g}", "norm", {"d_penalty": "l2", "d_penalty_strength": s}) for s in L2_STRENGTHS),
    StabilityArm(f"L1 prox λ={L1_STRENGTH:g}", "norm", {"d_penalty": "l1", "d_penalty_strength": L1_STRENGTH}),
    # elastic net = the L1 arm's L1 part plus the middle L2 arm's squared-L2 part
    StabilityArm("elastic net λ1=0.1, λ2=1", "norm",
                 {"d_penalty": "elastic_net", "d_penalty_strength": 1.1, "l1_ratio": 1.0 / 11.0}),
    StabilityArm("spectral norm", "SN", {"spectral_norm": True}),
    StabilityArm("R1 γ=1 + L2 λ=1", "combined", {"r1_gamma": 1.0, "d_penalty": "l2", "d_penalty_strength": 1.0}),
    StabilityArm("adaptive L2 (target 0.6)", "adaptive",
                 {"d_penalty": "l2", "d_penalty_strength": 1.0, "adaptive_target": 0.6}),
)

STEPS = 2000
BASE: dict[str, Any] = {
    "steps": STEPS, "hidden": 64, "batch_size": 256, "eval_every": 100, "eval_samples": 2000,
    "log_every": 50, "checkpoint_every": STEPS, "snapshots": (0, 250, 500, 1000, 2000), "snapshot_samples": 500,
}
SMOKE: dict[str, Any] = {
    "steps": 6, "hidden": 16, "batch_size": 32, "eval_every": 3, "eval_samples": 200, "log_every": 2,
    "checkpoint_every": 3, "snapshots": (0, 3, 6), "snapshot_samples": 50,
}
SMOKE_ARMS = ("none", "R1 γ=1", "L1 prox λ=0.1", "spectral norm", "adaptive L2 (target 0.6)")


def arm_names() -> list[str]:
    return [a.name for a in ARMS]
