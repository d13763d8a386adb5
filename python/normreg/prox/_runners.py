"""The runners of the proximal steps: checked arguments (see :mod:`._checks`) in, one
operator call of :mod:`normreg._ops`, :class:`ProxStats` out. :mod:`._operators` and
:mod:`._penalty` call them."""

from __future__ import annotations

from .. import _ops
from .._bridge import TensorList
from ._proxstats import ProxStats

# op codes of _C.prox_elementwise
_SHRINK, _SHRINK_NONNEG, _HARD, _CLAMP = 0, 1, 2, 3


def _stats(tl: TensorList, zeros) -> ProxStats:
    return ProxStats.from_counts(zeros, tl.tensors)


def _run_shrink(
    tl: TensorList, t: list[float], c: list[float], u: TensorList | None, nonneg: bool
) -> ProxStats:
    return _stats(tl, _ops.prox_shrink(tl, u, t, c, nonneg))


def _run_hard(tl: TensorList, thr: list[float]) -> ProxStats:
    return _stats(tl, _ops.prox_hard(tl, thr))


def _run_clamp(tl: TensorList, lo: list[float], hi: list[float]) -> ProxStats:
    return _stats(tl, _ops.project_box(tl, lo, hi))


def _run_l2_norm(tl: TensorList, t: list[float], s: list[float], d: list[float]) -> ProxStats:
    return _stats(tl, _ops.prox_l2_norm(tl, t, s, d))


def _run_group(tl: TensorList, shapes, dim: int, t: list[float], s: list[float], d: list[float]) -> ProxStats:
    return _stats(tl, _ops.prox_group(tl, dim, t, s, d))


def _run_linf(tl: TensorList, s: list[float]) -> ProxStats:
    return _stats(tl, _ops.prox_linf(tl, s))
