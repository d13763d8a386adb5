"""Image-space losses, forward + backward, normreg's fused kernels beside torch eager.

Groups ``<loss>-fwd-bwd/<batch>`` for the image batches in ``IMAGE_SHAPES``; every
benchmark first asserts that the two implementations agree (value and gradient), then
times one forward and one backward (the gradient w.r.t. ``pred`` only, as for a
generator's output). ``extra_info`` carries GB/s of the bytes the fused version moves.

    python -m pytest benchmarks/bench_losses.py --benchmark-columns=min,median --benchmark-group-by=group
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import report

from normreg import losses as L

# N x C x H x W image batches: DCGAN-size batches and a few high-resolution images.
IMAGE_SHAPES: dict[str, tuple[int, int, int, int]] = {
    "32x3x64x64": (32, 3, 64, 64),
    "64x3x64x64": (64, 3, 64, 64),
    "16x3x256x256": (16, 3, 256, 256),
}
IMPLS = ["normreg", "torch-eager"]


def make_images(name: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, target) float32 batches of shape ``IMAGE_SHAPES[name]``, values in [-1, 1] like tanh outputs."""
    g = torch.Generator().manual_seed(seed)
    shape = IMAGE_SHAPES[name]
    pred = (torch.rand(shape, generator=g) * 2 - 1).requires_grad_(True)
    target = torch.rand(shape, generator=g) * 2 - 1
    return pred, target


@pytest.fixture(params=list(IMAGE_SHAPES))
def images(request):
    return request.param, *make_images(request.param)


def _tv_torch(x: torch.Tensor) -> torch.Tensor:
    return torch.diff(x, dim=-1).abs().sum() + torch.diff(x, dim=-2).abs().sum()


def _tv_iso_torch(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    dx = F.pad(torch.diff(x, dim=-1), (0, 1))
    dy = F.pad(torch.diff(x, dim=-2), (0, 0, 0, 1))
    return torch.sqrt(dx * dx + dy * dy + eps).sum()


CASES = {
    # name: (normreg fn(pred, target), torch fn(pred, target), tensors read+written by the fused fwd+bwd)
    # the losses: one pass reads pred and target and writes the gradient; the backward adds nothing
    "l1-loss": (lambda p, t: L.l1_loss(p, t), lambda p, t: F.l1_loss(p, t), 3),
    "mse-loss": (lambda p, t: L.mse_loss(p, t), lambda p, t: F.mse_loss(p, t), 3),
    "tv": (lambda p, t: L.total_variation(p), lambda p, t: _tv_torch(p), 3),
    "tv-isotropic": (lambda p, t: L.total_variation(p, kind="isotropic"), lambda p, t: _tv_iso_torch(p), 3),
}


def _fwd_bwd(fn, pred, target):
    (g,) = torch.autograd.grad(fn(pred, target), [pred])
    return g


def _run_case(benchmark, bandwidth, case, impl, images):
    name, pred, target = images
    ours, theirs, tensors = CASES[case]
    benchmark.group = f"{case}-fwd-bwd/{name}"
    # agreement before timing
    v_ours, v_theirs = ours(pred, target), theirs(pred, target)
    torch.testing.assert_close(v_ours.double(), v_theirs.double(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        _fwd_bwd(ours, pred, target), _fwd_bwd(theirs, pred, target), rtol=1e-4, atol=1e-5
    )
    fn = ours if impl == "normreg" else theirs
    benchmark(_fwd_bwd, fn, pred, target)
    report(benchmark, tensors * pred.numel() * pred.element_size(), bandwidth, "rw")


@pytest.mark.parametrize("impl", IMPLS)
def test_l1_loss_fwd_bwd(benchmark, bandwidth, impl, images):
    _run_case(benchmark, bandwidth, "l1-loss", impl, images)


@pytest.mark.parametrize("impl", IMPLS)
def test_mse_loss_fwd_bwd(benchmark, bandwidth, impl, images):
    _run_case(benchmark, bandwidth, "mse-loss", impl, images)


@pytest.mark.parametrize("impl", IMPLS)
def test_tv_fwd_bwd(benchmark, bandwidth, impl, images):
    _run_case(benchmark, bandwidth, "tv", impl, images)


@pytest.mark.parametrize("impl", IMPLS)
def test_tv_isotropic_fwd_bwd(benchmark, bandwidth, impl, images):
    _run_case(benchmark, bandwidth, "tv-isotropic", impl, images)
