"""The standard tensor lists every benchmark runs on.

* ``dcgan``: the 13 parameter tensors of a DCGAN 64x64 generator (nz=100, ngf=64):
  five transposed convolutions and four batch norms (weight + bias), 3.58M elements;
* ``small200``: 100 tensors of 256x256 and 100 of 256 (6.58M elements): many small tensors,
  where per-tensor overhead dominates;
* ``big25m``: one tensor of 25M elements (100 MB in float32, larger than the L3 cache).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["WORKLOADS", "SHAPES", "make_workload", "workload_bytes"]


def _dcgan_shapes(nz: int = 100, ngf: int = 64, nc: int = 3) -> list[tuple[int, ...]]:
    chans = [nz, ngf * 8, ngf * 4, ngf * 2, ngf, nc]
    shapes: list[tuple[int, ...]] = []
    for i in range(5):
        shapes.append((chans[i], chans[i + 1], 4, 4))  # ConvTranspose2d weight (in, out, kh, kw)
        if i < 4:
            shapes += [(chans[i + 1],), (chans[i + 1],)]  # BatchNorm2d weight, bias
    return shapes


SHAPES: dict[str, list[tuple[int, ...]]] = {
    "dcgan": _dcgan_shapes(),
    "small200": [(256, 256)] * 100 + [(256,)] * 100,
    "big25m": [(25_000_000,)],
}
WORKLOADS = tuple(SHAPES)


def make_workload(name: str, dtype: torch.dtype = torch.float32, seed: int = 0, requires_grad: bool = False) -> list[Tensor]:
    """Fresh tensors of workload ``name`` filled with N(0, 0.02^2) (DCGAN's init scale)."""
    if name not in SHAPES:
        raise ValueError(f"unknown workload {name!r}; choose one of {', '.join(WORKLOADS)}")
    g = torch.Generator().manual_seed(seed)
    out = []
    for shape in SHAPES[name]:
        t = torch.randn(shape, generator=g, dtype=torch.float32).mul_(0.02).to(dtype)
        out.append(t.requires_grad_(requires_grad))
    return out


def workload_bytes(tensors: list[Tensor]) -> int:
    """Bytes one read of every tensor moves."""
    return sum(t.numel() * t.element_size() for t in tensors)
