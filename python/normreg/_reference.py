"""Pure-torch implementation of every normreg op, with the kernels' semantics.

Two jobs: the fallback for tensors the kernels do not take (CUDA and other devices), and
the oracle of the tests. It is written for clarity, not speed: float64 arithmetic, plain
torch expressions, autograd-differentiable (so double backward works through it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "group_shape",
    "penalty_value",
    "penalty_grad",
    "group_norms",
    "group_value",
    "group_grad",
]


def _acc(t: Tensor) -> Tensor:
    """Accumulation copy: float64 where the device has it."""
    return t.to(torch.float32 if t.device.type == "mps" else torch.float64)


def _per_tensor(s: float | Sequence[float], n: int) -> list[float]:
    return [float(s)] * n if isinstance(s, (int, float)) else [float(v) for v in s]


def _tensor_value(kind: str, w: Tensor, s1: float, s2: float) -> Tensor:
    x = _acc(w).reshape(-1)
    if kind == "l1":
        return s1 * x.abs().sum()
    if kind == "squared_l2":
        return 0.5 * s2 * (x * x).sum()
    if kind == "elastic_net":
        return s1 * x.abs().sum() + 0.5 * s2 * (x * x).sum()
    if kind == "l2_norm":
        return s1 * torch.linalg.vector_norm(x) if x.numel() else x.new_zeros(())
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


def penalty_grad(kind: str, tensors: Sequence[Tensor], s1=0.0, s2=0.0, dtype: torch.dtype | None = None) -> list[Tensor]:
    """Gradient of the penalty per tensor, in ``dtype`` (default: each tensor's, rounded once)."""
    if kind == "l0":
        raise ValueError("penalty_grad: L0 has no gradient; use its proximal step (prox_) instead")
    n = len(tensors)
    a, b = _per_tensor(s1, n), _per_tensor(s2, n)
    out = []
    for w, x, y in zip(tensors, a, b):
        v = _acc(w)
        sign = torch.where(torch.isnan(v), v, torch.sign(v))
        if kind == "l1":
            g = x * sign
        elif kind == "squared_l2":
            g = y * v
        elif kind == "elastic_net":
            g = x * sign + y * v
        elif kind == "l2_norm":
            norm = torch.linalg.vector_norm(v) if v.numel() else v.new_zeros(())
            g = torch.where(norm > 0, x * v / torch.where(norm > 0, norm, 1.0), v * 0.0) if not torch.isnan(norm) else v * norm
        elif kind == "linf":
            g = torch.zeros_like(v)
            if v.numel():
                if torch.isnan(v).any():
                    g = torch.full_like(v, float("nan"))
                else:
                    flat = v.reshape(-1)
                    k = int(torch.argmax(flat.abs()))
                    g.view(-1)[k] = x * torch.sign(flat[k])
        else:
            raise ValueError(f"unknown penalty kind {kind!r}")
        out.append(g.to(dtype or w.dtype))
    return out


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
    return torch.sqrt((x * x).sum(dim=(0, 2)))


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
        norms = torch.sqrt((v * v).sum(dim=(0, 2)))
        coef = torch.where(norms > 0, x / torch.where(norms > 0, norms, 1.0), norms * 0.0)
        out.append((v * coef.view(1, groups, 1)).reshape(w.shape).to(dtype or w.dtype))
    return out
