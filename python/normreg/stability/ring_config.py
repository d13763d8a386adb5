"""The ring testbed's run configuration (:class:`RingConfig`; see :mod:`normreg.stability.ring`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["RingConfig", "D_PENALTIES"]

D_PENALTIES = ("none", "l1", "l2", "elastic_net")


@dataclass(frozen=True)
class RingConfig:
    """Every option of a ring run (validated on construction; ``ValueError`` names the field)."""

    seed: int = 0
    steps: int = 2000
    batch_size: int = 256
    z_dim: int = 16
    hidden: int = 128
    depth: int = 2
    lr_g: float = 1e-3
    lr_d: float = 1e-3
    beta1: float = 0.5
    beta2: float = 0.999
    radius: float = 2.0
    sigma: float = 0.02
    modes: int = 8
    # -- D's regularization ------------------------------------------------------------------
    r1_gamma: float = 0.0
    d_penalty: str = "none"  #: none | l1 | l2 | elastic_net (normreg penalties on D's weights)
    d_penalty_strength: float = 0.0
    l1_ratio: float = 0.5  #: elastic_net: share of the strength in the L1 part
    d_penalty_mode: str = "prox"  #: prox (ProxAdam's proximal step) | grad (its gradient in ProxAdam)
    spectral_norm: bool = False
    adaptive_target: float = 0.0  #: 0: off; in (0, 1): AdaptiveLambda target for d_penalty
    adaptive_gain: float = 0.5
    adaptive_interval: int = 4
    # -- output -------------------------------------------------------------------------------
    eval_every: int = 500
    eval_samples: int = 2000
    log_every: int = 50
    checkpoint_every: int = 1000
    snapshots: tuple[int, ...] = ()  #: steps at which samples are kept for plots (summary["snapshots"])
    snapshot_samples: int = 500

    def __post_init__(self) -> None:
        if isinstance(self.snapshots, list):
            object.__setattr__(self, "snapshots", tuple(self.snapshots))
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type == "float" and isinstance(v, int) and not isinstance(v, bool):
                object.__setattr__(self, f.name, float(v))
        self._validate()

    def _validate(self) -> None:
        def err(name: str, msg: str):
            raise ValueError(f"RingConfig: '{name}' {msg}")

        for f in fields(self):
            v = getattr(self, f.name)
            want = {"str": str, "int": int, "float": float, "bool": bool}.get(f.type)
            if want is None:
                continue
            if (want is not bool and isinstance(v, bool)) or not isinstance(v, want):
                raise TypeError(f"RingConfig: '{f.name}' must be {f.type}, got {type(v).__name__} {v!r}")
            if want is float and not math.isfinite(v):
                err(f.name, f"must be finite, got {v}")
        for name in (
            "steps",
            "batch_size",
            "z_dim",
            "hidden",
            "depth",
            "modes",
            "eval_every",
            "eval_samples",
            "log_every",
            "checkpoint_every",
            "adaptive_interval",
            "snapshot_samples",
        ):
            if getattr(self, name) < 1:
                err(name, f"must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            err("seed", f"must be >= 0, got {self.seed}")
        for name in ("lr_g", "lr_d", "radius", "sigma", "adaptive_gain"):
            if getattr(self, name) <= 0:
                err(name, f"must be > 0, got {getattr(self, name)}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                err(name, f"must lie in [0, 1), got {getattr(self, name)}")
        for name in ("r1_gamma", "d_penalty_strength"):
            if getattr(self, name) < 0:
                err(name, f"is a regularization strength and must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.l1_ratio <= 1:
            err("l1_ratio", f"must lie in [0, 1], got {self.l1_ratio}")
        if self.d_penalty not in D_PENALTIES:
            err("d_penalty", f"must be one of {', '.join(D_PENALTIES)}; got {self.d_penalty!r}")
        if self.d_penalty_mode not in ("prox", "grad"):
            err("d_penalty_mode", f"must be 'prox' or 'grad'; got {self.d_penalty_mode!r}")
        if self.adaptive_target != 0 and not 0 < self.adaptive_target < 1:
            err("adaptive_target", f"must lie in (0, 1) (or be 0: no controller), got {self.adaptive_target}")
        if self.adaptive_target and (self.d_penalty == "none" or self.d_penalty_strength == 0):
            err("adaptive_target", "needs a d_penalty with d_penalty_strength > 0 to scale")
        if not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= self.steps for s in self.snapshots
        ):
            err("snapshots", f"must be steps in [0, steps={self.steps}], got {self.snapshots!r}")

    def replace(self, **changes: Any) -> RingConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["snapshots"] = list(self.snapshots)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RingConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"RingConfig: unknown option(s) {', '.join(map(repr, unknown))}")
        return cls(**d)
