"""Adaptive penalty strength for the discriminator: :class:`AdaptiveLambda`.

The controller follows the overfitting heuristic of adaptive discriminator augmentation
(ADA, Karras et al. 2020): ``r_t = E[sign(D(x_real))]`` over the real samples D saw since
the last adjustment. ``r_t`` near 1 means D calls (almost) every real sample real with
confidence: it is winning or overfitting, so its penalty goes up; below the target it goes
down. Every ``interval`` observations the factor is multiplied by
``exp(gain * (r_t - target))`` and clipped to ``[min_factor, max_factor]``.

The object is a plain class (no dependency on an optimizer)::

    ctrl = AdaptiveLambda(target=0.6)
    opt = normreg.optim.ProxAdam(normreg.param_groups(D, normreg.SquaredL2(1.0)), lr=1e-3,
                                 penalty_schedule=ctrl)         # ctrl(step) -> ctrl.factor
    ...
    ctrl.observe(d_real_logits)    # after D's forward pass on the real batch
    ctrl.step()                    # adjusts the factor every `interval` observations

``ctrl.factor`` is the multiplier, ``ctrl.strength`` is ``base * factor`` (``base`` = the
penalty's nominal strength, for users who scale λ themselves). It has ``state_dict()`` /
``load_state_dict()`` for checkpoints. It deliberately has no ``update()`` method:
normreg's proximal optimizers call ``schedule.update(ProxStats)`` on schedules that have one.
"""

from __future__ import annotations

import math

import torch

__all__ = ["AdaptiveLambda", "ada_signal"]


def _real(v, arg: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"'{arg}' must be a real number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"'{arg}' must be finite, got {v}")
    return v


def ada_signal(d_real: torch.Tensor) -> float:
    """``E[sign(D(x_real))]`` of one batch of D's logits on real samples (in [-1, 1])."""
    if not isinstance(d_real, torch.Tensor):
        raise TypeError(
            f"'d_real' must be a tensor of D's outputs on real samples, got {type(d_real).__name__}"
        )
    if d_real.numel() == 0:
        raise ValueError("'d_real' is empty: pass D's outputs on a non-empty batch of real samples")
    v = d_real.detach().double()
    if not bool(torch.isfinite(v).all()):
        raise ValueError("'d_real' holds NaN or Inf: D's outputs diverged")
    return float(torch.sign(v).mean())


class AdaptiveLambda:
    """Raises D's penalty strength while ``E[sign(D(x_real))]`` is above ``target``, lowers it below.

    Parameters
    ----------
    target : float in (0, 1)
        The value of ``r_t`` to hold (ADA uses 0.6).
    gain : float > 0
        Log-change of the factor per unit of error per adjustment.
    interval : int >= 1
        Observations (batches) averaged per adjustment.
    initial : float > 0
        Starting factor.
    min_factor, max_factor : 0 < min_factor <= max_factor
    base : float >= 0
        The nominal strength; ``strength = base * factor``.
    """

    def __init__(
        self,
        target: float = 0.6,
        gain: float = 0.5,
        interval: int = 4,
        initial: float = 1.0,
        min_factor: float = 1e-3,
        max_factor: float = 1e3,
        base: float = 1.0,
    ) -> None:
        target = _real(target, "target")
        if not 0.0 < target < 1.0:
            raise ValueError(
                f"'target' is the value of E[sign(D(x_real))] to hold and must lie in (0, 1) (ADA uses 0.6), got {target}"
            )
        gain = _real(gain, "gain")
        if gain <= 0:
            raise ValueError(f"'gain' must be > 0, got {gain}")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"'interval' must be an int >= 1, got {interval!r}")
        min_factor, max_factor = _real(min_factor, "min_factor"), _real(max_factor, "max_factor")
        if not 0.0 < min_factor <= max_factor:
            raise ValueError(f"need 0 < 'min_factor' <= 'max_factor', got {min_factor}, {max_factor}")
        initial = _real(initial, "initial")
        if initial <= 0:
            raise ValueError(f"'initial' must be > 0, got {initial}")
        base = _real(base, "base")
        if base < 0:
            raise ValueError(f"'base' (the nominal strength) must be >= 0, got {base}")
        self.target, self.gain, self.interval = target, gain, interval
        self.min_factor, self.max_factor, self.base = min_factor, max_factor, base
        self.factor = min(max(initial, min_factor), max_factor)
        self._sum = 0.0
        self._count = 0
        self.last_signal: float | None = None  # r_t of the last adjustment
        self.adjustments = 0

    @property
    def strength(self) -> float:
        """``base * factor``: the penalty strength in force."""
        return self.base * self.factor

    def __call__(self, step: int) -> float:
        """The factor (usable as ``penalty_schedule`` of normreg's optimizers)."""
        return self.factor

    def observe(self, d_real: torch.Tensor | float) -> None:
        """Record one batch: D's logits on real samples (a tensor), or an already computed r in [-1, 1]."""
        if isinstance(d_real, torch.Tensor):
            r = ada_signal(d_real)
        else:
            r = _real(d_real, "d_real")
            if not -1.0 <= r <= 1.0:
                raise ValueError(
                    f"'d_real' as a number is E[sign(D(x_real))] and must lie in [-1, 1], got {r}"
                )
        self._sum += r
        self._count += 1

    def step(self) -> float:
        """Adjust the factor once ``interval`` batches were observed; returns the factor."""
        if self._count >= self.interval:
            r = self._sum / self._count
            self.last_signal = r
            f = self.factor * math.exp(self.gain * (r - self.target))
            self.factor = min(max(f, self.min_factor), self.max_factor)
            self._sum, self._count = 0.0, 0
            self.adjustments += 1
        return self.factor

    def state_dict(self) -> dict:
        return {
            "factor": self.factor,
            "target": self.target,
            "gain": self.gain,
            "interval": self.interval,
            "min_factor": self.min_factor,
            "max_factor": self.max_factor,
            "base": self.base,
            "sum": self._sum,
            "count": self._count,
            "last_signal": self.last_signal,
            "adjustments": self.adjustments,
        }

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or "factor" not in state:
            raise ValueError("'state' is not an AdaptiveLambda state_dict (no 'factor')")
        fresh = AdaptiveLambda(
            target=float(state["target"]),
            gain=float(state["gain"]),
            interval=int(state["interval"]),
            initial=float(state["factor"]),
            min_factor=float(state["min_factor"]),
            max_factor=float(state["max_factor"]),
            base=float(state["base"]),
        )  # validates every value before this object changes
        fresh.factor = float(state["factor"])
        fresh._sum, fresh._count = float(state["sum"]), int(state["count"])
        ls = state.get("last_signal")
        fresh.last_signal = None if ls is None else float(ls)
        fresh.adjustments = int(state.get("adjustments", 0))
        self.__dict__.update(fresh.__dict__)

    def __repr__(self) -> str:
        return f"AdaptiveLambda(target={self.target:g}, gain={self.gain:g}, factor={self.factor:g})"
