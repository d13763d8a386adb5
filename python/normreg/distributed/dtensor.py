"""DTensor parameters (FSDP2 ``fully_shard``, ``distribute_tensor``): the local tensors
through the sharded machinery over the process group of their Shard mesh dim, and the
optimizer step on them."""

from __future__ import annotations

import inspect
from typing import NamedTuple

import torch
import torch.distributed as dist
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
from ..prox import ProxStats, _check_plan_params
from ..prox import _plan as prox_plan
from ._norms import _comm_device, _Geo
from ._terms import _Additive, _plan
from .sharded import _prox_shards, _value_dtype


class _Part(NamedTuple):
    """The tensors of one call that share a process group (None: fully replicated)."""

    pg: object
    idx: list[int]  # positions in the call's list
    local: list[Tensor]  # their local tensors
    geo: list[_Geo]


def _no_pg(process_group, what: str) -> None:
    if process_group is not None:
        raise ValueError(
            f"'process_group' was given but 'params' are DTensors: a DTensor's device mesh says where its "
            f"shards live, so {what} combines them over the mesh by itself. Pass process_group=None, or pass "
            "plain local shards (not DTensors) with process_group"
        )


def _at(arg: str, i: int) -> str:
    """``'params'[3]`` for an argument, ``param_groups[0]['params'][3]`` for a path."""
    return f"{arg}[{i}]" if "[" in arg else f"'{arg}'[{i}]"


def _dt_parts(tensors: list, arg: str = "params") -> list[_Part]:
    """Check the DTensors of one call and split them into parts by process group."""
    from torch.distributed.tensor import DTensor, Shard

    first = next(i for i, t in enumerate(tensors) if isinstance(t, DTensor))
    parts: dict[object, _Part] = {}
    for i, p in enumerate(tensors):
        if not isinstance(p, DTensor):
            what = type(p).__name__ if not isinstance(p, Tensor) else "a regular (non-DTensor) tensor"
            raise TypeError(
                f"{_at(arg, i)} is {what} but {_at(arg, first)} is a DTensor: one call takes DTensors only. "
                "Distribute every tensor (e.g. fully_shard the whole model), or pass the regular tensors in "
                "a separate call"
            )
        mesh, placements = p.device_mesh, tuple(p.placements)
        if mesh.get_coordinate() is None:
            raise ValueError(f"{_at(arg, i)}: this rank is not part of the DTensor's device mesh")
        sharded = []
        for m, q in enumerate(placements):
            if q.is_replicate():
                continue
            if type(q) is not Shard:
                raise ValueError(
                    f"{_at(arg, i)} has placement {q} on mesh dim {m}; normreg takes DTensors whose placements "
                    "are Shard(d) or Replicate() (redistribute a Partial DTensor first, e.g. "
                    "t.redistribute(placements=[Replicate()]))"
                )
            sharded.append((m, q.dim + p.dim() if q.dim < 0 else q.dim))
        if len(sharded) > 1:
            raise ValueError(
                f"{_at(arg, i)} is sharded over {len(sharded)} mesh dims (placements {placements}); normreg "
                "takes DTensors sharded over at most one mesh dim (FSDP2, HSDP, 1-D tensor parallel). "
                "Redistribute it to a single Shard placement first"
            )
        with torch.no_grad():
            local = p.to_local()
        if not sharded:
            key, g = None, _Geo(0, tuple(p.shape), 0)
        else:
            m, d = sharded[0]
            n, w = p.shape[d], mesh.size(m)
            r = mesh.get_local_rank(m)
            chunk = -(-n // w) if n else 0
            offset = min(r * chunk, n)
            if tuple(local.shape[:d]) + tuple(local.shape[d + 1 :]) != tuple(p.shape[:d]) + tuple(
                p.shape[d + 1 :]
            ) or local.shape[d] != max(min(chunk, n - offset), 0):
                raise ValueError(
                    f"{_at(arg, i)}: its local tensor of shape {tuple(local.shape)} is not the even chunk "
                    f"of Shard({d}) of shape {tuple(p.shape)} that normreg expects (a padded or strided layout); "
                    "redistribute it"
                )
            pg = mesh.get_group(m)
            if dist.get_rank(pg) != r:
                raise ValueError(
                    f"{_at(arg, i)}: the mesh's process group does not rank its members in mesh order"
                )
            key, g = pg, _Geo(d, tuple(p.shape), offset)
        part = parts.get(key)
        if part is None:
            part = parts[key] = _Part(key, [], [], [])
        part.idx.append(i)
        part.local.append(local)
        part.geo.append(g)
    return list(parts.values())


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


def _as_dtensor(local: Tensor, like) -> Tensor:
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(
        local, like.device_mesh, like.placements, run_check=False, shape=like.shape, stride=like.stride()
    )


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


def _check_dt_grads(params: list, arg: str) -> None:
    from torch.distributed.tensor import DTensor

    for i, p in enumerate(params):
        g = p.grad
        if g is None:
            continue
        if (
            not isinstance(g, DTensor)
            or g.device_mesh != p.device_mesh
            or tuple(g.placements) != tuple(p.placements)
        ):
            raise ValueError(
                f"{_at(arg, i)} is a DTensor with placements {tuple(p.placements)} but its .grad is "
                f"{type(g).__name__}{'' if not isinstance(g, DTensor) else ' ' + str(tuple(g.placements))}; "
                "the gradient of a DTensor param must be a DTensor with its placements"
            )


def _global_zeros(parts: list[_Part], n: int) -> tuple[list[int], int]:
    """Exact zeros per logical tensor and the logical numel, summed over each part's group."""
    zeros, numel = [0] * n, 0
    for part in parts:
        counts = [int((t == 0).sum()) for t in part.local] + [t.numel() for t in part.local]
        if part.pg is not None:
            dev = _comm_device(part.pg, part.local)
            red = torch.tensor(counts, dtype=torch.float64, device=dev)
            dist.all_reduce(red, group=part.pg)
            counts = [int(v) for v in red.tolist()]
        k = len(part.local)
        for i, z in zip(part.idx, counts[:k], strict=True):
            zeros[i] = z
        numel += sum(counts[k:])
    return zeros, numel


def dtensor_step(opt, closure=None):
    """``step()`` of a normreg optimizer whose param groups hold DTensors (FSDP2).

    Every update is elementwise, so each DTensor's local tensor goes through the optimizer's
    own step (the state is kept per DTensor param, as DTensors with its placements). The
    parts that need the whole tensor run over the mesh instead: the proximal step of
    GroupLasso / L2Norm / Linf (and sparse group lasso) on sharded params, their gradient
    with ``penalty_mode="grad"``, and the zero counts of ``last_stats`` / ``group_stats``
    (global, the same on every rank, so a SparsityController stays in step across ranks).
    """
    from torch.distributed.tensor import DTensor

    loss = None
    if closure is not None:
        with torch.enable_grad():
            loss = closure()
    factor = opt.penalty_factor()
    jobs = []  # per group: (group, params with grad, parts, penalty, inner penalty, deferred)
    for gi, group in enumerate(opt.param_groups):  # every check before any tensor is touched
        ps = list(group["params"])
        dts = [isinstance(p, DTensor) for p in ps]
        if not any(dts):
            jobs.append(None)
            continue
        if not all(dts):
            i = dts.index(False)
            raise TypeError(
                f"{type(opt).__name__}: a param group holds DTensors and regular tensors (param {i}); put the "
                "regular tensors into a group of their own (or distribute them too)"
            )
        arg = f"param_groups[{gi}]['params']"
        _dt_parts(ps, arg)  # placements, named by the position in the group
        _check_dt_grads(ps, arg)
        live = [p for p in ps if p.grad is not None]
        parts = _dt_parts(live) if live else []
        penalty = group["penalty"]
        if penalty is not None and factor != 1.0:
            penalty = penalty.scaled(factor)
        sharded = any(part.pg is not None for part in parts)
        defer = None
        if penalty is not None and sharded:
            if group.get("penalty_mode", "prox") == "grad":
                defer = None if penalty.affine else "grad"
            elif not prox_plan(penalty).elementwise:
                defer = "prox"
            if defer == "prox":
                tl = tensor_list([t for part in parts for t in part.local], "params", inplace=True)
                _check_plan_params(prox_plan(penalty), tl)
        jobs.append((group, live, parts, penalty, None if defer else penalty, defer))

    sched = opt.penalty_schedule
    raw_step = inspect.unwrap(type(opt).step)  # without torch's step hooks: they ran around this call
    restore = []  # (group, params, penalty)
    swapped = []  # (param, local)
    try:
        for group, job in zip(opt.param_groups, jobs, strict=True):
            if job is None:  # no DTensor: the inner step runs it as it is, with the scaled penalty
                restore.append((group, group["params"], group["penalty"]))
                if group["penalty"] is not None and factor != 1.0:
                    group["penalty"] = group["penalty"].scaled(factor)
                continue
            group, live, parts, penalty, inner, defer = job
            grads = {}
            if defer == "grad":  # the gradient of the global penalty into copies of the grads
                originals = [p.grad for p in live]
                try:
                    for p in live:
                        p.grad = p.grad.detach().clone()
                    dtensor_add_grad_(penalty, live)
                    grads = {id(p): p.grad.to_local() for p in live}
                finally:
                    for p, g in zip(live, originals, strict=True):
                        p.grad = g
            restore.append((group, group["params"], group["penalty"]))
            with torch.no_grad():
                locals_ = [p.to_local() for p in group["params"]]
            for p, loc in zip(group["params"], locals_, strict=True):
                loc.grad = grads.get(id(p), p.grad.to_local() if p.grad is not None else None)
                swapped.append((p, loc))
                st = opt.state.pop(p, None)
                if st is not None:
                    opt.state[loc] = {k: v.to_local() if isinstance(v, DTensor) else v for k, v in st.items()}
            group["params"] = locals_
            group["penalty"] = inner
        opt.penalty_schedule = None
        with torch.no_grad():
            raw_step(opt)
        stats = list(opt.group_stats)
        with torch.no_grad():
            for gi, job in enumerate(jobs):
                if job is None:
                    continue
                group, live, parts, penalty, inner, defer = job
                if penalty is None or not live:
                    stats[gi] = None
                    continue
                if defer == "prox":  # on the DTensors (their local tensors are the ones just updated)
                    dtensor_prox_(penalty, live, float(group["lr"]))
                zeros, numel = _global_zeros(parts, len(live))
                stats[gi] = ProxStats(zeros, sum(zeros), numel)
    finally:
        opt.penalty_schedule = sched
        for group, params, penalty in restore:
            group["params"] = params
            group["penalty"] = penalty
        for p, loc in swapped:
            loc.grad = None
            st = opt.state.pop(loc, None)
            if st is not None:
                opt.state[p] = {
                    k: _as_dtensor(v, p)
                    if isinstance(v, Tensor) and k != "step" and v.shape == loc.shape
                    else v
                    for k, v in st.items()
                }
    opt.group_stats = stats
    penalized = [s for s in stats if s is not None]
    opt.last_stats = ProxStats.combine(penalized) if penalized else None
    if opt.last_stats is not None and hasattr(sched, "update"):
        sched.update(opt.last_stats)
    return loss

