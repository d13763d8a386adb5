"""Penalties over parameters sharded across processes (``torch.distributed``).

DTensor parameters (FSDP2 ``fully_shard``, ``distribute_tensor`` with ``Shard``/``Replicate``)
need no ``process_group``: ``penalty.value/grad/add_grad_/prox_`` and the optimizers' ``step``
detect them (:func:`dtensor_args`, :func:`groups_have_dtensor`) and land in ``dtensor_*``
below, which run the machinery of this module on each DTensor's local tensor over the process
group of its Shard mesh dim (see the section at the end and docs/distributed.md).

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
* ``L2Norm``: the per-tensor sums of squares are all-reduced before ``λ / ||w||`` is
  computed; any layout in which tensor ``i`` on every rank is a piece of logical tensor
  ``i`` works (flat shards included).
* ``GroupLasso(dim)``: groups are slices along ``dim`` of the logical tensor. When ``dim``
  is the shard dim (0, or ``-ndim``), every group lives on one rank and its norm is local.
  Otherwise every group spans all ranks: the per-group sums of squares are all-reduced
  (every rank must then hold the same number of groups, i.e. the same size along ``dim``)
  before the gradient coefficients ``λ / ||w_g||`` are computed.
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

import inspect
import math
import sys
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import _reference as ref
from . import prox
from ._bridge import (
    TensorList,
    as_tensors,
    check_strength,
    checked_grads,
    dtensor_args,  # noqa: F401  (re-exported: part of this module's API)
    groups_have_dtensor,  # noqa: F401
    paired,
    register_distributed,
    tensor_list,
    trainable,
)
from ._loader import _C
from .penalties import L0, GroupLasso, Sum
from .prox import ProxStats, _check_plan_params
from .prox import _plan as prox_plan

__all__ = [
    "sharded_value",
    "sharded_add_grad_",
    "sharded_prox_",
    "check_process_group",
    "dtensor_value",
    "dtensor_add_grad_",
    "dtensor_prox_",
    "dtensor_grad",
    "dtensor_step",
]

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


class _Term:
    n_sum = 0
    n_gather = 0
    #: positions in local()'s sums that are sums of squares (all-reduced as norms, see
    #: _reduce_norms); finish() gets the global norms there
    slots: tuple[int, ...] = ()
    #: the local scaled sums of squares (sq, e) of the slots, set by local()
    rows: list[tuple[float, int]] = []

    def slot_of(self, j: int) -> tuple[int, int]:
        """(tensor, group) of slot j."""
        return (j, 0)

    def count_inf(self, j: int) -> int:
        """Local number of infinite elements of slot j."""
        i, k = self.slot_of(j)
        t = self.tl.tensors[i]
        if isinstance(self, _Group):
            o, g, n = (s[i] for s in self.shapes)
            return int(torch.isinf(t.detach().reshape(o, g, n)[:, k]).sum())
        return int(torch.isinf(t.detach()).sum())

    def __init__(self, penalty, tl: TensorList, geo: list[_Geo] | None = None) -> None:
        self.penalty = penalty
        self.tl = tl
        #: per tensor, where it lies in its logical tensor (DTensors); None: dim-0 slices in rank order
        self.geo = geo

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
    """Per-tensor sums of squares all-reduced; gradient ``λ * w / ||w||`` with global norms."""

    def __init__(self, penalty, tl, geo=None):
        super().__init__(penalty, tl, geo)
        self.n_sum = len(tl)

        self.slots = tuple(range(len(tl)))
        self.ninf: dict[tuple[int, int], int] = {}  # (tensor, 0): global infinities of an infinite norm

    def local(self, grads):
        tl = self.tl
        if tl.on_cpu:
            sq = list(_C.abs_sq_sums(tl.ptrs, tl.numels, tl.dtypes)[1])
        else:
            sq = torch.stack([(_acc(t) ** 2).sum() for t in tl.tensors]).tolist()
        self.rows = [_scaled_rows(t.reshape(1, 1, -1), [q])[0] for t, q in zip(tl.tensors, sq, strict=True)]
        return sq, []

    def finish(self, sums, gathered, rank):  # sums: the global norms
        lam = self.penalty.strength
        self.norms = sums
        self.coef = [_coef(lam, q) for q in sums]
        return sum(lam * q for q in sums)

    def apply(self, grads, scale, accumulate):
        tl = self.tl
        nan = [i for i, c in enumerate(self.coef) if c != c]
        # strength / norm past the double range (a norm below ~1e-308): scaled, below
        big = [i for i, c in enumerate(self.coef) if c == math.inf or abs(scale * c) == math.inf]
        if tl.on_cpu:
            coef = [0.0 if (c != c or i in big) else c for i, c in enumerate(self.coef)]
            _C.penalty_grad(
                "squared_l2", tl.ptrs, tl.numels, tl.dtypes, grads.ptrs, [0.0], coef, scale, accumulate
            )
        else:
            with torch.no_grad():
                for i, (w, g, c) in enumerate(zip(tl.tensors, grads.tensors, self.coef, strict=True)):
                    if i not in big:
                        d = _acc(w) * (scale * c) if c != 0.0 else torch.zeros_like(_acc(w))
                        d = d.to(g.dtype)
                        g.add_(d) if accumulate else g.copy_(d)
        for (i, _), k in self.ninf.items():  # an infinite norm: λ sign(w) / sqrt(k) on the k infinities
            if k > 0:
                _add_inf_limit(tl.tensors[i].detach(), grads.tensors[i], scale * self.penalty.strength / math.sqrt(k))
        with torch.no_grad():
            for i in big:
                w, g = tl.tensors[i], grads.tensors[i]
                n = torch.tensor(self.norms[i], dtype=torch.float64, device=w.device)
                d = _scaled_grad(w.detach().to(torch.float64), n, scale * self.penalty.strength).to(g.dtype)
                g.add_(d) if accumulate or tl.on_cpu else g.copy_(d)
        _fill_nan(grads, nan)


class _Group(_Term):
    """GroupLasso: groups on one rank (dim = shard dim) are local; groups that span ranks
    have their sums of squares all-reduced."""

    def __init__(self, penalty, tl, geo=None):
        super().__init__(penalty, tl, geo)
        self.shapes = penalty.shapes(tl.tensors)  # raises on a bad dim before any collective
        self.spans = _spans(penalty.dim, tl.tensors, geo)  # True: the groups span the ranks
        self.n_sum = 1 + sum(g for g, s in zip(self.shapes[1], self.spans, strict=True) if s)
        self.slots = tuple(range(1, self.n_sum))
        #: slot j (from 0) -> (tensor, group) of the shared groups
        self.slot_map = [(i, k) for i, (g, s) in enumerate(zip(self.shapes[1], self.spans, strict=True)) if s for k in range(g)]
        self.ninf: dict[tuple[int, int], int] = {}

    def slot_of(self, j):
        return self.slot_map[j - 1]

    def local(self, grads):
        tl = self.tl
        if tl.on_cpu:
            sq = [list(q) for q in _C.group_sq_sums(tl.ptrs, tl.numels, tl.dtypes, *self.shapes)]
        else:
            sq = []
            for t, o, g, n in zip(tl.tensors, *self.shapes, strict=True):
                x = _acc(t).reshape(o, g, n)
                sq.append((x * x).sum(dim=(0, 2)).tolist())
        rows = [
            _scaled_rows(t.reshape(o, g, n), q) for t, o, g, n, q in zip(tl.tensors, *self.shapes, sq, strict=True)
        ]
        # self.sq: per tensor, per group, its norm (the local groups' now, the shared ones in finish)
        self.sq = [[_norm_of(q, e) for q, e in r] for r in rows]
        lam = self.penalty.strength
        local_value = sum(lam * sum(nq) for nq, s in zip(self.sq, self.spans, strict=True) if not s)
        self.rows = [x for r, s in zip(rows, self.spans, strict=True) if s for x in r]
        shared = [q for qs, s in zip(sq, self.spans, strict=True) if s for q in qs]
        return [local_value, *shared], []

    def finish(self, sums, gathered, rank):  # sums[1:]: the global norms of the shared groups
        lam = self.penalty.strength
        value, k = sums[0], 1
        for i, s in enumerate(self.spans):
            if s:
                g = len(self.sq[i])
                self.sq[i] = sums[k : k + g]
                k += g
                value += lam * sum(self.sq[i])
        self.coef = [[_coef(lam, q) for q in sq] for sq in self.sq]
        return value

    def apply(self, grads, scale, accumulate):
        tl = self.tl
        coef = [[scale * c for c in cs] for cs in self.coef]
        if any(abs(c) == math.inf for cs in coef for c in cs):  # strength / norm past the double range
            with torch.no_grad():
                for w, g, o, G, n, nq in zip(tl.tensors, grads.tensors, *self.shapes, self.sq, strict=True):
                    x = w.detach().to(torch.float64).reshape(o, G, n)
                    norm = torch.tensor(nq, dtype=torch.float64, device=w.device).view(1, G, 1)
                    d = torch.where(norm == 0, 0.0, _scaled_grad(x, norm.expand_as(x), scale * self.penalty.strength))
                    d = d.reshape(w.shape).to(g.dtype)
                    g.add_(d) if accumulate else g.copy_(d)
            return
        if tl.on_cpu:
            _C.group_apply_coef(tl.ptrs, tl.numels, tl.dtypes, grads.ptrs, *self.shapes, coef, accumulate)
        else:
            with torch.no_grad():
                for w, g, o, G, n, c in zip(tl.tensors, grads.tensors, *self.shapes, coef, strict=True):
                    cw = torch.tensor(c, dtype=torch.float64, device=w.device).view(1, G, 1)
                    d = torch.where(cw == 0, 0.0, _acc(w).reshape(o, G, n) * cw)  # 0 coef: nothing (0 * inf)
                    d = d.reshape(w.shape).to(g.dtype)
                    g.add_(d) if accumulate else g.copy_(d)
        # groups with an infinite norm: λ sign(w) / sqrt(k) on their k infinities (local groups
        # counted here, shared ones all-reduced in _plan)
        for i, (w, g, o, G, n, nq, sp) in enumerate(
            zip(tl.tensors, grads.tensors, *self.shapes, self.sq, self.spans, strict=True)
        ):
            for k, q in enumerate(nq):
                if q != math.inf:
                    continue
                x = w.detach().reshape(o, G, n)
                cnt = self.ninf.get((i, k), 0) if sp else int(torch.isinf(x[:, k]).sum())
                if cnt > 0:
                    mask = torch.zeros_like(x, dtype=torch.bool)
                    mask[:, k] = True
                    lim = torch.where(mask & torch.isinf(x), torch.sign(_acc(x)), 0.0)
                    with torch.no_grad():
                        g.add_((lim * (scale * self.penalty.strength / math.sqrt(cnt))).reshape(w.shape).to(g.dtype))


class _Linf(_Term):
    """Per-tensor max |w| all-gathered; the gradient goes to the first global arg max."""

    def __init__(self, penalty, tl, geo=None):
        super().__init__(penalty, tl, geo)
        self.n_gather = len(tl) if geo is None else 2 * len(tl)

    def local(self, grads):
        tl = self.tl
        if tl.on_cpu:
            maxes = list(_C.max_abs_per_tensor(tl.ptrs, tl.numels, tl.dtypes))
        else:
            maxes = [float(_acc(t).abs().max()) if t.numel() else -1.0 for t in tl.tensors]
        if self.geo is None:  # dim-0 slices in rank order: the lowest rank holds the first arg max
            return [], maxes
        # any layout: the position of the local first arg max in the logical tensor breaks ties
        keys = [_first_argmax_index(t, g) for t, g in zip(tl.tensors, self.geo, strict=True)]
        return [], [*maxes, *keys]

    def finish(self, sums, gathered, rank):
        lam = self.penalty.strength
        value = 0.0
        self.nan, self.mine = [], []
        n = len(self.tl)
        for i in range(n):
            col = [row[i] for row in gathered]
            if any(m != m for m in col):
                value += _NAN
                self.nan.append(i)
                self.mine.append(False)
                continue
            top = max(col)
            value += lam * max(top, 0.0)
            if self.geo is None:
                first = col.index(top)
            else:  # the rank whose arg max comes first in the logical tensor
                first = min((row[n + i], r) for r, row in enumerate(gathered) if row[i] == top)[1]
            self.mine.append(top >= 0.0 and first == rank)
        return value

    def apply(self, grads, scale, accumulate):
        tl, lam = self.tl, self.penalty.strength
        s1 = [lam if m else 0.0 for m in self.mine]
        if tl.on_cpu:
            _C.penalty_grad("linf", tl.ptrs, tl.numels, tl.dtypes, grads.ptrs, s1, [0.0], scale, accumulate)
        else:
            with torch.no_grad():
                for w, g, s in zip(tl.tensors, grads.tensors, s1, strict=True):
                    d = ref.penalty_grad("linf", [w], s)[0] * scale
                    g.add_(d) if accumulate else g.copy_(d)
        _fill_nan(grads, self.nan)


def _terms(penalty, tl: TensorList, geo: list[_Geo] | None = None) -> list[_Term]:
    parts = penalty._parts() if isinstance(penalty, Sum) else [penalty]
    out: list[_Term] = []
    for p in parts:
        if isinstance(p, GroupLasso):
            out.append(_Group(p, tl, geo))
        elif p.kind == "l2_norm":
            out.append(_L2Norm(p, tl, geo))
        elif p.kind == "linf":
            out.append(_Linf(p, tl, geo))
        elif p.kind in ("l1", "squared_l2", "elastic_net", "l0"):
            out.append(_Additive(p, tl, geo))
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
        inf = [(t, j) for t, o in zip(terms, _offsets(terms), strict=True) for j, i in enumerate(t.slots) if flat[o + i] == math.inf]
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
    rows = [_scaled_rows(w.reshape(o, g, i), q) for w, o, g, i, q in zip(tl.tensors, *shapes, sq, strict=True)]
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


register_distributed(sys.modules[__name__])
