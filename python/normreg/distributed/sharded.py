"""Penalty value, gradient and prox of tensors sharded along dim 0 over a process group
(``penalty.value(shards, process_group=pg)`` and the like)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

from .. import prox
from .._bridge import (
    TensorList,
    check_strength,
    paired,
    tensor_list,
)
from .._loader import _C
from ..penalties import L0, Sum
from ._collective import _agree, _Plan, _plan
from ._norms import (
    _NAN,
    _acc,
    _comm_device,
    _Geo,
    _needs_scale,
    _norm_of,
    _reduce_norms,
    _scaled_rows,
    _spans,
    check_process_group,
)
from ._terms import _Additive


def _value_dtype(tensors: Sequence[Tensor]) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


class _ShardedValue(torch.autograd.Function):
    """The global value; backward applies the gradient from the kept global norms."""

    @staticmethod
    def forward(plan: _Plan, tl: TensorList, *params: Tensor) -> Tensor:  # type: ignore[override]
        return torch.tensor(plan.value, dtype=_value_dtype(params), device=params[0].device)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.plan, ctx.tl = inputs[0], inputs[1]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        tl: TensorList = ctx.tl
        needs = ctx.needs_input_grad[2:]
        outs = [torch.empty(p.shape, dtype=p.dtype, device=p.device) for p in tl.tensors]
        ctx.plan.apply(paired(tl, outs, "grads"), float(grad_out), accumulate=False)
        return (None, None, *[o if n else None for o, n in zip(outs, needs, strict=True)])


def sharded_value(penalty, params, process_group) -> Tensor:
    """``penalty.value(params, process_group=...)``: the global value on every rank.

    Differentiable: backward gives each rank the gradient of the global value with respect
    to its local shards (no collective in backward).
    """
    plan, tl, _ = _plan(penalty, params, process_group)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tl.tensors):
        return _ShardedValue.apply(plan, tl, *tl.tensors)
    return torch.tensor(plan.value, dtype=_value_dtype(tl.tensors), device=tl.tensors[0].device)


def sharded_add_grad_(penalty, params, process_group) -> float:
    """``penalty.add_grad_(params, process_group=...)``: add the gradient of the global
    value to each local shard's ``.grad``; return the global value (same on every rank).

    Frozen tensors (``requires_grad=False``) are skipped, as without a process group; every
    rank must then skip the same tensors.
    """
    if isinstance(penalty, L0) or (
        isinstance(penalty, Sum) and any(isinstance(t, L0) for t in penalty.terms)
    ):
        raise ValueError("L0 has no gradient; use its proximal step (L0.prox_ or normreg.optim) instead")
    plan, _tl, grads = _plan(penalty, params, process_group, for_grad=True)
    if plan is None:
        return 0.0
    for t in plan.terms:
        if not isinstance(t, _Additive):  # additive terms added theirs in the local pass
            t.apply(grads, 1.0, True)
    return plan.value


# -- proximal steps on sharded params ------------------------------------------------------


def _prox_plan(penalty):
    """The prox's normal form of ``penalty`` (l1, l2, l0, norm); raises for sums whose prox
    has no closed form, exactly as without a process group."""
    with prox._named("prox_"):
        return prox._plan(penalty)


def sharded_prox_(penalty, params, step: float, process_group):
    """``penalty.prox_(params, step, process_group=...)``: the proximal step of the logical
    tensors, applied to each rank's shards in place; returns the global ``ProxStats``.

    Elementwise proxes (L1, SquaredL2, ElasticNet, L0) are local. L2Norm and GroupLasso (also
    with an elastic-net part: ``d * max(1 - s/||soft(w, t)||, 0) * soft(w, t)``) soft-threshold
    locally, all-reduce the per-tensor / per-group sums of squares, then scale each tensor /
    group by its coefficient. Linf's prox depends on every element of the tensor (the
    threshold of a projection onto an L1 ball): each tensor is all-gathered, its prox computed
    on every rank, and each rank keeps its slice.
    """
    return _prox_shards(penalty, params, step, check_process_group(process_group))


def _prox_shards(penalty, params, step: float, pg, geo: list[_Geo] | None = None):
    rank, world = dist.get_rank(pg), dist.get_world_size(pg)
    err: BaseException | None = None
    tl: TensorList | None = None
    plan = shapes = spans = None
    n_sum = n_gather = 0
    try:
        plan = _prox_plan(penalty)
        step = check_strength(step, "step")
        tl = tensor_list(params, "params", inplace=True)
        kind = plan.norm[0] if plan.norm is not None else None
        if kind == "group":
            shapes = prox._group_shapes(tl.tensors, plan.norm[2])
            spans = _spans(plan.norm[2], tl.tensors, geo)
            n_sum = sum(g for g, s in zip(shapes[1], spans, strict=True) if s)
        elif kind == "l2_norm":
            n_sum = len(tl)
        elif kind == "linf":
            n_gather = len(tl)
    except (TypeError, ValueError) as exc:
        err = exc
    n = len(tl) if tl is not None else 0
    dev = _comm_device(pg, tl.tensors if tl is not None else [])
    _agree(pg, dev, rank, err is None, [float(n), float(n_sum), float(n_gather)])
    if err is not None:
        raise err
    if plan.norm is None:
        zeros = prox.penalty_prox_(penalty, tl.tensors, step).zeros
    elif plan.norm[0] == "linf":
        zeros = _linf_prox_sharded(tl, step * plan.norm[1], pg, dev, world, rank)
    else:
        zeros = _norm_prox_sharded(tl, plan, step, shapes, spans, pg, dev)
    counts = torch.tensor([*zeros, *(t.numel() for t in tl.tensors)], dtype=torch.float64, device=dev)
    dist.all_reduce(counts, group=pg)
    z = [int(v) for v in counts[:n].tolist()]
    return prox.ProxStats(z, sum(z), int(counts[n:].sum().item()))


def _norm_prox_sharded(tl: TensorList, plan, step: float, shapes, spans, pg, dev) -> list[int]:
    t, s, d = step * plan.l1, step * plan.norm[1], 1.0 / (1.0 + step * plan.l2)
    if t > 0:
        prox.soft_threshold_(tl.tensors, step, plan.l1)  # elementwise: exact on each shard

    def coef(norm: float) -> float:
        if norm != norm:
            return _NAN
        return d * max(1.0 - s / norm, 0.0) if norm > 0 else 0.0

    def norms(sq: list[float], rows: list[tuple[float, int]]) -> list[float]:
        """The global norms: plain all-reduced sums, or scaled ones when a rank needs them."""
        red = torch.tensor([*sq, float(_needs_scale(rows))], dtype=torch.float64, device=dev)
        dist.all_reduce(red, group=pg)
        out = red.tolist()
        if out.pop() > 0:
            return _reduce_norms(rows, pg, dev)
        return [math.sqrt(q) if q == q else _NAN for q in out]

    if shapes is None:  # L2Norm: one norm per tensor
        if tl.on_cpu:
            sq = list(_C.abs_sq_sums(tl.ptrs, tl.numels, tl.dtypes)[1])
        else:
            sq = [float((_acc(w) ** 2).sum()) for w in tl.tensors]
        rows = [_scaled_rows(w.reshape(1, 1, -1), [q])[0] for w, q in zip(tl.tensors, sq, strict=True)]
        c = [coef(q) for q in norms(sq, rows)]
        if tl.on_cpu:
            return list(_C.scale_per_tensor(tl.ptrs, tl.numels, tl.dtypes, c))
        with torch.no_grad():
            for w, ci in zip(tl.tensors, c, strict=True):
                w.copy_((_acc(w) * ci).to(w.dtype))
        return [int((w == 0).sum()) for w in tl.tensors]
    # GroupLasso: groups along the shard dim are local, the others span the ranks
    if tl.on_cpu:
        sq = [list(q) for q in _C.group_sq_sums(tl.ptrs, tl.numels, tl.dtypes, *shapes)]
    else:
        sq = [
            (_acc(w).reshape(o, g, i) ** 2).sum(dim=(0, 2)).tolist()
            for w, o, g, i in zip(tl.tensors, *shapes, strict=True)
        ]
    rows = [
        _scaled_rows(w.reshape(o, g, i), q) for w, o, g, i, q in zip(tl.tensors, *shapes, sq, strict=True)
    ]
    nrm = [[_norm_of(q, e) for q, e in r] for r in rows]  # the local groups' norms
    shared = [q for qs, sp in zip(sq, spans, strict=True) if sp for q in qs]
    if shared:
        flat, k = norms(shared, [x for r, sp in zip(rows, spans, strict=True) if sp for x in r]), 0
        for i, sp in enumerate(spans):
            if sp:
                nrm[i] = flat[k : k + len(sq[i])]
                k += len(sq[i])
    c = [[coef(q) for q in qs] for qs in nrm]
    if tl.on_cpu:
        return list(_C.group_scale_inplace(tl.ptrs, tl.numels, tl.dtypes, *shapes, c))
    with torch.no_grad():
        for w, o, g, i, ci in zip(tl.tensors, *shapes, c, strict=True):
            cw = torch.tensor(ci, dtype=torch.float64, device=w.device).view(1, g, 1)
            w.copy_((_acc(w).reshape(o, g, i) * cw).reshape(w.shape).to(w.dtype))
    return [int((w == 0).sum()) for w in tl.tensors]


def _linf_prox_sharded(tl: TensorList, s: float, pg, dev, world: int, rank: int) -> list[int]:
    """All-gather each logical tensor, take its prox on every rank, keep this rank's slice."""
    sizes = torch.tensor([t.numel() for t in tl.tensors], dtype=torch.float64, device=dev)
    all_sizes = [torch.empty_like(sizes) for _ in range(world)]
    dist.all_gather(all_sizes, sizes, group=pg)
    per_rank = [[int(v) for v in a.tolist()] for a in all_sizes]  # [rank][tensor]
    totals = [sum(r[i] for r in per_rank) for i in range(len(tl))]
    width = max(sum(r) for r in per_rank)
    zeros = []
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tl.tensors):
        by_dtype.setdefault(t.dtype, []).append(i)
    for dtype, idx in by_dtype.items():  # one all-gather per dtype: values travel bit-exact
        buf = torch.zeros(width, dtype=dtype, device=dev)
        off = 0
        for i in idx:
            m = tl.tensors[i].numel()
            buf[off : off + m] = tl.tensors[i].detach().reshape(-1).to(dev)
            off += m
        parts = [torch.empty_like(buf) for _ in range(world)]
        dist.all_gather(parts, buf, group=pg)
        fulls, starts = [], []
        for i in idx:
            pieces, start = [], 0
            for r in range(world):
                o = sum(per_rank[r][j] for j in idx[: idx.index(i)])
                pieces.append(parts[r][o : o + per_rank[r][i]])
                if r < rank:
                    start += per_rank[r][i]
            full = torch.cat(pieces).to(tl.tensors[i].device)
            assert full.numel() == totals[i]
            fulls.append(full)
            starts.append(start)
        prox.linf_prox_(fulls, 1.0, s)
        with torch.no_grad():
            for i, full, start in zip(idx, fulls, starts, strict=True):
                w = tl.tensors[i]
                w.copy_(full[start : start + w.numel()].view(w.shape))
    for w in tl.tensors:
        zeros.append(int((w == 0).sum()))
    return zeros


# -- DTensor parameters (FSDP2 ``fully_shard``, ``distribute_tensor``) ---------------------
#
# A DTensor's mesh says where its pieces live, so a penalty call on DTensors needs no
# process_group: each DTensor's local tensor goes through the kernels, and the partial
# norms are combined over the process group of its Shard mesh dim (a Replicate mesh dim
# holds copies: nothing is combined over it). Tensors are handled in parts, one per
# process group (fully replicated tensors: a local part, no collective); penalties are sums
# over tensors, so the parts add.
