"""What every proximal step returns: :class:`ProxStats`, the zeros after the step (per
tensor, in total, of how many). Re-exported by :mod:`normreg.prox`; :mod:`._runners` makes them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ProxStats:
    """Zeros after a proximal step: per tensor (in the order given), in total, and of how many."""

    zeros: list[int]
    total_zeros: int
    numel: int

    @property
    def fraction(self) -> float:
        """Fraction of entries that are exactly zero (0.0 for no entries)."""
        return self.total_zeros / self.numel if self.numel else 0.0

    @classmethod
    def from_counts(cls, zeros: Sequence[int] | Tensor, tensors: Sequence[Tensor]) -> ProxStats:
        """From the counts of a direct call (ints) or of an operator (an int64 tensor).

        Under torch.compile and for meta tensors the counts stay a tensor (``zeros`` and
        ``total_zeros`` are then tensors): reading them would end the graph.
        """
        numel = sum(t.numel() for t in tensors)
        if isinstance(zeros, Tensor):
            if torch.compiler.is_compiling() or zeros.device.type == "meta":
                return cls(zeros, zeros.sum(), numel)
            zeros = zeros.tolist()
        z = [int(v) for v in zeros]
        return cls(z, sum(z), numel)

    @classmethod
    def combine(cls, parts: Iterable[ProxStats]) -> ProxStats:
        """Concatenate the stats of several calls (zeros lists are joined in order)."""
        zeros: list[int] = []
        numel = 0
        for p in parts:
            zeros.extend(p.zeros)
            numel += p.numel
        return cls(zeros, sum(zeros), numel)

    def __repr__(self) -> str:
        return f"ProxStats(total_zeros={self.total_zeros}, numel={self.numel}, fraction={self.fraction:.4g})"
