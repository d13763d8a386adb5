"""The standard tensor lists every benchmark runs on.

* ``dcgan``: the 13 parameter tensors of a DCGAN 64x64 generator (nz=100, ngf=64):
  five transposed convolutions and four batch norms (weight + bias), 3.58M elements;
* ``small200``: 100 tensors of 256x256 and 100 of 256 (6.58M elements): many small tensors,
  where per-tensor overhead dominates;
* ``big25m``: one tensor of 25M elements (100 MB in float32, larger than the L3 cache).

Two more families, outside ``WORKLOADS`` (which the pytest suite parametrizes over):

* ``tiny1`` / ``tiny200``: 1 tensor and 200 tensors of one element, to split a call's time
  into a fixed cost per call and a cost per tensor (:data:`OVERHEAD_WORKLOADS`);
* :func:`make_image_batch`: a batch of images and a target batch for the image losses
  (128 RGB images of 64x64 by default, what the DCGAN generator above produces).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "WORKLOADS",
    "OVERHEAD_WORKLOADS",
    "SHAPES",
    "IMAGE_SHAPE",
    "make_workload",
    "make_image_batch",
    "workload_bytes",
]


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
SHAPES["tiny1"] = [(1,)]
SHAPES["tiny200"] = [(1,)] * 200
OVERHEAD_WORKLOADS = ("tiny1", "tiny200")

#: (batch, channels, height, width) of the image-loss workload.
IMAGE_SHAPE = (128, 3, 64, 64)


def make_workload(
    name: str, dtype: torch.dtype = torch.float32, seed: int = 0, requires_grad: bool = False
) -> list[Tensor]:
    """Fresh tensors of workload ``name`` filled with N(0, 0.02^2) (DCGAN's init scale)."""
    if name not in SHAPES:
        raise ValueError(f"unknown workload {name!r}; choose one of {', '.join(SHAPES)}")
    g = torch.Generator().manual_seed(seed)
    out = []
    for shape in SHAPES[name]:
        t = torch.randn(shape, generator=g, dtype=torch.float32).mul_(0.02).to(dtype)
        out.append(t.requires_grad_(requires_grad))
    return out


def workload_bytes(tensors: list[Tensor]) -> int:
    """Bytes one read of every tensor moves."""
    return sum(t.numel() * t.element_size() for t in tensors)


def make_image_batch(
    shape: tuple[int, int, int, int] = IMAGE_SHAPE, seed: int = 0, requires_grad: bool = False
) -> tuple[Tensor, Tensor]:
    """``(images, targets)``: float32 batches in [-1, 1] (a tanh generator's range)."""
    if len(shape) != 4 or any(int(d) <= 0 for d in shape):
        raise ValueError(f"'shape' must be (batch, channels, height, width) of positive sizes, got {shape}")
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g).mul_(2).sub_(1)
    y = torch.rand(shape, generator=g).mul_(2).sub_(1)
    return x.requires_grad_(requires_grad), y
