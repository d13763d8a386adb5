"""Total variation of an NCHW batch, fused (value and gradient in one pass each)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import _ops
from .. import _reference as ref
from ._args import (
    _check_float,
    _check_reduction,
    _check_tensor,
)

_TV_KINDS = ("anisotropic", "isotropic")


# ---- total variation ------------------------------------------------------------------------


class _TotalVariation(torch.autograd.Function):
    """The direct path: the kernels' value forward, one gradient pass back (the same helpers
    as the operator normreg::total_variation, so both are bitwise equal)."""

    @staticmethod
    def forward(kind: str, reduction: str, eps: float, images: Tensor) -> Tensor:  # type: ignore[override]
        return _ops.k_tv_value(kind, reduction, eps, images)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        kind, reduction, eps, images = inputs
        ctx.kind, ctx.reduction, ctx.eps = kind, reduction, eps
        ctx.save_for_backward(images)

    @staticmethod
    def backward(ctx, grad_value: Tensor):  # type: ignore[override]
        (images,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: stay differentiable through the reference
            value = ref.total_variation(images, ctx.kind, ctx.reduction, ctx.eps).to(images.dtype)
            (g,) = torch.autograd.grad(value, [images], grad_value, create_graph=True)
            return None, None, None, g
        return None, None, None, _ops.k_tv_grad(ctx.kind, ctx.reduction, ctx.eps, images, grad_value)


def total_variation(
    images: Tensor,
    *,
    kind: str = "anisotropic",
    reduction: str = "sum",
    eps: float = 1e-8,
) -> Tensor:
    """Total variation of an NCHW batch, fused (value and gradient in one pass each).

    With forward differences ``dx(i,j) = x(i,j+1) - x(i,j)`` and
    ``dy(i,j) = x(i+1,j) - x(i,j)``, taken as 0 past the last column / row:

    * ``kind="anisotropic"``: ``sum |dx| + |dy|`` -- exactly
      ``torch.diff(x, dim=-1).abs().sum() + torch.diff(x, dim=-2).abs().sum()``;
      subgradient 0 where a difference is 0.
    * ``kind="isotropic"``: ``sum_{i,j} sqrt(dx^2 + dy^2 + eps)`` over all H*W pixels of
      every plane, so the value includes ``N*C*H*W*sqrt(eps)`` more than the exact TV (a
      constant: the gradient is unaffected by it). With ``eps=0`` a zero term has gradient 0.

    Parameters
    ----------
    images : Tensor
        4-D ``(N, C, H, W)``, float32, float64, bfloat16 or float16.
    kind : {"anisotropic", "isotropic"}, keyword-only
    reduction : {"sum", "mean", "none"}, keyword-only
        "sum" (default): the sources' ``sum`` over the whole batch. "mean": that sum divided
        by ``N*C*H*W`` (the number of pixels, not the number of differences). "none": one
        value per image, shape ``(N,)`` (summed over channels).
    eps : float, keyword-only
        Smoothing of the isotropic square root (ignored by "anisotropic"); finite, >= 0.

    Returns
    -------
    Tensor
        In ``images.dtype``: 0-dim, or ``(N,)`` for "none". Accumulated in float64.
    """
    fn = "total_variation"
    _check_tensor(images, "images", fn)
    _check_float(images, "images", fn)
    if images.dim() != 4:
        raise ValueError(
            f"{fn}: 'images' must be 4-D (N, C, H, W), got shape {tuple(images.shape)}; "
            "add batch / channel dims with images.view(1, 1, H, W) or .unsqueeze"
        )
    if kind not in _TV_KINDS:
        raise ValueError(f"{fn}: 'kind' must be 'anisotropic' or 'isotropic', got {kind!r}")
    _check_reduction(reduction, fn)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"{fn}: 'eps' must be a real number, got {type(eps).__name__}")
    eps = float(eps)
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"{fn}: 'eps' must be finite and >= 0, got {eps}")
    if _ops.functorch_active():  # torch.func: the differentiable reference (see _ops.functorch_active)
        return ref.total_variation(images, kind, reduction, eps).to(images.dtype)
    if not (images.is_cpu and _ops.direct_ok()):  # other devices, compile, meta, forced: the operator
        return torch.ops.normreg.total_variation(images, kind, reduction, eps)
    images = images.contiguous()
    if torch.is_grad_enabled() and images.requires_grad:
        return _TotalVariation.apply(kind, reduction, eps, images)
    return _ops.k_tv_value(kind, reduction, eps, images)
