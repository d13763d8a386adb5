"""The proximal operators and projections, in place, each returning the zero count per tensor."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _reference as ref
from .._bridge import group_layout, paired, tensor_list
from .._loader import _C
from ._core import _counts, _counts_fake, _kernels, _no_overlap, bump

# ---- proximal operators and projections (in place; each returns the zero count per tensor) ---
#
# Each op has a kernel function on checked TensorLists (`_k_*`), called by the registered
# op's CPU implementation and by the direct path alike, and a public entry (`prox_*`,
# `project_*` without the underscore prefix) that takes the caller's TensorList and picks
# the direct path (a list of ints back) or the operator (an int64 tensor back).


def _k_shrink(tl, u, t, c, nonneg):
    return _C.prox_elementwise(
        1 if nonneg else 0, tl.ptrs, tl.numels, tl.dtypes, u.ptrs if u is not None else [], t, c
    )


def _k_hard(tl, thr):
    return _C.prox_elementwise(2, tl.ptrs, tl.numels, tl.dtypes, [], thr, [0.0])


def _k_box(tl, lo, hi):
    return _C.prox_elementwise(3, tl.ptrs, tl.numels, tl.dtypes, [], lo, hi)


def _k_l2_norm(tl, t, s, d):
    return _C.prox_l2_norm(tl.ptrs, tl.numels, tl.dtypes, t, s, d)


def _k_group(tl, dim, t, s, d):
    return _C.prox_group(tl.ptrs, tl.numels, tl.dtypes, *group_layout(tl.tensors, dim), t, s, d)


def _k_linf(tl, s):
    return _C.prox_linf(tl.ptrs, tl.numels, tl.dtypes, s)


def _k_l2_ball(tl, radius):
    return _C.project_l2_ball(tl.ptrs, tl.numels, tl.dtypes, radius)


def _k_l1_ball(tl, radius):
    return _C.project_l1_ball(tl.ptrs, tl.numels, tl.dtypes, radius)


@torch.library.custom_op("normreg::prox_shrink_", mutates_args=("params",))
def _prox_shrink_op(
    params: list[Tensor], weights: list[Tensor], t: list[float], c: list[float], nonneg: bool
) -> Tensor:
    """``w <- c * soft(w, t * u)`` (``u``: per-element weights, or ``[]`` for none);
    ``nonneg``: ``c * max(w - t u, 0)``."""
    if _kernels(params):
        tl = tensor_list(params, inplace=True)
        u = paired(tl, weights, "weights", inplace=False) if weights else None
        return _counts(_k_shrink(tl, u, t, c, nonneg), params)
    _no_overlap(params)
    return _counts(ref.prox_shrink_(params, t, c, weights or None, nonneg), params)


@torch.library.custom_op("normreg::prox_hard_", mutates_args=("params",))
def _prox_hard_op(params: list[Tensor], thr: list[float]) -> Tensor:
    """Exact L0 prox: 0 where ``|w| <= thr``, else ``w``."""
    if _kernels(params):
        return _counts(_k_hard(tensor_list(params, inplace=True), thr), params)
    _no_overlap(params)
    return _counts(ref.prox_hard_(params, thr), params)


@torch.library.custom_op("normreg::project_box_", mutates_args=("params",))
def _project_box_op(params: list[Tensor], lo: list[float], hi: list[float]) -> Tensor:
    """``clamp(w, lo, hi)``."""
    if _kernels(params):
        return _counts(_k_box(tensor_list(params, inplace=True), lo, hi), params)
    _no_overlap(params)
    return _counts(ref.project_box_(params, lo, hi), params)


@torch.library.custom_op("normreg::prox_l2_norm_", mutates_args=("params",))
def _prox_l2_norm_op(params: list[Tensor], t: list[float], s: list[float], d: list[float]) -> Tensor:
    """Prox of ``l1|w|_1 + (l2/2)|w|^2 + lg ||w||_2`` per tensor (t = τ l1, s = τ lg, d = 1/(1+τ l2))."""
    if _kernels(params):
        return _counts(_k_l2_norm(tensor_list(params, inplace=True), t, s, d), params)
    _no_overlap(params)
    return _counts(ref.prox_l2_norm_(params, t, s, d), params)


@torch.library.custom_op("normreg::prox_group_", mutates_args=("params",))
def _prox_group_op(params: list[Tensor], dim: int, t: list[float], s: list[float], d: list[float]) -> Tensor:
    """As ``prox_l2_norm_`` with one group per slice along ``dim`` (sparse group lasso)."""
    if _kernels(params):
        return _counts(_k_group(tensor_list(params, inplace=True), dim, t, s, d), params)
    _no_overlap(params)
    return _counts(ref.prox_group_(params, dim, t, s, d), params)


@torch.library.custom_op("normreg::prox_linf_", mutates_args=("params",))
def _prox_linf_op(params: list[Tensor], s: list[float]) -> Tensor:
    """Prox of ``s * max|w|`` per tensor: ``w - P_{L1 ball of radius s}(w)``."""
    if _kernels(params):
        return _counts(_k_linf(tensor_list(params, inplace=True), s), params)
    _no_overlap(params)
    return _counts(ref.prox_linf_(params, s), params)


@torch.library.custom_op("normreg::project_l2_ball_", mutates_args=("params",))
def _project_l2_ball_op(params: list[Tensor], radius: list[float]) -> Tensor:
    """``w min(1, r / ||w||)`` per tensor."""
    if _kernels(params):
        return _counts(_k_l2_ball(tensor_list(params, inplace=True), radius), params)
    _no_overlap(params)
    return _counts(ref.project_l2_ball_(params, radius), params)


@torch.library.custom_op("normreg::project_l1_ball_", mutates_args=("params",))
def _project_l1_ball_op(params: list[Tensor], radius: list[float]) -> Tensor:
    """Exact Euclidean projection onto ``{||w||_1 <= r}`` per tensor."""
    if _kernels(params):
        return _counts(_k_l1_ball(tensor_list(params, inplace=True), radius), params)
    _no_overlap(params)
    return _counts(ref.project_l1_ball_(params, radius), params)


def _fake_counts(params, *args):
    return _counts_fake(params)


for _op in (
    _prox_shrink_op,
    _prox_hard_op,
    _project_box_op,
    _prox_l2_norm_op,
    _prox_group_op,
    _prox_linf_op,
    _project_l2_ball_op,
    _project_l1_ball_op,
):
    _op.register_fake(_fake_counts)
del _op


def _full(v: list[float], n: int) -> list[float]:
    return v * n if len(v) == 1 else v


def prox_shrink(tl, u, t: list[float], c: list[float], nonneg: bool):
    """Zeros per tensor after ``w <- c soft(w, t u)`` (list: direct path; tensor: operator)."""
    if tl.on_cpu:
        z = _k_shrink(tl, u, t, c, nonneg)
        bump(tl.tensors)
        return z
    n = len(tl.tensors)
    return _prox_shrink_op(tl.tensors, u.tensors if u is not None else [], _full(t, n), _full(c, n), nonneg)


def _run(tl, kernel, op, *args):
    """The direct path (kernel, then bump what it wrote: zero counts as ints) or the operator
    (list arguments expanded to one value per tensor: an int64 tensor of counts)."""
    if tl.on_cpu:
        z = kernel(tl, *args)
        bump(tl.tensors)
        return z
    n = len(tl.tensors)
    return op(tl.tensors, *(_full(a, n) if isinstance(a, list) else a for a in args))


def prox_hard(tl, thr: list[float]):
    return _run(tl, _k_hard, _prox_hard_op, thr)


def project_box(tl, lo: list[float], hi: list[float]):
    return _run(tl, _k_box, _project_box_op, lo, hi)


def prox_l2_norm(tl, t: list[float], s: list[float], d: list[float]):
    return _run(tl, _k_l2_norm, _prox_l2_norm_op, t, s, d)


def prox_group(tl, dim: int, t: list[float], s: list[float], d: list[float]):
    return _run(tl, _k_group, _prox_group_op, dim, t, s, d)


def prox_linf(tl, s: list[float]):
    return _run(tl, _k_linf, _prox_linf_op, s)


def project_l2_ball(tl, radius: list[float]):
    return _run(tl, _k_l2_ball, _project_l2_ball_op, radius)


def project_l1_ball(tl, radius: list[float]):
    return _run(tl, _k_l1_ball, _project_l1_ball_op, radius)
