"""The argument checks of the proximal steps, all made before any write: strengths and
bounds (one number or one per tensor), the params (in place, writable), per-element
weights, the groups along a dim. The functions that use them are in :mod:`._operators` and
:mod:`._penalty`; :mod:`._runners` then calls the kernels."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from .. import _ops
from .. import _reference as ref
from .._bridge import TensorList, check_strength, check_writable, paired, tensor_list

Params = Tensor | Iterable[Tensor] | torch.nn.Module
Strength = float | Sequence[float]


@contextlib.contextmanager
def _named(fn: str):
    """Prefix TypeError / ValueError messages with the function's name."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        msg = str(exc)
        if msg.startswith(fn + ":"):
            raise
        raise type(exc)(f"{fn}: {msg}") from None


def _strengths(value, arg: str, n: int, *, positive: bool = False) -> list[float]:
    """One number (broadcast) or one per tensor; finite and >= 0 (> 0 if ``positive``)."""
    if isinstance(value, (list, tuple)) or (isinstance(value, Tensor) and value.dim() == 1):
        vals = list(value.tolist() if isinstance(value, Tensor) else value)
        if len(vals) != n:
            raise ValueError(
                f"'{arg}' has {len(vals)} values for {n} tensors; give one number or one per tensor"
            )
        out = [check_strength(v, f"{arg}[{i}]") for i, v in enumerate(vals)]
    else:
        out = [check_strength(value, arg)]
    if positive:
        for i, v in enumerate(out):
            if v <= 0:
                name = arg if len(out) == 1 else f"{arg}[{i}]"
                raise ValueError(f"'{name}' must be > 0, got {v}")
    return out


def _bounds(value, arg: str, n: int, default: float) -> list[float]:
    if value is None:
        return [default]
    vals = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(vals) not in (1, n):
        raise ValueError(f"'{arg}' has {len(vals)} values for {n} tensors; give one number or one per tensor")
    out = []
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"'{arg}' must be a real number or None, got {type(v).__name__}")
        if v != v:
            raise ValueError(f"'{arg}' must not be NaN")
        out.append(float(v))
    return out


def _params(params: Params) -> TensorList:
    tl = tensor_list(params, "params", inplace=True, direct=_ops.direct_ok())
    check_writable(tl.tensors)
    return tl


def _weights(tl: TensorList, weights) -> TensorList | None:
    if weights is None:
        return None
    ws = [weights] if isinstance(weights, Tensor) else list(weights)
    if len(ws) != len(tl.tensors):
        raise ValueError(f"'weights' must have one tensor per param: got {len(ws)} for {len(tl.tensors)}")
    conv = []
    for i, (p, u) in enumerate(zip(tl.tensors, ws)):
        if not isinstance(u, Tensor):
            raise TypeError(f"'weights'[{i}] must be a torch.Tensor, got {type(u).__name__}")
        if u.shape != p.shape:
            raise ValueError(
                f"'weights'[{i}] has shape {tuple(u.shape)} but its param has shape {tuple(p.shape)}; they must match"
            )
        if not u.is_floating_point():
            raise TypeError(f"'weights'[{i}] must be a floating-point tensor, got {u.dtype}")
        u = u.detach().to(device=p.device, dtype=p.dtype).contiguous()
        if not bool(torch.all(u >= 0)) or not bool(torch.all(torch.isfinite(u))):
            raise ValueError(f"'weights'[{i}] must be finite and >= 0 everywhere")
        conv.append(u)
    return paired(tl, conv, "weights", inplace=False)


def _group_shapes(tensors: Sequence[Tensor], dim) -> tuple[list[int], list[int], list[int]]:
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"'dim' must be an int, got {type(dim).__name__}")
    outer, groups, inner = [], [], []
    for i, t in enumerate(tensors):
        nd = t.dim()
        if not -max(nd, 1) <= dim < max(nd, 1):
            raise ValueError(
                f"'dim'={dim} is out of range for 'params'[{i}] with shape {tuple(t.shape)}; pick a dim "
                "every tensor has, or leave such tensors (e.g. biases) out"
            )
        o, g, n = ref.group_shape(tuple(t.shape), dim)
        outer.append(o)
        groups.append(g)
        inner.append(n)
    return outer, groups, inner


def _mul(step: float, ls: list[float]) -> list[float]:
    return [step * v for v in ls]


def _full(v: list[float], tl: TensorList) -> list[float]:
    return v * len(tl.tensors) if len(v) == 1 else v
