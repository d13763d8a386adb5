"""NaN and infinity in a GAN run: what a run does on them (``ON_NONFINITE``), the error
that stops it (``NonFiniteError``), and the checks after a step (``first_nonfinite_term``
of the loss terms and λ values, ``first_nonfinite_weight`` of the networks), which
``Trainer.first_nonfinite`` (``normreg.gan.trainer``) makes; ``normreg.gan.train`` stops
the run or trains on.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ON_NONFINITE", "NonFiniteError", "first_nonfinite_term", "first_nonfinite_weight"]

# What a run does when a loss term or a weight becomes NaN or infinite.
ON_NONFINITE = ("stop", "continue")


class NonFiniteError(FloatingPointError):
    """A loss term or a weight became NaN or infinite and the run stopped at that step.

    ``step``, ``name`` (the loss term, or ``weight '<parameter>' of G``) and ``value`` say where;
    ``summary`` is what ``summary.json`` holds (``status: "diverged"``).
    """

    def __init__(self, message: str, step: int, name: str, value: float, summary: dict | None = None) -> None:
        super().__init__(message)
        self.step, self.name, self.value, self.summary = step, name, value, summary or {}


@torch.no_grad()
def first_nonfinite_term(last: dict[str, Tensor], lam: dict[str, float]) -> tuple[str, float] | None:
    """The first NaN or infinite loss term of a step (``last``), else λ value (``lam``), as
    ``(name, value)``; ``None`` when all are finite."""
    names = list(last)
    if names:
        vals = torch.stack([last[k].detach().double().reshape(()) for k in names])
        if not bool(torch.isfinite(vals).all()):
            i = int((~torch.isfinite(vals)).nonzero()[0])
            return names[i], float(vals[i])
    for k, v in lam.items():
        if not math.isfinite(v):
            return k, v
    return None


@torch.no_grad()
def first_nonfinite_weight(models: dict[str, nn.Module | None]) -> tuple[str, float] | None:
    """The first NaN or infinite weight of ``models`` (by name, in order; ``None`` entries
    are skipped) as ``("weight '<parameter>' of <name>", value)``; ``None`` when all are finite.

    Its value is NaN if it holds one, else its largest magnitude (inf). One fused norm per
    network: cheap beside a step.
    """
    for net, model in models.items():
        if model is None:
            continue
        named = [(n, p) for n, p in model.named_parameters() if p.numel() > 0]
        if not named:
            continue
        # 2-norms (the fast foreach kernel): NaN and inf propagate; an overflow of huge
        # finite weights is told apart by the exact check of that tensor
        norms = torch.stack([a.float() for a in torch._foreach_norm([p.detach() for _, p in named])])
        ok = torch.isfinite(norms)
        if not bool(ok.all()):
            for i in (~ok).nonzero().flatten().tolist():
                w = named[i][1].detach()
                if not bool(torch.isfinite(w).all()):
                    value = math.nan if bool(w.isnan().any()) else float(w.abs().max())
                    return f"weight {named[i][0]!r} of {net}", value
    return None
