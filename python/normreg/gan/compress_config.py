"""The options of ``normreg compress`` (``normreg.gan.compress``): ``CompressConfig``, checked
when made, and the methods it names (``COMPRESS_METHODS``; ``normreg.gan.compress_methods``
implements them)."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["CompressConfig", "COMPRESS_METHODS"]

COMPRESS_METHODS = ("group_lasso", "slimming", "l0", "magnitude")


@dataclass(frozen=True)
class CompressConfig:
    """Options of ``normreg compress`` (flags = field names with dashes).

    method : ``group_lasso`` | ``slimming`` | ``l0`` (channel penalties, proximal step) or
        ``magnitude`` (the baseline: smallest channels of every layer, no regularization)
    target_macs : fraction in (0, 1] of the dense G's multiply-adds to keep
    sparse_steps : steps of sparse training (regularized methods)
    finetune_steps : steps of fine-tuning after pruning
    strength : λ of the channel penalty before the controller's factor
    gain, interval : the MAC controller's log-step per unit of error, and steps between measurements
    ramp : share of the sparse steps over which the MAC budget falls from 1 to ``target_macs``
        (cubic, as in gradual pruning); the rest hold the target
    lr : G's learning rate in both phases (0: the run's ``lr_g``)
    latency_repeats : timed forward passes per generator, batch size and thread count
    """

    method: str = "group_lasso"
    target_macs: float = 0.25
    sparse_steps: int = 1000
    finetune_steps: int = 500
    strength: float = 5.0
    gain: float = 1.0
    interval: int = 10
    ramp: float = 0.6
    lr: float = 0.0
    latency_repeats: int = 10

    def __post_init__(self) -> None:
        if self.method not in COMPRESS_METHODS:
            raise ValueError(
                f"CompressConfig: 'method' must be one of {', '.join(COMPRESS_METHODS)}, got {self.method!r}"
            )
        t = self.target_macs
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 1:
            raise ValueError(
                f"CompressConfig: 'target_macs' is the fraction of the dense G's multiply-adds to keep, in (0, 1]; got {t!r}"
            )
        for name, lo in (("sparse_steps", 0), ("finetune_steps", 0), ("interval", 1), ("latency_repeats", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"CompressConfig: {name!r} must be an int >= {lo}, got {v!r}")
        for name, positive in (("strength", True), ("gain", True), ("lr", False)):
            v = getattr(self, name)
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
            if not ok or v < 0 or (positive and v == 0):
                raise ValueError(
                    f"CompressConfig: {name!r} must be a finite number {'> 0' if positive else '>= 0'}, got {v!r}"
                )
        r = self.ramp
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r <= 1:
            raise ValueError(f"CompressConfig: 'ramp' is a share of the sparse steps, in [0, 1]; got {r!r}")
        if self.method != "magnitude" and self.sparse_steps == 0:
            raise ValueError(
                f"CompressConfig: method {self.method!r} needs 'sparse_steps' >= 1 (sparse training)"
            )
