"""The penalties' values and gradients, per tensor and per group (GroupLasso)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._common import _acc, _exponent, _half_sq, _norm, _per_tensor, _pow2mul


def _tensor_value(kind: str, w: Tensor, s1: float, s2: float) -> Tensor:
    x = _acc(w).reshape(-1)
    if kind == "l1":
        return s1 * x.abs().sum()
    if kind == "squared_l2":
        return _half_sq(x, s2)
    if kind == "elastic_net":
        return s1 * x.abs().sum() + _half_sq(x, s2)
    if kind == "l2_norm":
        return s1 * _norm(x)
    if kind == "linf":
        if x.numel() == 0:
            return x.new_zeros(())
        if torch.isnan(x).any():
            return x.new_tensor(float("nan"))
        return s1 * x.abs().max()
    if kind == "l0":
        if torch.isnan(x).any():
            return x.new_tensor(float("nan"))
        return s1 * (x != 0).sum().to(x.dtype)
    raise ValueError(f"unknown penalty kind {kind!r}")


def penalty_value(kind: str, tensors: Sequence[Tensor], s1=0.0, s2=0.0) -> Tensor:
    """Value of the penalty as a float64 0-dim tensor (differentiable where the kind is)."""
    n = len(tensors)
    a, b = _per_tensor(s1, n), _per_tensor(s2, n)
    total = _acc(tensors[0]).new_zeros(())
    for w, x, y in zip(tensors, a, b):
        total = total + _tensor_value(kind, w, x, y)
    return total


def penalty_grad(
    kind: str, tensors: Sequence[Tensor], s1=0.0, s2=0.0, dtype: torch.dtype | None = None
) -> list[Tensor]:
    """Gradient of the penalty per tensor, in ``dtype`` (default: each tensor's, rounded once)."""
    if kind == "l0":
        raise ValueError("penalty_grad: L0 has no gradient; use its proximal step (prox_) instead")
    n = len(tensors)
    a, b = _per_tensor(s1, n), _per_tensor(s2, n)
    out = []
    for w, x, y in zip(tensors, a, b):
        v = _acc(w)
        sign = torch.where(torch.isnan(v), v, torch.sign(v))
        # b * w is left out for b = 0 (0 * inf would make an infinite weight's L1 gradient NaN)
        if kind == "l1":
            g = x * sign
        elif kind == "squared_l2":
            g = y * v if y != 0 else x * 0.0 * sign
        elif kind == "elastic_net":
            g = x * sign + y * v if y != 0 else x * sign
        elif kind == "l2_norm":
            g = _l2_norm_grad(v, x)
        elif kind == "linf":
            g = torch.zeros_like(v)
            if v.numel():
                if torch.isnan(v).any():
                    g = torch.full_like(v, float("nan"))
                else:
                    # the first arg max in memory order, as the kernels walk it (any dense layout:
                    # channels_last, transposed); zeros_like kept v's strides, so g walks alike
                    order = sorted(range(v.dim()), key=lambda d: -v.stride(d))
                    flat = v.permute(order).reshape(-1)
                    k = int(torch.argmax(flat.abs()))
                    g.permute(order).view(-1)[k] = x * torch.sign(flat[k])
        else:
            raise ValueError(f"unknown penalty kind {kind!r}")
        out.append(g.to(dtype or w.dtype))
    return out


def _l2_norm_grad(v: Tensor, s: float) -> Tensor:
    """s * v / ||v||: 0 for a zero norm, NaN for a NaN norm, and the limit for infinite
    elements (s * sign / sqrt(k) on each of the k of them, 0 elsewhere)."""
    norm = _norm(v)
    if torch.isnan(norm):
        return v * norm
    if not norm > 0 or s == 0:
        return v * 0.0
    inf = torch.isinf(v)
    if bool(inf.any()):
        return torch.where(inf, s * torch.sign(v) / math.sqrt(int(inf.sum())), 0.0 * v)
    e = _exponent(norm)  # v / ||v|| = (v 2^-e) / (||v|| 2^-e): no overflow for tiny norms
    return s * (_pow2mul(v, -e) / _pow2mul(norm, -e))


def group_shape(shape: Sequence[int], dim: int) -> tuple[int, int, int]:
    """(outer, groups, inner) of a tensor whose groups are the slices along ``dim``."""
    nd = len(shape)
    d = dim + nd if dim < 0 else dim
    if not 0 <= d < max(nd, 1):
        raise ValueError(f"'dim' is {dim} but the tensor has {nd} dims")
    if nd == 0:
        return 1, 1, 1
    outer = 1
    for s in shape[:d]:
        outer *= s
    inner = 1
    for s in shape[d + 1 :]:
        inner *= s
    return outer, shape[d], inner


def group_norms(w: Tensor, dim: int) -> Tensor:
    """L2 norm of each slice along ``dim`` (float64)."""
    outer, groups, inner = group_shape(w.shape, dim)
    x = _acc(w).reshape(outer, groups, inner)
    return _norm(x.transpose(0, 1).reshape(groups, outer * inner), dim=1)


def group_value(tensors: Sequence[Tensor], dim: int, s1=0.0) -> Tensor:
    a = _per_tensor(s1, len(tensors))
    total = _acc(tensors[0]).new_zeros(())
    for w, x in zip(tensors, a):
        total = total + x * group_norms(w, dim).sum()
    return total


def group_grad(tensors: Sequence[Tensor], dim: int, s1=0.0, dtype: torch.dtype | None = None) -> list[Tensor]:
    a = _per_tensor(s1, len(tensors))
    out = []
    for w, x in zip(tensors, a):
        outer, groups, inner = group_shape(w.shape, dim)
        v = _acc(w).reshape(outer, groups, inner)
        norms = group_norms(w, dim)
        coef = torch.where(norms > 0, x / torch.where(norms > 0, norms, 1.0), norms * 0.0)
        g = v * coef.view(1, groups, 1)
        big = (norms > 0) & torch.isfinite(norms) & ~torch.isfinite(coef)  # x / ||w|| overflows
        if bool(big.any()):  # x w / ||w|| = (w 2^-e) (x / (||w|| 2^-e))
            e = _exponent(norms)
            scaled = _pow2mul(v, -e.view(1, groups, 1)) * (x / _pow2mul(norms, -e)).view(1, groups, 1)
            g = torch.where(big.view(1, groups, 1), scaled, g)
        inf = torch.isinf(v)
        k = inf.sum(dim=(0, 2))  # infinite elements per group
        lim = (torch.isinf(norms) & (k > 0)).view(1, groups, 1)
        if bool(lim.any()):  # the limit of x w / ||w||: x sign(w) / sqrt(k) on the k infinities, 0 elsewhere
            r = x * torch.sign(v) / torch.sqrt(k.clamp_min(1).to(v.dtype)).view(1, groups, 1)
            g = torch.where(lim, torch.where(inf, r, 0.0), g)
        out.append(g.reshape(w.shape).to(dtype or w.dtype))
    return out
