"""λ adapted toward a target fraction of exactly-zero channels."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from ..optim.penalty_scheduler import SparsityController
from ..prox import ProxStats
from ._layers import check_model, check_threshold, count_zero_channels, prunable_layers

__all__ = ["ChannelSparsityController"]


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
            raise ValueError(f"'model' ({type(model).__name__}) has no prunable layer whose channels could be counted")
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
