"""DTensor parameters (FSDP2 ``fully_shard``, ``distribute_tensor``): the local tensors
through the sharded machinery over the process group of their Shard mesh dim: the value,
the gradient, ``add_grad_`` and the prox. The DTensors are checked and split into parts by
:mod:`._dtensor_parts`; the optimizer step on them is in :mod:`.dtensor_step`."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .. import prox
from .._bridge import (
    TensorList,
    as_tensors,
    check_strength,
    paired,
    tensor_list,
)
from ..penalties import L0, Sum
from ._collective import _plan
from ._dtensor_parts import _as_dtensor, _dt_parts, _no_pg, _Part
from ._terms import _Additive
from .sharded import _prox_shards, _value_dtype


class _LocalPlan:
    """A part whose tensors are fully replicated: every rank holds them whole, nothing is
    combined (the plain single-process penalty)."""

    def __init__(self, penalty, tl: TensorList) -> None:
        self.penalty, self.tl = penalty, tl
        penalty._check_params(tl)
        self.value = penalty._value(tl)

    def apply(self, grads: TensorList, scale: float, accumulate: bool) -> None:
        self.penalty._grad(self.tl, grads, scale, accumulate)


def _part_plan(penalty, part: _Part):
    if part.pg is None:
        tl = tensor_list(part.local)
        return _LocalPlan(penalty, tl), tl
    plan, tl, _ = _plan(penalty, part.local, part.pg, geo=part.geo)
    return plan, tl


class _DTensorValue(torch.autograd.Function):
    """The global value of a penalty of DTensors; backward gives each DTensor a DTensor
    gradient with its placements, from the kept global norms (no collective)."""

    @staticmethod
    def forward(call, *params):  # type: ignore[override]
        return torch.tensor(call["value"], dtype=call["dtype"], device=call["device"])

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.call = inputs[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        from torch.distributed.tensor import DTensor

        call = ctx.call
        if isinstance(grad_out, DTensor):
            grad_out = grad_out.full_tensor()
        scale = float(grad_out)
        needs = ctx.needs_input_grad[1:]
        outs: list[Tensor | None] = [None] * len(needs)
        for part, (plan, tl) in zip(call["parts"], call["plans"], strict=True):
            if not any(needs[i] for i in part.idx):
                continue
            loc = [torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in tl.tensors]
            plan.apply(paired(tl, loc, "grads"), scale, accumulate=False)
            for i, o in zip(part.idx, loc, strict=True):
                if needs[i]:
                    outs[i] = _as_dtensor(o, call["params"][i])
        return (None, *outs)


def dtensor_value(penalty, params, process_group=None) -> Tensor:
    """``penalty.value(dtensors)``: the value of the logical tensors, the same on every rank,
    differentiable: the gradient lands in each DTensor's ``.grad`` with its placements."""
    _no_pg(process_group, "value")
    tensors = as_tensors(params)
    parts = _dt_parts(tensors)
    plans = [_part_plan(penalty, part) for part in parts]
    call = {
        "value": sum(p.value for p, _ in plans),
        "dtype": _value_dtype(tensors),
        "device": parts[0].local[0].device,
        "parts": parts,
        "plans": plans,
        "params": tensors,
    }
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        if not isinstance(penalty, L0) and not (
            isinstance(penalty, Sum) and any(isinstance(t, L0) for t in penalty.terms)
        ):
            return _DTensorValue.apply(call, *tensors)
    return torch.tensor(call["value"], dtype=call["dtype"], device=call["device"])


def dtensor_grad(penalty, params) -> list[Tensor]:
    """``penalty.grad(dtensors)``: the gradient of the global value as new DTensors, each with
    its param's placements (no autograd graph)."""
    if isinstance(penalty, Sum) and any(isinstance(t, L0) for t in penalty.terms):
        raise ValueError("L0 has no gradient; use its proximal step (L0.prox_ or normreg.optim) instead")
    tensors = as_tensors(params)
    parts = _dt_parts(tensors)
    outs: list[Tensor | None] = [None] * len(tensors)
    for part in parts:
        plan, tl = _part_plan(penalty, part)
        loc = [torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in tl.tensors]
        plan.apply(paired(tl, loc, "grads"), 1.0, accumulate=False)
        for i, o in zip(part.idx, loc, strict=True):
            outs[i] = _as_dtensor(o, tensors[i])
    return outs


def _local_grads(
    params: list, locals_: list[Tensor], idx: list[int], *, check_only: bool = False
) -> list[Tensor]:
    """The local tensors of the params' DTensor ``.grad`` (checked; zeros allocated where
    missing, after every check), to write in place. ``idx``: the params' positions in the call."""
    from torch.distributed.tensor import DTensor

    for i, p, loc in zip(idx, params, locals_, strict=True):
        g = p.grad
        if g is None:
            continue
        if not isinstance(g, DTensor):
            raise TypeError(
                f"'params'[{i}] is a DTensor but its .grad is a {type(g).__name__}; a DTensor's gradient must "
                "be a DTensor with the same placements (set p.grad = None to let add_grad_ allocate it)"
            )
        if g.device_mesh != p.device_mesh or tuple(g.placements) != tuple(p.placements):
            raise ValueError(
                f"'params'[{i}].grad has placements {tuple(g.placements)} but its param has "
                f"{tuple(p.placements)}; redistribute the grad to the param's placements first"
            )
        gl = g.to_local()
        if gl.shape != loc.shape or gl.dtype != loc.dtype:
            raise ValueError(
                f"'params'[{i}].grad: its local tensor {tuple(gl.shape)} {gl.dtype} does not match the param's "
                f"{tuple(loc.shape)} {loc.dtype}"
            )
        if not gl.is_contiguous():
            raise ValueError(
                f"'params'[{i}].grad: its local tensor is not contiguous; make it contiguous first"
            )
    if check_only:
        return []
    out = []
    with torch.no_grad():
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            out.append(p.grad.to_local())
    return out


def dtensor_add_grad_(penalty, params, process_group=None) -> float:
    """``penalty.add_grad_(dtensors)``: add the gradient of the global value into each
    DTensor's ``.grad`` (its local tensor, in place); return the global value."""
    _no_pg(process_group, "add_grad_")
    if isinstance(penalty, L0) or (
        isinstance(penalty, Sum) and any(isinstance(t, L0) for t in penalty.terms)
    ):
        raise ValueError("L0 has no gradient; use its proximal step (L0.prox_ or normreg.optim) instead")
    tensors = [t for t in as_tensors(params) if t.requires_grad]  # frozen: skipped, as without DTensors
    if not tensors:
        return 0.0
    parts = _dt_parts(tensors)
    # every check before the first part writes: grads, and the penalty's shape checks (GroupLasso dim)
    everything = [t for part in parts for t in part.local]
    order = [i for part in parts for i in part.idx]
    _local_grads([tensors[i] for i in order], everything, order, check_only=True)
    penalty._check_params(tensor_list(everything))
    total = 0.0
    for part in parts:
        mine = [tensors[i] for i in part.idx]
        if part.pg is None:
            tl = tensor_list(part.local)
            penalty._check_params(tl)
            gl = paired(tl, _local_grads(mine, part.local, part.idx), "grads")
            total += penalty._grad(tl, gl, 1.0, accumulate=True)
            continue
        plan, _tl, grads = _plan(
            penalty,
            part.local,
            part.pg,
            for_grad=True,
            geo=part.geo,
            grads_of=lambda tl, mine=mine, idx=part.idx: paired(
                tl, _local_grads(mine, tl.tensors, idx), "grads"
            ),
        )
        for t in plan.terms:
            if not isinstance(t, _Additive):
                t.apply(grads, 1.0, True)
        total += plan.value
    return total


def dtensor_prox_(penalty, params, step: float, process_group=None):
    """``penalty.prox_(dtensors, step)``: the proximal step of the logical tensors, on each
    DTensor's local tensor in place; returns the global ``ProxStats`` (zeros per tensor)."""
    _no_pg(process_group, "prox_")
    tensors = as_tensors(params)
    parts = _dt_parts(tensors)

    with prox._named("prox_"):  # every check before any part moves
        plan = prox._plan(penalty)  # a sum without a closed-form prox raises here
        check_strength(step, "step")
        tl = tensor_list([t for part in parts for t in part.local], "params", inplace=True)
        prox._check_plan_params(plan, tl)
    zeros = [0] * len(tensors)
    numel = 0
    for part in parts:
        if part.pg is None:
            stats = prox.penalty_prox_(penalty, part.local, step)
        else:
            stats = _prox_shards(penalty, part.local, step, part.pg, part.geo)
        for i, z in zip(part.idx, stats.zeros, strict=True):
            zeros[i] = z
        numel += stats.numel
    return prox.ProxStats(zeros, sum(zeros), numel)
