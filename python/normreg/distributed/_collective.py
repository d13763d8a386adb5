"""The collective part of a sharded call: checks agreed on by every rank, the terms'
(:mod:`._terms`) local partial sums reduced in one all-reduce (and one all-gather for
Linf), the global value, and the :class:`_Plan` that applies the gradient from them.
:mod:`.sharded` and :mod:`.dtensor` make their calls through :func:`_plan`."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from .._bridge import (
    TensorList,
    checked_grads,
    tensor_list,
    trainable,
)
from ._norms import (
    _NAN,
    _comm_device,
    _Geo,
    _needs_scale,
    _reduce_norms,
    check_process_group,
)
from ._terms import _Additive, _Term, _terms


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


def _offsets(terms: list[_Term]) -> list[int]:
    out, k = [], 0
    for t in terms:
        out.append(k)
        k += t.n_sum
    return out


def _plan(penalty, params, pg, *, for_grad: bool = False, geo: list[_Geo] | None = None, grads_of=None):
    """Checks, local partials, one all-reduce (and one all-gather for Linf), global value.

    With ``for_grad`` (add_grad_): only trainable params take part, their ``.grad`` is
    checked and allocated, and additive terms add their gradient during the local pass.
    Returns ``(plan, params, grads)``; ``plan`` is None when this call has no tensors.
    ``geo``: where each tensor lies in its logical tensor (DTensor shards); ``grads_of``:
    with ``for_grad``, a function of the checked params that returns their grads (checked,
    allocated) instead of their ``.grad`` (a DTensor's local grad is not its shard's ``.grad``).
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
        if for_grad and grads_of is None:
            tl = trainable(tl)
        if tl is not None:
            terms = _terms(penalty, tl, geo)  # per-penalty checks (GroupLasso dim)
            if for_grad:
                grads = checked_grads(tl) if grads_of is None else grads_of(tl)
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
    normed = any(t.slots for t in terms)
    if normed:  # one more entry: does any rank need scaled sums of squares?
        flat.append(float(any(_needs_scale(t.rows) for t in terms)))
    if flat:
        red = torch.tensor(flat, dtype=torch.float64, device=dev)
        dist.all_reduce(red, op=dist.ReduceOp.SUM, group=pg)
        flat = red.tolist()
    if normed:
        scaled = flat.pop() > 0
        at = [k + i for k, t in zip(_offsets(terms), terms, strict=True) for i in t.slots]
        norms = _reduce_norms([r for t in terms for r in t.rows], pg, dev) if scaled else None
        for j, k in enumerate(at):
            flat[k] = norms[j] if norms is not None else (math.sqrt(flat[k]) if flat[k] == flat[k] else _NAN)
        # infinite global norms (the same on every rank): the number of infinities, for the limit
        inf = [
            (t, j)
            for t, o in zip(terms, _offsets(terms), strict=True)
            for j, i in enumerate(t.slots)
            if flat[o + i] == math.inf
        ]
        if inf:
            cnt = torch.tensor([float(t.count_inf(j)) for t, j in inf], dtype=torch.float64, device=dev)
            dist.all_reduce(cnt, group=pg)
            for (t, j), c in zip(inf, cnt.tolist(), strict=True):
                t.ninf[t.slot_of(j)] = int(c)
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
