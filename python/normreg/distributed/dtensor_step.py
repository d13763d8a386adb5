"""The optimizer step of a normreg optimizer whose param groups hold DTensors (FSDP2): the
inner step on each DTensor's local tensor, and over the mesh the parts that need the whole
tensor (see :func:`dtensor_step`). The penalty calls on DTensors are in :mod:`.dtensor`."""

from __future__ import annotations

import inspect

import torch
import torch.distributed as dist
from torch import Tensor

from .._bridge import tensor_list
from ..prox import ProxStats, _check_plan_params
from ..prox import _plan as prox_plan
from ._dtensor_parts import _as_dtensor, _at, _dt_parts, _Part
from ._norms import _comm_device
from .dtensor import dtensor_add_grad_, dtensor_prox_


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
