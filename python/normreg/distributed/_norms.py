"""Numeric and geometric helpers of the sharded penalties: the process-group check, norms
from scaled partial sums of squares reduced over ranks, and where a tensor's groups live."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

_NAN = float("nan")


def check_process_group(process_group) -> dist.ProcessGroup:
    """Check that ``process_group`` can run collectives now; return it."""
    if not dist.is_available():
        raise ValueError(
            "'process_group' was given but this torch build has no torch.distributed; "
            "install a torch with distributed support or pass process_group=None"
        )
    if not dist.is_initialized():
        raise ValueError(
            "'process_group' was given but torch.distributed is not initialized; call "
            "torch.distributed.init_process_group(...) first (torchrun sets up the environment), "
            "or pass process_group=None"
        )
    if not isinstance(process_group, dist.ProcessGroup):
        raise TypeError(
            "'process_group' must be a torch.distributed.ProcessGroup (e.g. torch.distributed.group.WORLD "
            f"or one from torch.distributed.new_group), got {type(process_group).__name__}"
        )
    return process_group


def _comm_device(pg: dist.ProcessGroup, tensors: Sequence[Tensor]) -> torch.device:
    dev = tensors[0].device if tensors else torch.device("cpu")
    if dev.type == "cpu":
        return dev
    backend = str(dist.get_backend(pg))
    return dev if ("nccl" in backend or f"{dev.type}:" in backend) else torch.device("cpu")


def _acc(t: Tensor) -> Tensor:
    return t.to(torch.float32 if t.device.type == "mps" else torch.float64)


def _coef(strength: float, norm: float) -> float:
    """``strength / norm``, 0 for an all-zero tensor or group, NaN stays NaN."""
    if norm > 0.0:
        return strength / norm
    return 0.0 if norm == 0.0 else _NAN


# -- norms without overflow or underflow over the ranks ------------------------------------
#
# The kernels give plain float64 sums of squares. A float64 sum outside [2^-950, 2^950]
# (|w| ~ 1e200 overflows, ~1e-200 underflows) is redone locally scaled, as (sq, e) with the
# sum of squares sq * 2^(2e) (e the binary exponent of the max |w|, exact power-of-two
# scaling). Every sharded reduce of sums of squares carries one flag: when no rank needed a
# scaled sum, the plain all-reduced sums are the answer (no extra collective); otherwise
# the ranks all-reduce MAX of their exponents, then SUM of sq * 2^(2(e - E)) at the common
# exponent E, and the norm is 2^E sqrt(sum).

_SQ_LO, _SQ_HI = 2.0**-950, 2.0**950
_NO_EXP = -(2**20)  # the exponent of an all-zero sum (below every other)


def _pow2_mul(x: Tensor, e: Tensor) -> Tensor:
    """``x * 2^e`` exactly (but for underflow), for exponents past the double range."""
    half = torch.div(e, 2, rounding_mode="floor")
    return x * torch.exp2(half.to(x.dtype)) * torch.exp2((e - half).to(x.dtype))


def _scaled_rows(x: Tensor, q: list[float]) -> list[tuple[float, int]]:
    """Per group of ``x`` (shaped (outer, groups, inner)), its sum of squares as (sq, e):
    the plain sums ``q`` where they are exact, scaled sums where a float64 sum is not."""
    if x.dtype != torch.float64 or all(v != v or _SQ_LO <= v <= _SQ_HI for v in q):
        return [(v, 0) for v in q]
    x = x.detach().to(torch.float64)
    m = x.abs().amax(dim=(0, 2)).tolist() if x.numel() else [0.0] * len(q)
    exps = []
    for mk in m:
        if mk != mk or mk == math.inf:
            exps.append(0)
        elif mk == 0.0:
            exps.append(_NO_EXP)
        else:
            exps.append(math.frexp(mk)[1])
    e = torch.tensor([-k if k != _NO_EXP else 0 for k in exps], dtype=torch.int64, device=x.device)
    s = (_pow2_mul(x, e.view(1, -1, 1)) ** 2).sum(dim=(0, 2)).tolist()
    out = []
    for v, sk, k, mk in zip(q, s, exps, m, strict=True):
        if mk != mk or mk == math.inf:
            out.append((v, 0))  # NaN or inf: the plain sum says it
        elif k == _NO_EXP:
            out.append((0.0, _NO_EXP))
        else:
            out.append((sk, k))
    return out


def _norm_of(sq: float, e: int) -> float:
    return math.ldexp(math.sqrt(sq), e) if sq == sq else _NAN


def _needs_scale(rows: list[tuple[float, int]]) -> bool:
    return any(k not in (0, _NO_EXP) for _, k in rows)


def _reduce_norms(rows: list[tuple[float, int]], pg, dev) -> list[float]:
    """The norms of the rows' sums of squares summed over the ranks (two collectives)."""
    if not rows:
        return []
    ex = torch.tensor([float(k) for _, k in rows], dtype=torch.float64, device=dev)
    dist.all_reduce(ex, op=dist.ReduceOp.MAX, group=pg)
    big = [int(v) for v in ex.tolist()]
    red = torch.tensor(
        [math.ldexp(sq, 2 * (k - E)) if sq != 0.0 else 0.0 for (sq, k), E in zip(rows, big, strict=True)],
        dtype=torch.float64,
        device=dev,
    )
    dist.all_reduce(red, group=pg)
    return [_norm_of(v, E) for v, E in zip(red.tolist(), big, strict=True)]


def _scaled_grad(w: Tensor, norm: Tensor, strength: float) -> Tensor:
    """``strength * w / norm`` (norm broadcast to w) when ``strength / norm`` overflows:
    ``(w 2^-E) * (strength / (norm 2^-E))``, E the exponent of the norm."""
    e = torch.frexp(norm)[1].to(torch.int64)
    return _pow2_mul(w, -e) * (strength / _pow2_mul(norm, -e))


class _Geo(NamedTuple):
    """Where a local shard lies in its logical tensor (DTensor ``Shard(dim)``)."""

    dim: int  # the tensor dim split across the group's ranks
    shape: tuple[int, ...]  # the logical (global) shape
    offset: int  # where this rank's slice starts along ``dim``


def _spans(dim: int, tensors: Sequence[Tensor], geo: list[_Geo] | None) -> list[bool]:
    """Per tensor: do the groups of GroupLasso(dim) span the ranks (dim is not the shard dim)?"""
    out = []
    for i, t in enumerate(tensors):
        d = dim + t.dim() if dim < 0 else dim
        out.append(d != (0 if geo is None else geo[i].dim))
    return out


def _first_argmax_index(t: Tensor, g: _Geo) -> float:
    """Flat index, in the logical tensor, of the first max ``|w|`` of the local shard ``t``."""
    if t.numel() == 0:
        return -1.0
    flat = int(torch.argmax(t.detach().abs().reshape(-1)))  # torch returns the first arg max
    idx = [int(v) for v in torch.unravel_index(torch.tensor(flat), tuple(t.shape))]
    idx[g.dim] += g.offset
    out = 0
    for k, n in zip(idx, g.shape, strict=True):
        out = out * n + k
    return float(out)


# -- one penalty term's share of a sharded call ----------------------------------------
#
# local()  : local partial sums (all-reduced) and values to all-gather; additive terms also
#            add their (local) gradient here when the call is add_grad_.
# finish() : the global value, and the coefficients of the gradient, from the reduced stats.
# apply()  : grads (+)= scale * gradient, from the coefficients; no collective.


def _add_inf_limit(w: Tensor, g: Tensor, c: float) -> None:
    """g += copysign(c, w) on the infinite elements of w (the limit of c sqrt(k) w / ||w||)."""
    with torch.no_grad():
        inf = torch.isinf(w)
        g.add_(torch.where(inf, torch.sign(_acc(w)) * c, 0.0).to(g.dtype))
