"""The image-space losses: pointwise (L1 / squared L2) and total variation."""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import _acc

# ---- image-space losses -------------------------------------------------------------------


def pointwise_loss(
    kind: str,
    pred: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``[mask] [weight] loss(pred - target)`` reduced, in float64 (differentiable).

    ``loss`` is ``|d|`` (``kind="l1"``) or ``d**2`` (``kind="mse"``). ``mask`` and ``weight``
    broadcast to pred's shape. "mean" divides by the mask's sum over pred's shape when a mask
    is given, else by ``pred.numel()``; weights do not enter the denominator.
    """
    d = _acc(pred) - _acc(target)
    if kind == "l1":
        e = d.abs()
    elif kind == "mse":
        e = d * d
    else:
        raise ValueError(f"unknown loss kind {kind!r}")
    m = None
    if mask is not None:
        m = _acc(mask).expand_as(d)
        e = m * e
    if weight is not None:
        e = _acc(weight).expand_as(d) * e
    if reduction == "none":
        return e
    total = e.sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / (m.sum() if m is not None else d.new_tensor(float(d.numel())))
    raise ValueError(f"unknown reduction {reduction!r}")


def total_variation(
    images: Tensor, kind: str = "anisotropic", reduction: str = "sum", eps: float = 1e-8
) -> Tensor:
    """Total variation of an NCHW batch in float64 (differentiable).

    Forward differences, zero past the last row / column. anisotropic: ``sum |dx| + |dy|``;
    isotropic: ``sum sqrt(dx^2 + dy^2 + eps)`` over all N*C*H*W pixels (a zero term has
    gradient 0 when ``eps == 0``). "none": per-image values (N,); "mean": the sum divided by
    N*C*H*W.
    """
    x = _acc(images)
    dx = torch.diff(x, dim=-1)
    dy = torch.diff(x, dim=-2)
    if kind == "anisotropic":
        per = dx.abs().sum(dim=(1, 2, 3)) + dy.abs().sum(dim=(1, 2, 3))
    elif kind == "isotropic":
        n, c, h, w = x.shape
        dx = torch.cat([dx, x.new_zeros(n, c, h, min(w, 1))], dim=-1)
        dy = torch.cat([dy, x.new_zeros(n, c, min(h, 1), w)], dim=-2)
        q = dx * dx + dy * dy + eps
        nz = q != 0  # NaN counts as nonzero, so it propagates
        per = torch.where(nz, torch.where(nz, q, 1.0).sqrt(), 0.0).sum(dim=(1, 2, 3))
    else:
        raise ValueError(f"unknown total variation kind {kind!r}")
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    if reduction == "mean":
        return per.sum() / float(x.numel()) if x.numel() else per.sum() * float("nan")
    raise ValueError(f"unknown reduction {reduction!r}")


def total_variation_grad(images: Tensor, kind: str, reduction: str, eps: float, grad_value: Tensor) -> Tensor:
    """The gradient of :func:`total_variation` times ``grad_value`` (0-dim, or (N,) for
    "none"), in float64, without autograd (the formula autograd gives for it)."""
    x = _acc(images)
    dx = torch.diff(x, dim=-1)
    dy = torch.diff(x, dim=-2)
    if kind == "anisotropic":
        ux, uy = torch.sign(dx), torch.sign(dy)
    else:
        n, c, h, w = x.shape
        px = torch.cat([dx, x.new_zeros(n, c, h, min(w, 1))], dim=-1)
        py = torch.cat([dy, x.new_zeros(n, c, min(h, 1), w)], dim=-2)
        q = px * px + py * py + eps
        nz = q != 0
        r = torch.where(nz, q, 1.0).sqrt()
        ux = torch.where(nz, px / r, 0.0)[..., :, : w - 1]
        uy = torch.where(nz, py / r, 0.0)[..., : h - 1, :]
    g = torch.zeros_like(x)
    g[..., :, :-1] -= ux
    g[..., :, 1:] += ux
    g[..., :-1, :] -= uy
    g[..., 1:, :] += uy
    k = grad_value.to(x)
    if reduction == "none":
        return g * k.reshape(-1, 1, 1, 1)
    if reduction == "mean":
        k = k / float(x.numel())
    return g * k
