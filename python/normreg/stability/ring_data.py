"""The ring of 8 Gaussians' data and metrics (Metz et al. 2017; see :mod:`normreg.stability.ring`):
the modes, seeded samples, and the literature's quality / coverage / KL metrics."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["ring_modes", "sample_ring", "ring_metrics"]


def ring_modes(modes: int = 8, radius: float = 2.0, dtype=torch.float32) -> Tensor:
    """The ``modes`` centres on the circle of ``radius``, angle 2πk/modes (k = 0, 1, ...)."""
    a = torch.arange(modes, dtype=torch.float64) * (2 * math.pi / modes)
    return (radius * torch.stack([a.cos(), a.sin()], 1)).to(dtype)


def sample_ring(
    n: int, generator: torch.Generator, modes: int = 8, radius: float = 2.0, sigma: float = 0.02
) -> Tensor:
    """``n`` points of the mixture (each mode with probability 1/modes)."""
    k = torch.randint(modes, (n,), generator=generator)
    return ring_modes(modes, radius)[k] + sigma * torch.randn(n, 2, generator=generator)


def ring_metrics(
    samples: Tensor, modes: int = 8, radius: float = 2.0, sigma: float = 0.02
) -> dict[str, float]:
    """Mode metrics of 2-D samples against the ring.

    Returns ``modes_covered`` (modes holding ≥ 1% of all samples within 3σ), ``hq_fraction``
    (samples within 3σ of some mode), ``kl_uniform`` (KL of the histogram of high-quality
    samples over modes to the uniform one, nats; ``log(modes)`` when there are none... see
    below), ``mode_counts`` and ``finite`` (all samples finite). With no high-quality sample
    the histogram is undefined: ``kl_uniform`` is then NaN.
    """
    if not isinstance(samples, Tensor) or samples.ndim != 2 or samples.shape[1] != 2:
        raise ValueError(
            f"'samples' must be an (n, 2) tensor, got {getattr(samples, 'shape', type(samples))}"
        )
    n = samples.shape[0]
    if n == 0:
        raise ValueError("'samples' is empty")
    x = samples.detach().double()
    finite = bool(torch.isfinite(x).all())
    centres = ring_modes(modes, radius, torch.float64)
    dist = torch.cdist(torch.nan_to_num(x, nan=1e30, posinf=1e30, neginf=-1e30), centres)
    dmin, idx = dist.min(1)
    hq = dmin <= 3 * sigma
    counts = torch.bincount(idx[hq], minlength=modes).double()
    n_hq = float(counts.sum())
    covered = int((counts >= 0.01 * n).sum())
    if n_hq > 0:
        p = counts / n_hq
        nz = p > 0
        kl = float((p[nz] * torch.log(p[nz] * modes)).sum())
    else:
        kl = math.nan
    return {
        "modes_covered": covered,
        "hq_fraction": n_hq / n,
        "kl_uniform": kl,
        "mode_counts": [int(c) for c in counts.tolist()],
        "finite": finite,
    }
