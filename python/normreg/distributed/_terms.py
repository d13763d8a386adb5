"""The sharded terms of a penalty (additive, L2 norm, group, Linf): each makes its local
partial sums and, from the reduced ones, the global value and its gradient. The collective
plan that reduces the partial sums of all terms in one all-reduce is in :mod:`._collective`;
the norm arithmetic the terms share is in :mod:`._norms`."""

from __future__ import annotations

import math

import torch

from .. import _reference as ref
from .._bridge import (
    TensorList,
)
from .._loader import _C
from ..penalties import ElasticNet, GroupLasso, Sum
from ._norms import (
    _NAN,
    _acc,
    _add_inf_limit,
    _coef,
    _first_argmax_index,
    _Geo,
    _norm_of,
    _scaled_grad,
    _scaled_rows,
    _spans,
)


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
                _add_inf_limit(
                    tl.tensors[i].detach(), grads.tensors[i], scale * self.penalty.strength / math.sqrt(k)
                )
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
        self.slot_map = [
            (i, k)
            for i, (g, s) in enumerate(zip(self.shapes[1], self.spans, strict=True))
            if s
            for k in range(g)
        ]
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
            _scaled_rows(t.reshape(o, g, n), q)
            for t, o, g, n, q in zip(tl.tensors, *self.shapes, sq, strict=True)
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
                    d = torch.where(
                        norm == 0, 0.0, _scaled_grad(x, norm.expand_as(x), scale * self.penalty.strength)
                    )
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
                        g.add_(
                            (lim * (scale * self.penalty.strength / math.sqrt(cnt)))
                            .reshape(w.shape)
                            .to(g.dtype)
                        )


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


def _parts(penalty) -> list:
    """The penalties a call's terms are made of: a Sum's affine terms as one ElasticNet (the
    one fused pass of ``Sum._specs``), its other terms as they are; a penalty alone as it is."""
    if not isinstance(penalty, Sum):
        return [penalty]
    merged, rest = penalty._parts()
    return ([ElasticNet(merged[1], merged[2])] if merged is not None else []) + rest


def _terms(penalty, tl: TensorList, geo: list[_Geo] | None = None) -> list[_Term]:
    out: list[_Term] = []
    for p in _parts(penalty):
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
