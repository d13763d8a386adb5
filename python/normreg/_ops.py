"""normreg's operators: every op defined once with ``torch.library``, namespace ``normreg::``.

Each operator's body is the one place that chooses between the kernels and the reference:
CPU tensors go through :mod:`normreg._bridge` to ``_C``; tensors on any other device (CUDA,
MPS, ...), and every tensor while :func:`force_reference` is on, run the pure-torch
implementation in :mod:`normreg._reference`. Every op has a fake implementation (shapes and
dtypes, so ``torch.compile(fullgraph=True)`` traces it and meta tensors work), value ops
register their autograd formula through the dispatcher (so ``torch.func.grad`` / ``vjp``
work), and in-place ops declare what they write (``mutates_args``), so the dispatcher bumps
those tensors' version counters and autograd refuses a graph that saw the old values.

The direct path
---------------
Going through the dispatcher costs tens of microseconds per call, more than a whole fused
pass over a small model. Plain eager calls on plain CPU tensors therefore call the same
kernels directly (the public layer does, see :func:`direct_ok`) and then bump the version
counter of every tensor written (:func:`bump`), exactly as the registered op does. Tests
run both paths and compare them bitwise (:func:`dispatcher_only`).

Switches
--------
``NORMREG_BACKEND=reference`` (environment, read at import) or :func:`force_reference`:
every op runs ``_reference``, CPU tensors included, through the dispatcher (the test suite
runs once this way, so the non-CPU implementation is exercised without a GPU).
``NORMREG_BACKEND=dispatcher`` or :func:`dispatcher_only`: no direct path.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence

import torch
from torch import Tensor

from . import _reference as ref
from ._bridge import DTYPE_CODES, check_overlap, group_layout, paired, tensor_list
from ._loader import _C

__all__ = [
    "direct_ok",
    "bump",
    "force_reference",
    "dispatcher_only",
    "reference_forced",
    "value_dtype",
    "value_tensor",
    "as_float",
    "functorch_active",
    "reference_value",
    "kernel_value",
    "kernel_grad",
]

_env = os.environ.get("NORMREG_BACKEND", "").strip().lower()
if _env not in ("", "kernels", "reference", "dispatcher"):
    raise ValueError(f"NORMREG_BACKEND must be 'kernels', 'reference' or 'dispatcher', got {_env!r}")


class _Switches:
    reference = _env == "reference"
    dispatcher = _env in ("reference", "dispatcher")


_sw = _Switches()

_is_compiling = torch.compiler.is_compiling
_functorch_active = torch._C._are_functorch_transforms_active
_dispatch_modes = torch._C._len_torch_dispatch_stack
_increment_version = torch._C._increment_version  # takes a list: one call for all tensors


def direct_ok() -> bool:
    """May an eager call skip the dispatcher? (Not compiling, no functorch transform, no
    dispatch mode, not switched off.) The caller must also have plain CPU tensors."""
    return not (_sw.dispatcher or _is_compiling() or _functorch_active() or _dispatch_modes())


def functorch_active() -> bool:
    """Inside torch.func.grad / vjp / vmap / jacrev ... ?

    torch 2.13's ``custom_op`` autograd is an ``autograd.Function`` without
    ``setup_context``, which functorch refuses; under a transform the public layer therefore
    computes values and gradients with the differentiable pure-torch implementation
    (:func:`reference_value`), whose torch ops functorch differentiates and batches.
    """
    return bool(_functorch_active())


def reference_value(tensors: Sequence[Tensor], specs) -> Tensor:
    """The sum of the penalties ``specs`` on the differentiable reference, in the value dtype."""
    dt = value_dtype(tensors)
    out = None
    for kind, s1, s2, dim in specs:
        v = _ref_value(list(tensors), kind, s1, s2, dim).to(dt)
        out = v if out is None else out + v
    return out


def bump(tensors: Sequence[Tensor]) -> None:
    """Bump the version counter of every tensor the direct path wrote, as the op would."""
    _increment_version(tensors)


def as_float(value: Tensor):
    """A 0-dim result as a Python float; under torch.compile and for meta tensors, the tensor."""
    if _is_compiling() or value.device.type == "meta":
        return value
    return float(value)


def reference_forced() -> bool:
    return _sw.reference


@contextlib.contextmanager
def force_reference(on: bool = True):
    """Run every op on ``_reference`` (CPU tensors included), through the dispatcher."""
    old = (_sw.reference, _sw.dispatcher)
    _sw.reference, _sw.dispatcher = on, on or old[1]
    try:
        yield
    finally:
        _sw.reference, _sw.dispatcher = old


@contextlib.contextmanager
def dispatcher_only(on: bool = True):
    """Take the registered operators for every call (no direct path)."""
    old = _sw.dispatcher
    _sw.dispatcher = on or _sw.reference
    try:
        yield
    finally:
        _sw.dispatcher = old


def _kernels(tensors: Sequence[Tensor]) -> bool:
    """Inside an op: do these (real) tensors go to the C++ kernels?"""
    return not _sw.reference and tensors[0].device.type == "cpu"


def value_dtype(tensors: Sequence[Tensor]) -> torch.dtype:
    """A penalty value's dtype: float64 if any tensor is float64, else float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


_F32_MAX = torch.finfo(torch.float32).max


def value_tensor(v: float, dtype: torch.dtype, device=None) -> Tensor:
    """The kernels' float64 value as a 0-dim tensor of the value dtype, rounded as torch rounds
    float64 to a narrower type (``Tensor.to``, the reference's path): a value past the dtype's
    range is inf, as ``torch.sum`` in that dtype gives (``scalar_tensor`` alone would raise)."""
    if dtype != torch.float64 and abs(v) > (_F32_MAX if dtype == torch.float32 else torch.finfo(dtype).max):
        return torch.scalar_tensor(v, dtype=torch.float64, device=device).to(dtype)
    return torch.scalar_tensor(v, dtype=dtype, device=device)


def _no_overlap(tensors: Sequence[Tensor], arg: str = "params") -> None:
    """The reference path refuses overlapping memory as the kernels' path does."""
    check_overlap(list(tensors), [t.data_ptr() for t in tensors], [t.numel() for t in tensors], arg)


def _counts(zeros, params: Sequence[Tensor]) -> Tensor:
    return torch.tensor(list(zeros), dtype=torch.int64, device=params[0].device)


def _counts_fake(params: Sequence[Tensor]) -> Tensor:
    return params[0].new_empty((len(params),), dtype=torch.int64)


# ---- penalty values and gradients -----------------------------------------------------------
#
# kind: "l1", "squared_l2", "elastic_net", "l2_norm", "linf", "l0" (s1, s2 the strengths) or
# "group_lasso" (s1 the strength, groups the slices along `dim`); `dim` is ignored otherwise.


def kernel_value(tl, kind: str, s1: float, s2: float, dim: int) -> float:
    """One value pass of the kernels over a checked CPU TensorList."""
    if kind == "group_lasso":
        return _C.group_value(tl.ptrs, tl.numels, tl.dtypes, *group_layout(tl.tensors, dim), [s1])
    return _C.penalty_value(kind, tl.ptrs, tl.numels, tl.dtypes, [s1], [s2])


def kernel_grad(tl, gl, kind: str, s1: float, s2: float, dim: int, scale: float, accumulate: bool) -> float:
    """One gradient pass of the kernels: ``grads (+)= scale * dR/dw``; returns the value."""
    if kind == "l0":
        raise ValueError("L0 has no gradient; use its proximal step (L0.prox_ or normreg.optim) instead")
    if kind == "group_lasso":
        return _C.group_grad(
            tl.ptrs, tl.numels, tl.dtypes, gl.ptrs, *group_layout(tl.tensors, dim), [s1], scale, accumulate
        )
    return _C.penalty_grad(kind, tl.ptrs, tl.numels, tl.dtypes, gl.ptrs, [s1], [s2], scale, accumulate)


def _ref_value(params, kind, s1, s2, dim) -> Tensor:
    if kind == "group_lasso":
        return ref.group_value(params, dim, s1)
    return ref.penalty_value(kind, params, s1, s2)


def _ref_grad(params, kind, s1, s2, dim, dtype=None) -> list[Tensor]:
    if kind == "l0":
        raise ValueError("L0 has no gradient; use its proximal step (L0.prox_ or normreg.optim) instead")
    if kind == "group_lasso":
        return ref.group_grad(params, dim, s1, dtype=dtype)
    return ref.penalty_grad(kind, params, s1, s2, dtype=dtype)


@torch.library.custom_op("normreg::penalty_value", mutates_args=())
def penalty_value(params: list[Tensor], kind: str, s1: float, s2: float, dim: int) -> Tensor:
    """R(params) as a 0-dim tensor (float64 if any param is float64, else float32)."""
    dt = value_dtype(params)
    if _kernels(params):
        tl = tensor_list(params)
        return value_tensor(kernel_value(tl, kind, s1, s2, dim), dt)
    return _ref_value(params, kind, s1, s2, dim).to(dt)


@penalty_value.register_fake
def _(params, kind, s1, s2, dim):
    return params[0].new_empty((), dtype=value_dtype(params))


def _value_setup(ctx, inputs, output) -> None:
    params, kind, s1, s2, dim = inputs
    ctx.spec = (kind, s1, s2, dim)
    ctx.save_for_backward(*params)


def _value_backward(ctx, grad_out: Tensor):
    params = list(ctx.saved_tensors)
    kind, s1, s2, dim = ctx.spec
    if kind == "l0":  # a count: constant almost everywhere, no useful gradient
        return None, None, None, None, None
    if torch.is_grad_enabled():  # create_graph / torch.func: stay differentiable
        grads = [g * grad_out.to(g.dtype) for g in _ref_grad(params, kind, s1, s2, dim)]
    else:
        grads = torch.ops.normreg.penalty_grad(params, kind, s1, s2, dim, grad_out)
    return grads, None, None, None, None


penalty_value.register_autograd(_value_backward, setup_context=_value_setup)


@torch.library.custom_op("normreg::penalty_grad", mutates_args=())
def penalty_grad(
    params: list[Tensor], kind: str, s1: float, s2: float, dim: int, scale: Tensor
) -> list[Tensor]:
    """``scale * dR/dw`` for every param, as new tensors (the params' layouts)."""
    outs = [torch.empty_like(p) for p in params]
    if _kernels(params):
        tl = tensor_list(params)
        kernel_grad(tl, paired(tl, outs, "grads"), kind, s1, s2, dim, float(scale), False)
        return outs
    acc = _acc_dtype(params)
    for o, g in zip(outs, _ref_grad(params, kind, s1, s2, dim, dtype=acc)):
        o.copy_(g * scale.detach().to(acc))  # scaled in the accumulation precision, rounded once
    return outs


@penalty_grad.register_fake
def _(params, kind, s1, s2, dim, scale):
    return [torch.empty_like(p) for p in params]


@torch.library.custom_op("normreg::penalty_add_grad_", mutates_args=("grads",))
def penalty_add_grad_(
    params: list[Tensor], grads: list[Tensor], kind: str, s1: float, s2: float, dim: int
) -> Tensor:
    """``grads += dR/dw`` in one pass; returns R(params) as a 0-dim float64 tensor (the
    accumulator, as ``add_grad_`` returns it as a Python float)."""
    dt = _acc_dtype(params)
    if _kernels(params):
        tl = tensor_list(params)
        gl = paired(tl, grads, "grads", inplace=True)
        return value_tensor(kernel_grad(tl, gl, kind, s1, s2, dim, 1.0, True), dt)
    _no_overlap(grads, "grads")
    acc = _acc_dtype(params)
    for g, d in zip(grads, _ref_grad(params, kind, s1, s2, dim, dtype=acc)):
        g.copy_(g.to(acc) + d)  # added in the accumulation precision, rounded once as the kernels do
    return _ref_value(params, kind, s1, s2, dim).to(dt)


@penalty_add_grad_.register_fake
def _(params, grads, kind, s1, s2, dim):
    return params[0].new_empty((), dtype=_acc_dtype(params))


def _acc_dtype(params) -> torch.dtype:
    return torch.float32 if params[0].device.type == "mps" else torch.float64


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


# ---- image losses: l1_loss / mse_loss (normreg.losses) ---------------------------------------
#
# normreg::pointwise_loss computes the reduced (or elementwise) loss and, with `with_dir`, in
# the same pass the gradient for an incoming gradient of 1 ("dir", in the compute type), and
# the "mean" denominator (float64). Its backward scales dir by the incoming gradient
# (normreg::pointwise_loss_backward). The eager direct path (normreg.losses._PointwiseLoss)
# calls the same kernel helpers below; the two are bitwise equal (tests/test_losses.py).


def loss_compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The kernels' compute type: float64 for float64, else float32 (bf16/f16 computed in float)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def loss_dir_scale(reduction: str, masked: bool, numel: int) -> float:
    """The factor the forward puts into the gradient it writes: 1/numel for an unmasked
    mean (the denominator is known), else 1 (a mask's sum is known only after the pass)."""
    return 1.0 / numel if reduction == "mean" and not masked and numel else 1.0


def loss_divide(total: float, denom: float) -> float:
    """``total / denom`` with a float64 tensor's semantics: x/0 = +-inf, 0/0 = NaN."""
    if denom != 0:
        return total / denom
    if total != total or total == 0:
        return math.nan
    return math.copysign(math.inf, total) * math.copysign(1.0, denom)


def _loss_ptrs(*tensors: Tensor | None) -> list[int]:
    """Kernel pointers of contiguous CPU tensors through the bridge; 0 for an absent one."""
    present = [t for t in tensors if t is not None]
    ptrs = iter(tensor_list(present, "tensors").ptrs)
    return [0 if t is None else next(ptrs) for t in tensors]


def k_pointwise_value(kind: str, reduction: str, pred: Tensor, target: Tensor, mask, weight, want_dir: bool):
    """One kernel pass over contiguous CPU tensors (mask / weight expanded to pred's shape):
    ``(value, dir, denom)``: the 0-dim loss in pred's dtype or the elementwise loss ("none");
    with ``want_dir`` the gradient for an incoming gradient of 1 (still to be divided by the
    mask's sum for a masked mean) in the compute type, else None; the "mean" denominator."""
    out = torch.empty_like(pred, memory_format=torch.contiguous_format) if reduction == "none" else None
    d = torch.empty(pred.shape, dtype=loss_compute_dtype(pred.dtype)) if want_dir else None
    p, t, m, w, o, u = _loss_ptrs(pred, target, mask, weight, out, d)
    ds = loss_dir_scale(reduction, mask is not None, pred.numel())
    total, msum = _C.pointwise_loss_value(kind, p, t, m, w, o, u, pred.numel(), _dtype_code(pred), ds)
    denom = msum if mask is not None else float(pred.numel())
    if out is not None:
        return out, d, denom
    return value_tensor(total if reduction == "sum" else loss_divide(total, denom), pred.dtype), d, denom


def _dtype_code(t: Tensor) -> int:
    return DTYPE_CODES[t.dtype]


def loss_scale(reduction: str, masked: bool, grad_value: Tensor, denom: float, dtype: torch.dtype):
    """``(grad_out or None, k)`` of a backward: the elementwise incoming gradient ("none"), or
    the factor k the forward's gradient is multiplied by (the incoming scalar, divided by the
    mask's sum for a masked mean)."""
    if reduction == "none":
        return grad_value.to(dtype).contiguous(), 1.0
    k = float(grad_value)
    return None, (loss_divide(k, denom) if reduction == "mean" and masked else k)


def k_pointwise_grad_scale(dir_: Tensor, go, k: float, gp, gt, like: Tensor) -> None:
    """``gp = (dir * k) * [go]``, ``gt = -that`` (each when given), one pass; gp may be dir."""
    u, g, pg, tg = _loss_ptrs(dir_, go, gp, gt)
    _C.pointwise_loss_grad_scale(u, g, pg, tg, like.numel(), _dtype_code(like), k)


def k_pointwise_grad(kind, reduction, pred, target, mask, weight, go, k: float, gp, gt) -> None:
    """The same gradient recomputed from pred and target (same operations, same order)."""
    first, second, s = (gp, gt, k) if gp is not None else (gt, None, -k)  # only the target: -grad
    ds = loss_dir_scale(reduction, mask is not None, pred.numel())
    p, t, m, w, g, pg, tg = _loss_ptrs(pred, target, mask, weight, go, first, second)
    _C.pointwise_loss_grad(kind, p, t, m, w, g, pg, tg, pred.numel(), _dtype_code(pred), ds, s)


def check_loss_factor(x: Tensor | None, arg: str, fn: str) -> None:
    """A float mask or weight must be finite and >= 0 everywhere (checked on its values)."""
    if x is None or x.dtype == torch.bool or x.device.type == "meta" or x.numel() == 0:
        return
    v = x.detach()
    ok = (v >= 0) & (v < float("inf"))
    if not bool(ok.all()):
        bad = v[~ok].flatten()[0].item()
        raise ValueError(
            f"{fn}: '{arg}' must be finite and >= 0 everywhere, got {bad}; "
            "a negative, Inf or NaN factor makes the loss meaningless (check how it was built)"
        )


def _ref_loss_dir(kind, reduction, pred, target, m, w) -> Tensor:
    """Pure torch: the gradient for an incoming gradient of 1, as the kernels write it."""
    c = loss_compute_dtype(pred.dtype)
    d = pred.to(c) - target.to(c)
    u = torch.where(torch.isnan(d), d, torch.sign(d)) if kind == "l1" else d  # NaN stays NaN
    if m is not None:
        u = u * m.to(c)
    if w is not None:
        u = u * w.to(c)
    f = loss_dir_scale(reduction, m is not None, pred.numel())
    return u * (f if kind == "l1" else 2.0 * f)


def _loss_denom_dtype(t: Tensor) -> torch.dtype:
    return torch.float32 if t.device.type == "mps" else torch.float64


@torch.library.custom_op("normreg::pointwise_loss", mutates_args=())
def pointwise_loss(
    pred: Tensor,
    target: Tensor,
    mask: Tensor | None,
    weight: Tensor | None,
    kind: str,
    reduction: str,
    with_dir: bool,
    fn: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(value, dir, denom)`` of ``[mask] [weight] loss(pred - target)`` (kind "l1" / "mse");
    pred and target of one dtype and shape, mask / weight broadcastable and in pred's dtype.
    ``dir`` is empty without ``with_dir``. ``fn`` names the public function in errors."""
    check_loss_factor(mask, "mask", fn)
    check_loss_factor(weight, "weight", fn)
    shape = pred.shape
    m = None if mask is None else mask.expand(shape)
    w = None if weight is None else weight.expand(shape)
    if _kernels([pred]):
        m = None if m is None else m.contiguous()
        w = None if w is None else w.contiguous()
        value, d, denom = k_pointwise_value(kind, reduction, pred.contiguous(), target.contiguous(), m, w, with_dir)
        if d is None:
            d = pred.new_empty((0,), dtype=loss_compute_dtype(pred.dtype))
        return value, d, torch.scalar_tensor(denom, dtype=torch.float64)
    value = ref.pointwise_loss(kind, pred, target, m, w, reduction).to(pred.dtype)
    if reduction == "none":
        value = value.contiguous()
    d = (
        _ref_loss_dir(kind, reduction, pred, target, m, w).contiguous()
        if with_dir
        else pred.new_empty((0,), dtype=loss_compute_dtype(pred.dtype))
    )
    dd = _loss_denom_dtype(pred)
    denom = m.to(dd).sum() if m is not None else torch.scalar_tensor(float(pred.numel()), dtype=dd, device=pred.device)
    return value, d, denom


@pointwise_loss.register_fake
def _(pred, target, mask, weight, kind, reduction, with_dir, fn):
    value = pred.new_empty(pred.shape) if reduction == "none" else pred.new_empty(())
    d = pred.new_empty(pred.shape if with_dir else (0,), dtype=loss_compute_dtype(pred.dtype))
    return value, d, pred.new_empty((), dtype=_loss_denom_dtype(pred))


def _pointwise_loss_setup(ctx, inputs, output) -> None:
    pred, target, mask, weight, kind, reduction, with_dir, fn = inputs
    _, d, denom = output
    ctx.kind, ctx.reduction = kind, reduction
    ctx.set_materialize_grads(False)  # dir and denom are never used downstream
    ctx.save_for_backward(pred, target, mask, weight, d, denom)


def _pointwise_loss_bwd(ctx, grad_value, grad_dir, grad_denom):
    pred, target, mask, weight, d, denom = ctx.saved_tensors
    need_p, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    none = (None,) * 6
    if grad_value is None or not (need_p or need_t):
        return (None, None) + none
    if torch.is_grad_enabled():  # create_graph / torch.func: the differentiable reference
        inputs = [x for x, n in ((pred, need_p), (target, need_t)) if n]
        shape = pred.shape
        m = None if mask is None else mask.expand(shape)
        w = None if weight is None else weight.expand(shape)
        value = ref.pointwise_loss(ctx.kind, pred, target, m, w, ctx.reduction).to(pred.dtype)
        grads = iter(torch.autograd.grad(value, inputs, grad_value, create_graph=True))
        return (next(grads) if need_p else None, next(grads) if need_t else None) + none
    gp, gt = torch.ops.normreg.pointwise_loss_backward(
        d, pred, grad_value, denom, ctx.reduction, mask is not None, need_p, need_t
    )
    return (gp if need_p else None, gt if need_t else None) + none


pointwise_loss.register_autograd(_pointwise_loss_bwd, setup_context=_pointwise_loss_setup)


@torch.library.custom_op("normreg::pointwise_loss_backward", mutates_args=())
def pointwise_loss_backward(
    dir: Tensor,
    pred: Tensor,
    grad_value: Tensor,
    denom: Tensor,
    reduction: str,
    masked: bool,
    need_pred: bool,
    need_target: bool,
) -> tuple[Tensor, Tensor]:
    """``(grad_pred, grad_target)`` = ``(dir * k) * [grad_value]`` and its negative, as new
    tensors in pred's dtype (an unneeded one is empty); k as :func:`loss_scale`."""
    if dir.numel() != pred.numel():
        raise RuntimeError("normreg::pointwise_loss_backward: the forward ran without with_dir=True")
    empty = pred.new_empty((0,))
    if _kernels([pred]):
        go, k = loss_scale(reduction, masked, grad_value, float(denom), pred.dtype)
        gp = torch.empty(pred.shape, dtype=pred.dtype) if need_pred else None
        gt = torch.empty(pred.shape, dtype=pred.dtype) if need_target else None
        if gp is not None or gt is not None:
            k_pointwise_grad_scale(dir, go, k, gp, gt, pred)
        return (gp if gp is not None else empty), (gt if gt is not None else empty)
    c = dir.dtype
    if reduction == "none":
        g = dir * grad_value.to(c)
    else:
        k = grad_value.to(c)
        if reduction == "mean" and masked:
            k = (grad_value.to(denom.dtype) / denom).to(c)
        g = dir * k
    gp = g.to(pred.dtype) if need_pred else empty
    gt = (-g).to(pred.dtype) if need_target else empty
    return gp, gt


@pointwise_loss_backward.register_fake
def _(dir, pred, grad_value, denom, reduction, masked, need_pred, need_target):
    def one(need):
        return pred.new_empty(pred.shape) if need else pred.new_empty((0,))

    return one(need_pred), one(need_target)


# ---- optimizer update passes (normreg.optim: ProxSGD, ProxAdam, ProxAdamW) -------------------
#
# One fused pass per param group: the torch.optim update (momentum / moments written in place)
# then the elementwise prox (prox_kind 1: elastic-net shrink at prox_a, ridge prox_b; 2: exact
# L0 at prox_a; 3: no prox, the affine penalty's gradient prox_a sign(w) + prox_b w added to
# the gradient first; 0: none). Each returns the zeros per param after the step. The state
# tensors (momentum buffers, moments) pair element by element with their params (same shape,
# dtype, device, memory order). The optimizers call `k_sgd_step` / `k_adam_step` on the direct
# path (then bump what they wrote) and the operators otherwise.


def _state_list(tl, tensors: list[Tensor], arg: str):
    """A state list checked against its params (shape, dtype, device, layout), written in place."""
    return paired(tl, tensors, arg, inplace=True)


def _no_state_overlap(*lists) -> None:
    """Params and state written by one step must not share memory with each other."""
    ts = [t for lst in lists for t in lst]
    check_overlap(ts, [t.data_ptr() for t in ts], [t.numel() for t in ts], "params and optimizer state")


def k_sgd_step(tl, gl, bufs: list[Tensor], init: list[bool], lr: float, momentum: float, dampening: float,
               weight_decay: float, nesterov: bool, maximize: bool, kind: int, a: float, b: float) -> list[int]:
    """One fused SGD pass of the kernels over checked CPU lists (bufs: [] without momentum)."""
    return _C.sgd_step(
        tl.ptrs, tl.numels, tl.dtypes, gl.ptrs, list(map(Tensor.data_ptr, bufs)), init,
        lr, momentum, dampening, weight_decay, nesterov, maximize, kind, a, b,
    )  # fmt: skip


@torch.library.custom_op("normreg::sgd_step_", mutates_args=("params", "momentum_buffers"))
def _sgd_step_op(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor],
    init: list[bool],
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    prox_kind: int,
    prox_a: float,
    prox_b: float,
) -> Tensor:
    """torch.optim.SGD's step then the fused prox. ``momentum_buffers``: one per param with
    momentum (``init[i]``: the buffer is new and takes the gradient), ``[]`` without."""
    if momentum and len(momentum_buffers) != len(params):
        raise ValueError(f"'momentum_buffers' must have one tensor per param with momentum, got {len(momentum_buffers)}")
    kern = _kernels(params)
    tl = tensor_list(params, inplace=True, direct=kern)  # the reference: the checks without pointers
    gl = paired(tl, grads, "grads", inplace=False)
    bufs = _state_list(tl, momentum_buffers, "momentum_buffers").tensors if momentum else []
    _no_state_overlap(params, bufs)
    if kern:
        z = k_sgd_step(tl, gl, bufs, list(init) if momentum else [], lr, momentum, dampening, weight_decay,
                       nesterov, maximize, prox_kind, prox_a, prox_b)  # fmt: skip
        return _counts(z, params)
    return ref.sgd_step_(
        params, gl.tensors, list(bufs), lr=lr, momentum=momentum, dampening=dampening,
        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize, prox_kind=prox_kind,
        prox_a=prox_a, prox_b=prox_b, init=list(init) if momentum else None,
    ).to(params[0].device)  # fmt: skip


def k_adam_step(tl, gl, ms: list[Tensor], vs: list[Tensor], vmax: list[Tensor], steps: list[float], lr: float,
                beta1: float, beta2: float, eps: float, weight_decay: float, decoupled: bool, maximize: bool,
                amsgrad: bool, kind: int, a: float, b: float, pre: bool) -> list[int]:
    """One fused Adam / AdamW pass of the kernels (``steps``: the counts after this step)."""
    step_size, bc2s = ref.adam_scalars(steps, lr, beta1, beta2)
    return _C.adam_step(
        tl.ptrs, tl.numels, tl.dtypes, gl.ptrs, list(map(Tensor.data_ptr, ms)), list(map(Tensor.data_ptr, vs)),
        list(map(Tensor.data_ptr, vmax)), step_size, bc2s, lr, beta1, beta2, eps, weight_decay, decoupled,
        maximize, amsgrad, kind, a, b, pre,
    )  # fmt: skip


@torch.library.custom_op(
    "normreg::adam_step_", mutates_args=("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs")
)
def _adam_step_op(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    steps: Tensor,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
    maximize: bool,
    amsgrad: bool,
    prox_kind: int,
    prox_a: float,
    prox_b: float,
    preconditioned: bool,
) -> Tensor:
    """torch.optim.Adam / AdamW's step then the fused (optionally preconditioned) prox.
    ``steps``: each param's step count after this step (1-D, any float dtype; a tensor so
    that torch.compile does not specialize on it); ``max_exp_avg_sqs``: ``[]`` without amsgrad."""
    if steps.numel() != len(params) or (amsgrad and len(max_exp_avg_sqs) != len(params)):
        raise ValueError("normreg::adam_step_: 'steps' (and with amsgrad 'max_exp_avg_sqs') need one entry per param")
    counts = [float(s) for s in steps.tolist()]
    vmax = list(max_exp_avg_sqs) if amsgrad else []
    kern = _kernels(params)
    tl = tensor_list(params, inplace=True, direct=kern)  # the reference: the checks without pointers
    gl = paired(tl, grads, "grads", inplace=False)
    ms = _state_list(tl, exp_avgs, "exp_avgs").tensors
    vs = _state_list(tl, exp_avg_sqs, "exp_avg_sqs").tensors
    vm = _state_list(tl, vmax, "max_exp_avg_sqs").tensors if amsgrad else []
    _no_state_overlap(params, ms, vs, vm)
    if kern:
        z = k_adam_step(tl, gl, ms, vs, vm, counts, lr, beta1, beta2, eps, weight_decay, decoupled, maximize,
                        amsgrad, prox_kind, prox_a, prox_b, preconditioned)  # fmt: skip
        return _counts(z, params)
    return ref.adam_step_(
        params, gl.tensors, ms, vs, vm, counts, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
        weight_decay=weight_decay, decoupled=decoupled, maximize=maximize, amsgrad=amsgrad,
        prox_kind=prox_kind, prox_a=prox_a, prox_b=prox_b, preconditioned=preconditioned,
    ).to(params[0].device)  # fmt: skip


_sgd_step_op.register_fake(_fake_counts)
_adam_step_op.register_fake(_fake_counts)


def sgd_step(tl, gl, bufs: list[Tensor], init: list[bool], lr: float, momentum: float, dampening: float,
             weight_decay: float, nesterov: bool, maximize: bool, kind: int, a: float, b: float):
    """Zeros per param after one SGD pass: the direct path (kernels, then every tensor written
    bumped; a list of ints) or the operator (an int64 tensor)."""
    if tl.on_cpu:
        z = k_sgd_step(tl, gl, bufs, init, lr, momentum, dampening, weight_decay, nesterov, maximize, kind, a, b)
        bump(list(tl.tensors) + bufs)
        return z
    return _sgd_step_op(tl.tensors, gl.tensors, bufs, init, lr, momentum, dampening, weight_decay, nesterov,
                        maximize, kind, a, b)  # fmt: skip


def adam_step(tl, gl, ms: list[Tensor], vs: list[Tensor], vmax: list[Tensor], steps, lr: float, beta1: float,
              beta2: float, eps: float, weight_decay: float, decoupled: bool, maximize: bool, amsgrad: bool,
              kind: int, a: float, b: float, pre: bool):
    """Zeros per param after one Adam pass (``steps``: floats on the direct path, else a 1-D
    tensor); direct path or operator as :func:`sgd_step`."""
    if tl.on_cpu:
        z = k_adam_step(tl, gl, ms, vs, vmax, steps, lr, beta1, beta2, eps, weight_decay, decoupled, maximize,
                        amsgrad, kind, a, b, pre)  # fmt: skip
        bump(list(tl.tensors) + ms + vs + vmax)
        return z
    if not isinstance(steps, Tensor):
        steps = torch.tensor(steps, dtype=torch.float64)
    return _adam_step_op(tl.tensors, gl.tensors, ms, vs, vmax, steps, lr, beta1, beta2, eps, weight_decay,
                         decoupled, maximize, amsgrad, kind, a, b, pre)  # fmt: skip


# ---- total variation (normreg.losses.total_variation) -----------------------------------------
#
# normreg::total_variation: the value of a contiguous NCHW batch (0-dim, or (N,) for "none",
# in the images' dtype, accumulated in float64); its backward normreg::total_variation_backward
# writes the gradient in one pass. The eager direct path (normreg.losses._TotalVariation) calls
# the same helpers below, so the two are bitwise equal.


def k_tv_value(kind: str, reduction: str, eps: float, images: Tensor) -> Tensor:
    """The kernels' total variation of a contiguous CPU batch."""
    (p,) = _loss_ptrs(images)
    per = _C.tv_value(kind, p, list(images.shape), DTYPE_CODES[images.dtype], eps)
    if reduction == "none":
        return torch.tensor(per, dtype=torch.float64).to(images.dtype)
    total = sum(per)  # image order: deterministic
    return torch.tensor(
        total if reduction == "sum" else loss_divide(total, float(images.numel())), dtype=images.dtype
    )


def k_tv_grad(kind: str, reduction: str, eps: float, images: Tensor, grad_value: Tensor) -> Tensor:
    """The kernels' gradient of the total variation, scaled by the incoming gradient."""
    n = images.shape[0]
    if reduction == "none":
        scale = grad_value.to(torch.float64).tolist()
    else:
        s = float(grad_value)
        if reduction == "mean":
            s = loss_divide(s, float(images.numel()))
        scale = [s] * n
    grad = torch.empty_like(images, memory_format=torch.contiguous_format)
    p, g = _loss_ptrs(images, grad)
    _C.tv_grad(kind, p, g, list(images.shape), DTYPE_CODES[images.dtype], eps, scale)
    return grad


@torch.library.custom_op("normreg::total_variation", mutates_args=())
def total_variation(images: Tensor, kind: str, reduction: str, eps: float) -> Tensor:
    """Total variation of an NCHW batch (checked by normreg.losses.total_variation)."""
    if _kernels([images]):
        return k_tv_value(kind, reduction, eps, images.contiguous())
    return ref.total_variation(images, kind, reduction, eps).to(images.dtype)


@total_variation.register_fake
def _(images, kind, reduction, eps):
    return images.new_empty((images.shape[0],) if reduction == "none" else ())


def _tv_setup(ctx, inputs, output) -> None:
    images, kind, reduction, eps = inputs
    ctx.spec = (kind, reduction, eps)
    ctx.save_for_backward(images)


def _tv_bwd(ctx, grad_value):
    (images,) = ctx.saved_tensors
    kind, reduction, eps = ctx.spec
    if torch.is_grad_enabled():  # create_graph: the differentiable reference
        value = ref.total_variation(images, kind, reduction, eps).to(images.dtype)
        (g,) = torch.autograd.grad(value, [images], grad_value, create_graph=True)
        return g, None, None, None
    return torch.ops.normreg.total_variation_backward(images, grad_value, kind, reduction, eps), None, None, None


total_variation.register_autograd(_tv_bwd, setup_context=_tv_setup)


@torch.library.custom_op("normreg::total_variation_backward", mutates_args=())
def total_variation_backward(images: Tensor, grad_value: Tensor, kind: str, reduction: str, eps: float) -> Tensor:
    """The gradient of ``total_variation`` times ``grad_value`` (0-dim, or (N,) for "none")."""
    if _kernels([images]):
        return k_tv_grad(kind, reduction, eps, images.contiguous(), grad_value)
    return ref.total_variation_grad(images, kind, reduction, eps, grad_value).to(images.dtype).contiguous()


@total_variation_backward.register_fake
def _(images, grad_value, kind, reduction, eps):
    return torch.empty_like(images, memory_format=torch.contiguous_format)
