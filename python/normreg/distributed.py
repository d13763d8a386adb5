"""Penalties over parameters sharded across processes (``torch.distributed``).

``penalty.value(shards, process_group=pg)``, ``penalty.add_grad_(shards, process_group=pg)`` and
``penalty.prox_(shards, step, process_group=pg)`` land here. Every rank passes its *local shards*; the call returns the value of the penalty
of the *logical* (unsharded) tensors on every rank, and gives each rank the gradient of
that global value with respect to its own shards.

Sharding layout
---------------
Tensor ``i`` of the list is one logical tensor; rank ``r`` holds the ``r``-th slice of it
along dim 0, and the logical tensor is ``torch.cat([shard_i on rank 0, on rank 1, ...])``.
This is the layout of FSDP2 / DTensor ``Shard(0)`` parameters and, for 1-D tensors, of the
flat shards of ZeRO / FSDP1 flat parameters. Every rank passes the same number of tensors in
the same order; a shard may be empty (0 rows). Penalties need, per kind:

* ``L1``, ``SquaredL2``, ``ElasticNet``, ``L0``: sums over elements, so the value is the
  all-reduced sum of the local values and the gradient is local. Any layout works.
* ``L2Norm``: the per-tensor sums of squares are all-reduced before ``l / ||w||`` is
  computed; any layout in which tensor ``i`` on every rank is a piece of logical tensor
  ``i`` works (flat shards included).
* ``GroupLasso(dim)``: groups are slices along ``dim`` of the logical tensor. When ``dim``
  is the shard dim (0, or ``-ndim``), every group lives on one rank and its norm is local.
  Otherwise every group spans all ranks: the per-group sums of squares are all-reduced
  (every rank must then hold the same number of groups, i.e. the same size along ``dim``)
  before the gradient coefficients ``l / ||w_g||`` are computed.
* ``Linf``: the per-tensor max ``|w|`` is all-gathered; the gradient goes to the first arg
  max of the logical tensor (the lowest rank holding the max, its first local arg max).
* ``Sum``: each term as above, with one all-reduce for all of them.

Collectives run in float64 on the process group's device (CPU for gloo, the tensors' CUDA
device for nccl). A call is collective: every rank of ``process_group`` must make it, with
the same penalty. The argument checks are collective too: when one rank's arguments are
bad, that rank raises its own error and every other rank raises a ``ValueError`` naming it,
instead of waiting forever. The backward of ``value`` needs no collective (the global norms
are kept from the forward); it is once-differentiable (no ``create_graph``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._bridge import TensorList, checked_grads, paired, tensor_list, trainable
from ._loader import _C

__all__ = ["sharded_value", "sharded_add_grad_", "sharded_prox_", "check_process_group"]

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


def _coef(strength: float, sq: float) -> float:
    """``strength / sqrt(sq)``, 0 for an all-zero tensor or group, NaN stays NaN."""
    norm = math.sqrt(sq) if sq == sq else _NAN
    if norm > 0.0:
        return strength / norm
    return 0.0 if norm == 0.0 else _NAN


# -- one penalty term's share of a sharded call ----------------------------------------
#
# local()  : local partial sums (all-reduced) and values to all-gather; additive terms also
#            add their (local) gradient here when the call is add_grad_.
# finish() : the global value, and the coefficients of the gradient, from the reduced stats.
# apply()  : grads (+)= scale * gradient, from the coefficients; no collective.


class _Term:
    n_sum = 0
    n_gather = 0

    def __init__(self, penalty, tl: TensorList) -> None:
        self.penalty = penalty
        self.tl = tl

    def local(self, grads: TensorList | None) -> tuple[list[float], list[float]]:
        raise NotImplementedError

    def finish(self, sums: list[float], gathered: list[list[float]], rank: int) -> float:
        raise NotImplementedError

    def apply(self, grads: TensorList, scale: float, accumulate: bool) -> None:
        raise NotImplementedError


class _Additive(_Term):
    """L1, SquaredL2, ElasticNet, L0: value = sum of local values; gradient local."""

    n_sum = 1

    def local(self, grads):
        if grads is not None:
            return [self.penalty._grad(self.tl, grads, 1.0, True)], []
        return [self.penalty._value(self.tl)], []

    def finish(self, sums, gathered, rank):
        return sums[0]

    def apply(self, grads, scale, accumulate):
        self.penalty._grad(self.tl, grads, scale, accumulate)


def _fill_nan(grads: TensorList, which: list[int]) -> None:
    with torch.no_grad():
        for i in which:
            grads.tensors[i].fill_(_NAN)


class _L2Norm(_Term):
    """Per-tensor sums of squares all-reduced; gradient ``l * w / ||w||`` with global norms."""

    def __init__(self, penalty, tl):
        super().__init__(penalty, tl)
        self.n_sum = len(tl)

    def local(self, grads):
        tl = self.tl
        if tl.on_cpu:
            return list(_C.abs_sq_sums(tl.ptrs, tl.numels, tl.dtypes)[1]), []
        return torch.stack([(_acc(t) ** 2).sum() for t in tl.tensors]).tolist(), []

    def finish(self, sums, gathered, rank):
        l = self.penalty.l  # noqa: E741
        self.coef = [_coef(l, q) for q in sums]
        return sum(l * math.sqrt(q) if q == q else _NAN for q in sums)

    def apply(self, grads, scale, accumulate):
        tl = self.tl
        nan = [i for i, c in enumerate(self.coef) if c != c]
        if tl.on_cpu:
            coef = [0.0 if c != c else c for c in self.coef]
            _C.penalty_grad(
                "squared_l2", tl.ptrs, tl.numels, tl.dtypes, grads.ptrs, [0.0], coef, scale, accumulate
            )
        else:
            with torch.no_grad():
                for w, g, c in zip(tl.tensors, grads.tensors, self.coef, strict=True):
                    d = (_acc(w) * (scale * c)).to(g.dtype)
                    g.add_(d) if accumulate else g.copy_(d)
        _fill_nan(grads, nan)


class _Group(_Term):
    """GroupLasso: groups on one rank (dim = shard dim) are local; groups that span ranks
    have their sums of squares all-reduced."""

    def __init__(self, penalty, tl):
        super().__init__(penalty, tl)
        self.shapes = penalty.shapes(tl.tensors)  # raises on a bad dim before any collective
        dims = [penalty.dim + t.dim() if penalty.dim < 0 else penalty.dim for t in tl.tensors]
        self.spans = [d != 0 for d in dims]  # True: the groups span the ranks
        self.n_sum = 1 + sum(g for g, s in zip(self.shapes[1], self.spans, strict=True) if s)

    def local(self, grads):
        tl = self.tl
        if tl.on_cpu:
            self.sq = [list(q) for q in _C.group_sq_sums(tl.ptrs, tl.numels, tl.dtypes, *self.shapes)]
        else:
            self.sq = []
            for t, o, g, n in zip(tl.tensors, *self.shapes, strict=True):
                x = _acc(t).reshape(o, g, n)
                self.sq.append((x * x).sum(dim=(0, 2)).tolist())
        l = self.penalty.l  # noqa: E741
        local_value = sum(
            l * sum(math.sqrt(q) for q in sq) for sq, s in zip(self.sq, self.spans, strict=True) if not s
        )
        shared = [q for sq, s in zip(self.sq, self.spans, strict=True) if s for q in sq]
        return [local_value, *shared], []

    def finish(self, sums, gathered, rank):
        l = self.penalty.l  # noqa: E741
        value, k = sums[0], 1
        for i, s in enumerate(self.spans):
            if s:
                g = len(self.sq[i])
                self.sq[i] = sums[k : k + g]
                k += g
                value += l * sum(math.sqrt(q) for q in self.sq[i])
        self.coef = [[_coef(l, q) for q in sq] for sq in self.sq]
        return value

    def apply(self, grads, scale, accumulate):
        tl = self.tl
        coef = [[scale * c for c in cs] for cs in self.coef]
        if tl.on_cpu:
            _C.group_apply_coef(tl.ptrs, tl.numels, tl.dtypes, grads.ptrs, *self.shapes, coef, accumulate)
            return
        with torch.no_grad():
            for w, g, o, G, n, c in zip(tl.tensors, grads.tensors, *self.shapes, coef, strict=True):
                d = _acc(w).reshape(o, G, n) * torch.tensor(c, dtype=torch.float64, device=w.device).view(
                    1, G, 1
                )
                d = d.reshape(w.shape).to(g.dtype)
                g.add_(d) if accumulate else g.copy_(d)


class _Linf(_Term):
    """Per-tensor max |w| all-gathered; the gradient goes to the first global arg max."""

    def __init__(self, penalty, tl):
        super().__init__(penalty, tl)
        self.n_gather = len(tl)

    def local(self, grads):
        tl = self.tl
        if tl.on_cpu:
            return [], list(_C.max_abs_per_tensor(tl.ptrs, tl.numels, tl.dtypes))
        return [], [float(_acc(t).abs().max()) if t.numel() else -1.0 for t in tl.tensors]

    def finish(self, sums, gathered, rank):
        l = self.penalty.l  # noqa: E741
        value = 0.0
        self.nan, self.mine = [], []
        for i in range(len(self.tl)):
            col = [row[i] for row in gathered]
            if any(m != m for m in col):
                value += _NAN
                self.nan.append(i)
                self.mine.append(False)
                continue
            top = max(col)
            value += l * max(top, 0.0)
            self.mine.append(top >= 0.0 and col.index(top) == rank)
        return value

    def apply(self, grads, scale, accumulate):
        tl, l = self.tl, self.penalty.l  # noqa: E741
        s1 = [l if m else 0.0 for m in self.mine]
        if tl.on_cpu:
            _C.penalty_grad("linf", tl.ptrs, tl.numels, tl.dtypes, grads.ptrs, s1, [0.0], scale, accumulate)
        else:
            from . import _reference as ref

            with torch.no_grad():
                for w, g, s in zip(tl.tensors, grads.tensors, s1, strict=True):
                    d = ref.penalty_grad("linf", [w], s)[0] * scale
                    g.add_(d) if accumulate else g.copy_(d)
        _fill_nan(grads, self.nan)


def _terms(penalty, tl: TensorList) -> list[_Term]:
    from .penalties import GroupLasso, Sum

    parts = penalty._parts() if isinstance(penalty, Sum) else [penalty]
    out: list[_Term] = []
    for p in parts:
        if isinstance(p, GroupLasso):
            out.append(_Group(p, tl))
        elif p.kind == "l2_norm":
            out.append(_L2Norm(p, tl))
        elif p.kind == "linf":
            out.append(_Linf(p, tl))
        elif p.kind in ("l1", "squared_l2", "elastic_net", "l0"):
            out.append(_Additive(p, tl))
        else:
            raise TypeError(f"'process_group': {type(p).__name__} has no sharded implementation")
    return out


# -- the collective part ---------------------------------------------------------------


class _Plan:
    """The reduced statistics of one sharded call: the global value and the coefficients."""

    def __init__(self, terms: list[_Term], value: float) -> None:
        self.terms = terms
        self.value = value

    def apply(self, grads: TensorList, scale: float, accumulate: bool) -> None:
        for i, t in enumerate(self.terms):
            t.apply(grads, scale, accumulate or i > 0)


def _agree(pg, dev, rank: int, ok: bool, sig: list[float]) -> None:
    """One collective: every rank learns whether all ranks passed their checks and agree
    on the shape of the exchange (number of tensors, of partial sums, of gathered values)."""
    vals = [0.0 if ok else 1.0, *sig]
    t = torch.tensor(vals + [-v for v in vals], dtype=torch.float64, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=pg)
    hi, lo = t[: len(vals)].tolist(), [-v for v in t[len(vals) :].tolist()]
    if not ok:
        return  # the caller re-raises its own error
    if hi[0] > 0:
        raise ValueError(
            "'process_group': another rank's arguments failed the checks (see its error); "
            "every rank must pass valid params to the same collective call"
        )
    if hi != lo:
        raise ValueError(
            "'process_group': the ranks disagree on the tensors: every rank must pass the same "
            "number of shards in the same order, with the same penalty, and for GroupLasso along a "
            f"dim other than 0 the same number of groups (this rank: {int(sig[0])} tensors)"
        )


def _plan(penalty, params, pg, *, for_grad: bool = False):
    """Checks, local partials, one all-reduce (and one all-gather for Linf), global value.

    With ``for_grad`` (add_grad_): only trainable params take part, their ``.grad`` is
    checked and allocated, and additive terms add their gradient during the local pass.
    Returns ``(plan, params, grads)``; ``plan`` is None when this call has no tensors.
    """
    pg = check_process_group(pg)
    rank = dist.get_rank(pg)
    world = dist.get_world_size(pg)
    err: BaseException | None = None
    tl: TensorList | None = None
    grads: TensorList | None = None
    terms: list[_Term] = []
    try:
        tl = tensor_list(params)
        if for_grad:
            tl = trainable(tl)
        if tl is not None:
            terms = _terms(penalty, tl)  # per-penalty checks (GroupLasso dim)
            if for_grad:
                grads = checked_grads(tl)
    except (TypeError, ValueError) as exc:
        err = exc
    n = len(tl) if tl is not None else 0
    dev = _comm_device(pg, tl.tensors if tl is not None else [])
    sig = [float(n), float(sum(t.n_sum for t in terms)), float(sum(t.n_gather for t in terms))]
    _agree(pg, dev, rank, err is None, sig)
    if err is not None:
        raise err
    if n == 0:
        return None, tl, grads
    sums, gath = [], []
    for t in terms:
        s, g = t.local(grads if isinstance(t, _Additive) else None)
        sums.append(s)
        gath.append(g)
    flat = [v for s in sums for v in s]
    if flat:
        red = torch.tensor(flat, dtype=torch.float64, device=dev)
        dist.all_reduce(red, op=dist.ReduceOp.SUM, group=pg)
        flat = red.tolist()
    gflat = [v for g in gath for v in g]
    rows: list[list[float]] = []
    if gflat:
        mine = torch.tensor(gflat, dtype=torch.float64, device=dev)
        out = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(out, mine, group=pg)
        rows = [o.tolist() for o in out]
    value, k, j = 0.0, 0, 0
    for t in terms:
        value += t.finish(flat[k : k + t.n_sum], [r[j : j + t.n_gather] for r in rows], rank)
        k += t.n_sum
        j += t.n_gather
    return _Plan(terms, value), tl, grads


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
    from .penalties import L0, Sum

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
    from . import prox

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
    from . import prox
    from ._bridge import check_strength

    pg = check_process_group(process_group)
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
            dim = plan.norm[2]
            spans = [(dim + t.dim() if dim < 0 else dim) != 0 for t in tl.tensors]
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
    from . import prox

    t, s, d = step * plan.l1, step * plan.norm[1], 1.0 / (1.0 + step * plan.l2)
    if t > 0:
        prox.soft_threshold_(tl.tensors, step, plan.l1)  # elementwise: exact on each shard

    def coef(q: float) -> float:
        norm = math.sqrt(q) if q == q else _NAN
        if norm != norm:
            return _NAN
        return d * max(1.0 - s / norm, 0.0) if norm > 0 else 0.0

    if shapes is None:  # L2Norm: one norm per tensor
        if tl.on_cpu:
            sq = list(_C.abs_sq_sums(tl.ptrs, tl.numels, tl.dtypes)[1])
        else:
            sq = [float((_acc(w) ** 2).sum()) for w in tl.tensors]
        red = torch.tensor(sq, dtype=torch.float64, device=dev)
        dist.all_reduce(red, group=pg)
        c = [coef(q) for q in red.tolist()]
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
    shared = [q for qs, sp in zip(sq, spans, strict=True) if sp for q in qs]
    if shared:
        red = torch.tensor(shared, dtype=torch.float64, device=dev)
        dist.all_reduce(red, group=pg)
        flat, k = red.tolist(), 0
        for i, sp in enumerate(spans):
            if sp:
                sq[i] = flat[k : k + len(sq[i])]
                k += len(sq[i])
    c = [[coef(q) for q in qs] for qs in sq]
    if tl.on_cpu:
        return list(_C.group_scale_inplace(tl.ptrs, tl.numels, tl.dtypes, *shapes, c))
    with torch.no_grad():
        for w, o, g, i, ci in zip(tl.tensors, *shapes, c, strict=True):
            cw = torch.tensor(ci, dtype=torch.float64, device=w.device).view(1, g, 1)
            w.copy_((_acc(w).reshape(o, g, i) * cw).reshape(w.shape).to(w.dtype))
    return [int((w == 0).sum()) for w in tl.tensors]


def _linf_prox_sharded(tl: TensorList, s: float, pg, dev, world: int, rank: int) -> list[int]:
    """All-gather each logical tensor, take its prox on every rank, keep this rank's slice."""
    from . import prox

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
