"""Penalty-strength (λ) schedules and the penalty scheduler, in the style of
:mod:`torch.optim.lr_scheduler`.

A *schedule* maps the step count k = 0, 1, ... to a factor on every penalty strength:
:class:`Constant`, :class:`LinearWarmup`, :class:`Cosine`, any callable ``k -> factor``, or a
:class:`SparsityController`, which adjusts the factor after each step toward a target
fraction of exact zeros.

A :class:`PenaltyScheduler` drives a schedule the way an lr scheduler drives the learning
rate: it writes the factor into every param group's ``"penalty_factor"`` (the optimizer
multiplies each group's penalty by it), is stepped after ``optimizer.step()``, and has
``state_dict()`` / ``load_state_dict()`` of plain data. It touches only
``"penalty_factor"``, so it composes with any lr scheduler on the same optimizer::

    opt = normreg.optim.ProxAdam(normreg.param_groups(model, normreg.L1(1e-4)), lr=1e-3)
    lr_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=1000)
    pen_sched = normreg.optim.PenaltyScheduler(opt, normreg.optim.LinearWarmup(100))
    for batch in data:
        loss(batch).backward(); opt.step(); opt.zero_grad()
        lr_sched.step(); pen_sched.step()

The older ``penalty_schedule=`` argument of the optimizers still works (the optimizer then
calls the schedule itself at each step); the two multiply.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..prox import ProxStats

__all__ = ["Constant", "LinearWarmup", "Cosine", "SparsityController", "PenaltyScheduler"]


class Constant:
    """``factor`` at every step."""

    def __init__(self, factor: float = 1.0) -> None:
        self.factor = _nonneg(factor, "factor")

    def __call__(self, step: int) -> float:
        return self.factor

    def state_dict(self) -> dict:
        return {"factor": self.factor}

    def load_state_dict(self, state: dict) -> None:
        self.factor = float(state["factor"])

    def __repr__(self) -> str:
        return f"Constant({self.factor:g})"


class LinearWarmup:
    """From ``start`` to 1 linearly over ``warmup_steps`` steps, then 1."""

    def __init__(self, warmup_steps: int, start: float = 0.0) -> None:
        self.warmup_steps = _posint(warmup_steps, "warmup_steps")
        self.start = _nonneg(start, "start")

    def __call__(self, step: int) -> float:
        t = min(step / self.warmup_steps, 1.0)
        return self.start + (1.0 - self.start) * t

    def state_dict(self) -> dict:
        return {"warmup_steps": self.warmup_steps, "start": self.start}

    def load_state_dict(self, state: dict) -> None:
        self.warmup_steps, self.start = int(state["warmup_steps"]), float(state["start"])

    def __repr__(self) -> str:
        return f"LinearWarmup({self.warmup_steps}, start={self.start:g})"


class Cosine:
    """From ``start`` to ``end`` along half a cosine over ``total_steps`` steps, then ``end``.

    The default (0 -> 1) ramps the penalty in gently; ``Cosine(n, start=1, end=0)`` anneals it.
    """

    def __init__(self, total_steps: int, start: float = 0.0, end: float = 1.0) -> None:
        self.total_steps = _posint(total_steps, "total_steps")
        self.start = _nonneg(start, "start")
        self.end = _nonneg(end, "end")

    def __call__(self, step: int) -> float:
        t = min(step / self.total_steps, 1.0)
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * t))

    def state_dict(self) -> dict:
        return {"total_steps": self.total_steps, "start": self.start, "end": self.end}

    def load_state_dict(self, state: dict) -> None:
        self.total_steps, self.start, self.end = (
            int(state["total_steps"]),
            float(state["start"]),
            float(state["end"]),
        )

    def __repr__(self) -> str:
        return f"Cosine({self.total_steps}, start={self.start:g}, end={self.end:g})"


class SparsityController:
    """Adjusts λ toward a target fraction of exact zeros.

    After every step the optimizer calls ``update(stats)`` with the zeros of the penalized
    groups; the factor is multiplied by ``exp(gain * (target - fraction))`` (more penalty
    while too few entries are zero, less when too many), clipped to ``[min_factor,
    max_factor]``. ``schedule`` (optional) multiplies the factor, e.g. a warm-up.

    Parameters
    ----------
    target : float in [0, 1]
    gain : float > 0
        Log-step per unit of error; larger reacts faster and oscillates more.
    initial : float > 0
    """

    def __init__(
        self,
        target: float,
        gain: float = 1.0,
        initial: float = 1.0,
        min_factor: float = 1e-6,
        max_factor: float = 1e6,
        schedule: Callable[[int], float] | None = None,
    ) -> None:
        target = _nonneg(target, "target")
        if target > 1:
            raise ValueError(f"'target' is a fraction of zeros in [0, 1], got {target}")
        self.target = target
        self.gain = _nonneg(gain, "gain")
        if self.gain == 0:
            raise ValueError("'gain' must be > 0")
        self.min_factor = _nonneg(min_factor, "min_factor")
        self.max_factor = _nonneg(max_factor, "max_factor")
        if not 0 < self.min_factor <= self.max_factor:
            raise ValueError(
                f"need 0 < 'min_factor' <= 'max_factor', got {self.min_factor}, {self.max_factor}"
            )
        self.factor = min(max(_nonneg(initial, "initial"), self.min_factor), self.max_factor)
        if schedule is not None and not callable(schedule):
            raise TypeError(f"'schedule' must be callable (step -> factor), got {type(schedule).__name__}")
        self.schedule = schedule
        self.last_fraction: float | None = None

    def __call__(self, step: int) -> float:
        base = self.schedule(step) if self.schedule is not None else 1.0
        return base * self.factor

    def update(self, stats: ProxStats) -> None:
        self.last_fraction = stats.fraction
        f = self.factor * math.exp(self.gain * (self.target - stats.fraction))
        self.factor = min(max(f, self.min_factor), self.max_factor)

    def state_dict(self) -> dict:
        out = {
            "factor": self.factor,
            "target": self.target,
            "gain": self.gain,
            "last_fraction": self.last_fraction,
        }
        if hasattr(self.schedule, "state_dict"):
            out["schedule"] = self.schedule.state_dict()
        return out

    def load_state_dict(self, state: dict) -> None:
        self.factor = float(state["factor"])
        self.target = float(state["target"])
        self.gain = float(state["gain"])
        self.last_fraction = state.get("last_fraction")
        if "schedule" in state and hasattr(self.schedule, "load_state_dict"):
            self.schedule.load_state_dict(state["schedule"])

    def __repr__(self) -> str:
        return f"SparsityController(target={self.target:g}, gain={self.gain:g}, factor={self.factor:g})"


def _nonneg(v, arg: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"'{arg}' must be a real number, got {type(v).__name__}")
    v = float(v)
    if not (v >= 0) or v == math.inf:
        raise ValueError(f"'{arg}' must be finite and >= 0, got {v}")
    return v


def _posint(v, arg: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"'{arg}' must be a positive int, got {v!r}")
    return v


class PenaltyScheduler:
    """Sets each param group's ``"penalty_factor"`` from a schedule, like an lr scheduler.

    Parameters
    ----------
    optimizer : ProxSGD, ProxAdam or ProxAdamW
    schedule : Constant, LinearWarmup, Cosine, SparsityController or callable ``k -> factor``
        The factor for step k. A :class:`SparsityController` is updated with
        ``optimizer.last_stats`` at every ``step()``.
    last_step : int
        -1 (default) starts a new schedule: the factor of step 0 is set now. To resume,
        ``load_state_dict`` the saved state instead.

    Call ``step()`` once after each ``optimizer.step()``. ``get_last_factor()`` gives the
    factors of the groups, like ``get_last_lr()``.
    """

    def __init__(self, optimizer, schedule, last_step: int = -1) -> None:
        if not hasattr(optimizer, "param_groups") or not hasattr(optimizer, "penalty_factor"):
            raise TypeError(
                f"'optimizer' must be a normreg optimizer (ProxSGD, ProxAdam, ProxAdamW), got {type(optimizer).__name__}"
            )
        if not callable(schedule):
            raise TypeError(
                f"'schedule' must be callable (step -> factor), e.g. normreg.optim.Cosine(1000), got {type(schedule).__name__}"
            )
        if isinstance(last_step, bool) or not isinstance(last_step, int) or last_step < -1:
            raise ValueError(f"'last_step' must be an int >= -1, got {last_step!r}")
        self.optimizer = optimizer
        self.schedule = schedule
        self.last_step = last_step
        self._last_factor: list[float] = []
        self._apply(self.last_step + 1)

    def _factor(self, k: int) -> float:
        f = self.schedule(k)
        if isinstance(f, bool) or not isinstance(f, (int, float)):
            f = float(f)
        f = float(f)
        if not (f >= 0) or f == math.inf:
            raise ValueError(
                f"PenaltyScheduler: the schedule returned {f} at step {k}; factors must be finite and >= 0"
            )
        return f

    def _apply(self, k: int) -> None:
        f = self._factor(k)
        for g in self.optimizer.param_groups:
            g["penalty_factor"] = f
        self._last_factor = [f] * len(self.optimizer.param_groups)

    def step(self) -> None:
        """Advance to the next step: update a controller with the optimizer's last stats,
        then write the next factor into every param group."""
        stats = getattr(self.optimizer, "last_stats", None)
        if stats is not None and hasattr(self.schedule, "update"):
            self.schedule.update(stats)
        self.last_step += 1
        self._apply(self.last_step + 1)

    def get_last_factor(self) -> list[float]:
        """The factor each param group's penalty is multiplied by at the next optimizer step."""
        return list(self._last_factor)

    def state_dict(self) -> dict:
        """Plain data: the step count and the schedule's own state (if it has one)."""
        sched = self.schedule
        return {
            "last_step": self.last_step,
            "last_factor": list(self._last_factor),
            "schedule": sched.state_dict() if hasattr(sched, "state_dict") else None,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        if not isinstance(state_dict, dict) or "last_step" not in state_dict:
            raise ValueError(
                "PenaltyScheduler.load_state_dict: expected a dict saved by PenaltyScheduler.state_dict()"
            )
        self.last_step = int(state_dict["last_step"])
        if state_dict.get("schedule") is not None and hasattr(self.schedule, "load_state_dict"):
            self.schedule.load_state_dict(state_dict["schedule"])
        factors = state_dict.get("last_factor")
        if factors is not None and len(factors) == len(self.optimizer.param_groups):
            for g, f in zip(self.optimizer.param_groups, factors):
                g["penalty_factor"] = float(f)
            self._last_factor = [float(f) for f in factors]
        else:
            self._apply(self.last_step + 1)

    def __repr__(self) -> str:
        return f"PenaltyScheduler({self.schedule!r}, last_step={self.last_step})"
