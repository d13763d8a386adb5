"""λ adapted toward a target fraction of exactly-zero channels."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from ..optim.penalty_scheduler import SparsityController
from ..prox import ProxStats
from ._layers import check_model, check_threshold, count_macs, count_zero_channels, prunable_layers
from .prune import prune_zero_channels
from .resize import settle_zero_channels

__all__ = ["ChannelSparsityController", "MacController", "macs_after_pruning"]


class ChannelSparsityController(SparsityController):
    """:class:`normreg.optim.SparsityController` on the count of zero *channels*.

    Give it as ``penalty_schedule`` of a :mod:`normreg.optim` optimizer built on
    :func:`normreg.compress.channel_groups`. After every step the optimizer calls
    ``update``; the fraction of the prunable layers' output channels that are exactly zero
    (:func:`normreg.compress.count_zero_channels`, with ``running_stats=False`` by default:
    a channel whose weights and shift are zero counts before its BatchNorm running mean has
    decayed, since it is removable once the statistics are re-estimated) replaces the
    fraction of zero entries, and the factor is multiplied by ``exp(gain * (target -
    fraction))``, clipped to ``[min_factor, max_factor]``, as in ``SparsityController``.

    Parameters
    ----------
    model : nn.Module
        The model whose channels are counted (the one the optimizer trains).
    target : float in [0, 1]
        Fraction of the prunable channels to make exactly zero.
    gain, initial, min_factor, max_factor, schedule
        As in :class:`normreg.optim.SparsityController`.
    threshold : float >= 0
        ``|v| <= threshold`` counts as zero (default 0).
    running_stats : bool
        Count by the eval-mode rule, running means included (default False, see above).
    """

    def __init__(
        self,
        model: nn.Module,
        target: float,
        gain: float = 1.0,
        initial: float = 1.0,
        min_factor: float = 1e-6,
        max_factor: float = 1e6,
        schedule: Callable[[int], float] | None = None,
        threshold: float = 0.0,
        running_stats: bool = False,
    ) -> None:
        super().__init__(target, gain, initial, min_factor, max_factor, schedule)
        self.model = check_model(model)
        if not prunable_layers(model):
            raise ValueError(
                f"'model' ({type(model).__name__}) has no prunable layer whose channels could be counted"
            )
        self.threshold = check_threshold(threshold)
        if not isinstance(running_stats, bool):
            raise TypeError(f"'running_stats' must be True or False, got {type(running_stats).__name__}")
        self.running_stats = running_stats

    def channel_fraction(self) -> float:
        """The fraction of the prunable channels that are zero now."""
        zero, total = count_zero_channels(self.model, self.threshold, self.running_stats)
        return zero / total

    def update(self, stats: ProxStats | None = None) -> None:
        fraction = self.channel_fraction()
        self.last_fraction = fraction
        f = self.factor * math.exp(self.gain * (self.target - fraction))
        self.factor = min(max(f, self.min_factor), self.max_factor)

    def __repr__(self) -> str:
        return (
            f"ChannelSparsityController(target={self.target:g}, gain={self.gain:g}, factor={self.factor:g})"
        )


def macs_after_pruning(model: nn.Module, example_input, input_shape) -> int:
    """Multiply-adds of ``model`` once its zero channels are removed (train-mode rule: a
    channel whose weights and shift are zero counts as removed; see
    :func:`normreg.compress.settle_zero_channels`). ``model`` is not modified."""
    probe = copy.deepcopy(model)
    settle_zero_channels(probe)
    return count_macs(prune_zero_channels(probe, example_input), input_shape)


class MacController:
    """λ adapted toward a target fraction of the dense model's multiply-adds.

    A ``penalty_schedule`` for a :mod:`normreg.optim` optimizer built on
    :func:`normreg.compress.channel_groups`: every ``interval`` steps it measures the MACs
    the model would have with its zero channels removed (:func:`macs_after_pruning`: a
    pruned copy and :func:`normreg.compress.count_macs`, exact, since channels of different
    layers cost different multiply-adds) and multiplies the factor on λ by
    ``exp(gain * (fraction - target))``: more penalty while the pruned model is above its
    budget, less once below. The factor is clipped to ``[min_factor, max_factor]``.

    λ rises by at most ``exp(max_rise)`` per measurement: under Adam every channel resists a
    proximal shrink of about the same size (its step is about ``lr`` per entry whatever its
    gradient), so channels go in an avalanche once λ passes that point, and a λ that is
    still rising fast then removes far more than the budget. Start it near the onset
    (``initial``, or the penalty's strength).

    With ``ramp_steps`` the budget is lowered gradually, as in gradual pruning (Zhu & Gupta
    2017): after ``k`` steps it is ``target + (1 - target) (1 - k / ramp_steps)^3``, so that
    λ rises with the sparsity it can reach instead of overshooting: a network whose channels
    all go at once has no gradient left to grow any back.

    Parameters
    ----------
    model : nn.Module
    example_input : Tensor
        What the model is called with (traces the graph; a batch of one is enough).
    target : float in (0, 1]
        The fraction of the dense model's MACs to keep.
    gain, interval, initial, min_factor, max_factor
        Log-step per unit of error; steps between measurements; the factor's start and bounds.
    ramp_steps : int >= 0
        Steps over which the budget falls from 1 to ``target`` (0: ``target`` from the start).
    max_rise : float > 0
        Largest rise of ``log(factor)`` per measurement.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input,
        target: float,
        gain: float = 2.0,
        interval: int = 10,
        initial: float = 1.0,
        min_factor: float = 1e-3,
        max_factor: float = 1e6,
        ramp_steps: int = 0,
        max_rise: float = 0.05,
    ) -> None:
        self.model = check_model(model)
        if (
            isinstance(max_rise, bool)
            or not isinstance(max_rise, (int, float))
            or not 0 < max_rise < math.inf
        ):
            raise ValueError(f"'max_rise' must be a finite number > 0, got {max_rise!r}")
        self.max_rise = float(max_rise)
        if isinstance(ramp_steps, bool) or not isinstance(ramp_steps, int) or ramp_steps < 0:
            raise ValueError(f"'ramp_steps' must be an int >= 0, got {ramp_steps!r}")
        self.ramp_steps = ramp_steps
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
            raise ValueError(f"'target' is the fraction of the dense MACs to keep, in (0, 1]; got {target!r}")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"'interval' must be an int >= 1, got {interval!r}")
        for name, v in (
            ("gain", gain),
            ("initial", initial),
            ("min_factor", min_factor),
            ("max_factor", max_factor),
        ):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
                raise ValueError(f"'{name}' must be a finite number > 0, got {v!r}")
        if not min_factor <= max_factor:
            raise ValueError(f"need 'min_factor' <= 'max_factor', got {min_factor}, {max_factor}")
        if not prunable_layers(model):
            raise ValueError(f"'model' ({type(model).__name__}) has no prunable layer")
        if not isinstance(example_input, torch.Tensor):
            raise TypeError(
                f"'example_input' must be the tensor the model is called with, got {type(example_input).__name__}"
            )
        self.example_input = example_input
        self.input_shape = tuple(example_input.shape)
        self.target, self.gain, self.interval = float(target), float(gain), interval
        self.min_factor, self.max_factor = float(min_factor), float(max_factor)
        self.factor = min(max(float(initial), self.min_factor), self.max_factor)
        self.dense_macs = count_macs(model, self.input_shape)
        self.calls = 0
        self.last_fraction = self.mac_fraction()

    def mac_fraction(self) -> float:
        """MACs with the zero channels removed, over the dense model's."""
        return macs_after_pruning(self.model, self.example_input, self.input_shape) / self.dense_macs

    def current_target(self) -> float:
        """The budget after the steps taken so far (``target`` once the ramp is over)."""
        if self.ramp_steps == 0 or self.calls >= self.ramp_steps:
            return self.target
        return self.target + (1.0 - self.target) * (1.0 - self.calls / self.ramp_steps) ** 3

    def __call__(self, step: int) -> float:
        return self.factor

    def update(self, stats: ProxStats | None = None) -> None:
        self.calls += 1
        if self.calls % self.interval:
            return
        fraction = self.mac_fraction()
        self.last_fraction = fraction
        rate = self.gain * (fraction - self.current_target())
        rate = min(rate, self.max_rise)  # rise slowly (see the class docstring)
        f = self.factor * math.exp(rate)
        self.factor = min(max(f, self.min_factor), self.max_factor)

    def state_dict(self) -> dict:
        return {
            "factor": self.factor,
            "target": self.target,
            "ramp_steps": self.ramp_steps,
            "calls": self.calls,
            "last_fraction": self.last_fraction,
        }

    def load_state_dict(self, state: dict) -> None:
        self.factor, self.target = float(state["factor"]), float(state["target"])
        self.calls, self.last_fraction = int(state["calls"]), state.get("last_fraction")
        self.ramp_steps = int(state.get("ramp_steps", 0))

    def __repr__(self) -> str:
        return f"MacController(target={self.target:g}, gain={self.gain:g}, factor={self.factor:g})"
