"""The image losses' operators: ``normreg::pointwise_loss`` (l1_loss / mse_loss) and
``normreg::total_variation``, each with its backward operator."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import _reference as ref
from .._bridge import DTYPE_CODES, pair_ptrs, plain_ptrs
from .._loader import _C
from ._core import _kernels, value_tensor

# ---- image losses: l1_loss / mse_loss (normreg.losses) ---------------------------------------
#
# normreg::pointwise_loss computes the reduced (or elementwise) loss and, with `with_dir`, in
# the same pass the gradient for an incoming gradient of 1 ("dir", in the compute type), and
# the "mean" denominator (float64). Its backward scales dir by the incoming gradient
# (normreg::pointwise_loss_backward). The eager direct path (normreg.losses.pointwise)
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


def k_pointwise_value(kind: str, reduction: str, pred: Tensor, target: Tensor, mask, weight, want_dir: bool):
    """One kernel pass over contiguous CPU tensors (mask / weight expanded to pred's shape):
    ``(value, dir, denom)``: the 0-dim loss in pred's dtype or the elementwise loss ("none");
    with ``want_dir`` the gradient for an incoming gradient of 1 (still to be divided by the
    mask's sum for a masked mean) in the compute type, else None; the "mean" denominator."""
    out = torch.empty_like(pred, memory_format=torch.contiguous_format) if reduction == "none" else None
    c = loss_compute_dtype(pred.dtype)
    d = (
        (torch.empty_like(pred) if c is pred.dtype else torch.empty(pred.shape, dtype=c))
        if want_dir
        else None
    )
    p, t, m, w, o, u = plain_ptrs(pred, pred, target, mask, weight, out, d)
    ds = loss_dir_scale(reduction, mask is not None, pred.numel())
    total, msum = _C.pointwise_loss_value(kind, p, t, m, w, o, u, pred.numel(), _dtype_code(pred), ds)
    denom = msum if mask is not None else float(pred.numel())
    if out is not None:
        return out, d, denom
    return value_tensor(total if reduction == "sum" else loss_divide(total, denom), pred.dtype), d, denom


def k_pointwise_plain(kind: str, reduction: str, pred: Tensor, target: Tensor, want_dir: bool):
    """:func:`k_pointwise_value` for the common case, ``(value, dir or None)``: pred and target
    accepted by :func:`normreg._bridge.plain_pair` (plain contiguous float32/float64 CPU tensors
    of one dtype and shape: :func:`normreg._bridge.pair_ptrs`), no mask or
    weights, reduction "mean" or "sum". The same kernel call, the same result bitwise."""
    n = pred.numel()
    d = torch.empty_like(pred) if want_dir else None
    mean = reduction == "mean"
    p, t, u = pair_ptrs(pred, target, d)
    total, _ = _C.pointwise_loss_value(
        kind, p, t, 0, 0, 0, u, n, DTYPE_CODES[pred.dtype], 1.0 / n if mean and n else 1.0
    )
    return value_tensor(loss_divide(total, float(n)) if mean else total, pred.dtype), d


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
    u, g, pg, tg = plain_ptrs(like, dir_, go, gp, gt)
    _C.pointwise_loss_grad_scale(u, g, pg, tg, like.numel(), _dtype_code(like), k)


def k_pointwise_grad(kind, reduction, pred, target, mask, weight, go, k: float, gp, gt) -> None:
    """The same gradient recomputed from pred and target (same operations, same order)."""
    first, second, s = (gp, gt, k) if gp is not None else (gt, None, -k)  # only the target: -grad
    ds = loss_dir_scale(reduction, mask is not None, pred.numel())
    p, t, m, w, g, pg, tg = plain_ptrs(pred, pred, target, mask, weight, go, first, second)
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
        value, d, denom = k_pointwise_value(
            kind, reduction, pred.contiguous(), target.contiguous(), m, w, with_dir
        )
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
    denom = (
        m.to(dd).sum()
        if m is not None
        else torch.scalar_tensor(float(pred.numel()), dtype=dd, device=pred.device)
    )
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


# ---- total variation (normreg.losses.total_variation) -----------------------------------------
#
# normreg::total_variation: the value of a contiguous NCHW batch (0-dim, or (N,) for "none",
# in the images' dtype, accumulated in float64); its backward normreg::total_variation_backward
# writes the gradient in one pass. The eager direct path (normreg.losses.tv._TotalVariation) calls
# the same helpers below, so the two are bitwise equal.


def k_tv_value(kind: str, reduction: str, eps: float, images: Tensor) -> Tensor:
    """The kernels' total variation of a contiguous CPU batch."""
    (p,) = plain_ptrs(images, images)
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
    p, g = plain_ptrs(images, images, grad)
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
    return (
        torch.ops.normreg.total_variation_backward(images, grad_value, kind, reduction, eps),
        None,
        None,
        None,
    )


total_variation.register_autograd(_tv_bwd, setup_context=_tv_setup)


@torch.library.custom_op("normreg::total_variation_backward", mutates_args=())
def total_variation_backward(
    images: Tensor, grad_value: Tensor, kind: str, reduction: str, eps: float
) -> Tensor:
    """The gradient of ``total_variation`` times ``grad_value`` (0-dim, or (N,) for "none")."""
    if _kernels([images]):
        return k_tv_grad(kind, reduction, eps, images.contiguous(), grad_value)
    return ref.total_variation_grad(images, kind, reduction, eps, grad_value).to(images.dtype).contiguous()


@total_variation_backward.register_fake
def _(images, grad_value, kind, reduction, eps):
    return torch.empty_like(images, memory_format=torch.contiguous_format)
