"""The pointwise reconstruction losses, ``l1_loss`` and ``mse_loss``: one fused pass forward
that also writes the gradient, a scaling pass (or none) backward."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _ops
from .. import _reference as ref
from .._bridge import plain_pair
from ._args import (
    _check_reduction,
    _factor,
    _loss_inputs,
)

_REDUCED = ("mean", "sum")


# ---- pointwise reconstruction losses --------------------------------------------------------


def _pointwise_grads(
    kind: str,
    reduction: str,
    pred: Tensor,
    target: Tensor,
    mask,
    weight,
    go,
    k: float,
    need_p: bool,
    need_t: bool,
    dir_: Tensor | None,
):
    """``(grad_pred, grad_target)`` = ``(dir * k) * [go]`` and its negative, in one pass.

    With the forward's ``dir`` the pass reads only dir (and go); when dir has pred's dtype it
    is grad_pred itself, scaled in place, or returned as it is when ``k == 1`` and there is
    no ``go`` (dir is used once). Without it, the pass recomputes dir from pred and target
    with the same operations in the same order: the results are bitwise equal.
    """
    gt = torch.empty_like(target) if need_t else None
    if dir_ is None:
        gp = torch.empty_like(pred) if need_p else None
        _ops.k_pointwise_grad(kind, reduction, pred, target, mask, weight, go, k, gp, gt)
        return gp, gt
    if dir_.dtype == pred.dtype:  # float32 / float64: the gradient is dir, scaled in place
        gp = dir_ if need_p else None
        write = gp if (k != 1.0 or go is not None) else None
    else:  # bf16 / f16: dir is float32, rounded once into a new tensor of pred's dtype
        gp = write = torch.empty_like(pred) if need_p else None
    if write is not None or gt is not None:
        _ops.k_pointwise_grad_scale(dir_, go, k, write, gt, pred)
    return gp, gt


def _loss_function(kind: str, reduction: str, plain: bool) -> type[torch.autograd.Function]:
    """The eager direct path's autograd Function of one loss and reduction.

    The forward writes the gradient for an incoming gradient of 1 in its one pass over pred
    and target (``ctx.dir``); the first backward returns it as it is (incoming gradient 1,
    float32/float64) or scales it in one pass. A second backward of a retained graph
    recomputes it from the saved pred and target, bitwise equal. Double backward
    (``create_graph=True``) goes through the differentiable reference.

    One class per (kind, reduction), with mask and weight as optional trailing inputs, and
    one per (kind, "mean" / "sum") for ``plain`` pairs (:func:`normreg._bridge.plain_pair`,
    no mask or weights) whose forward is :func:`normreg._ops.k_pointwise_plain`: each input
    of ``apply`` and each check costs a fraction of a microsecond, and a 32x3x64x64 batch's
    whole forward + backward is about 50 us. (A forward that takes ``ctx`` costs a fifth of the
    setup_context form per call; this Function is only the eager path, torch.func and
    compile do not reach it.)
    """

    def forward(ctx, pred: Tensor, target: Tensor, mask=None, weight=None):
        value, ctx.dir, ctx.denom = _ops.k_pointwise_value(kind, reduction, pred, target, mask, weight, True)
        ctx.save_for_backward(pred, target, mask, weight)
        return value

    def forward_plain(ctx, pred: Tensor, target: Tensor):
        value, ctx.dir = _ops.k_pointwise_plain(kind, reduction, pred, target, True)
        ctx.denom = float(pred.numel())
        ctx.save_for_backward(pred, target)
        return value

    def backward(ctx, grad_value: Tensor):
        dir_ = ctx.dir
        if plain and dir_ is not None and not ctx.needs_input_grad[1] and not torch.is_grad_enabled():
            # the common first backward, the general one below in fewer steps: dir is the gradient
            ctx.saved_tensors  # noqa: B018  unpacking checks versions: a stale graph raises, as torch's do
            ctx.dir = None
            k = float(grad_value)
            if k != 1.0:
                _ops.k_pointwise_grad_scale(dir_, None, k, dir_, None, dir_)
            return dir_, None
        pred, target, *factors = ctx.saved_tensors
        mask, weight = factors or (None, None)
        need = ctx.needs_input_grad
        need_p, need_t = need[0], need[1]
        if torch.is_grad_enabled():  # create_graph=True: stay differentiable through the reference
            inputs = [x for x, n in ((pred, need_p), (target, need_t)) if n]
            value = ref.pointwise_loss(kind, pred, target, mask, weight, reduction).to(pred.dtype)
            grads = iter(torch.autograd.grad(value, inputs, grad_value, create_graph=True))
            return (next(grads) if need_p else None, next(grads) if need_t else None) + (None,) * (
                len(need) - 2
            )
        go, k = _ops.loss_scale(reduction, mask is not None, grad_value, ctx.denom, pred.dtype)
        ctx.dir = None  # used once: a retained graph's next backward recomputes
        gp, gt = _pointwise_grads(kind, reduction, pred, target, mask, weight, go, k, need_p, need_t, dir_)
        return (gp, gt) + (None,) * (len(need) - 2)

    name = f"_{kind.upper()}Loss{reduction.title()}{'Plain' if plain else ''}"
    body = {
        "forward": staticmethod(forward_plain if plain else forward),
        "backward": staticmethod(backward),
        "__doc__": _loss_function.__doc__,
    }
    return type(name, (torch.autograd.Function,), {"__module__": __name__, "__qualname__": name, **body})


_LOSS_FUNCTIONS = {
    (k, r): _loss_function(k, r, False) for k in ("l1", "mse") for r in ("mean", "sum", "none")
}
_PLAIN_FUNCTIONS = {(k, r): _loss_function(k, r, True) for k in ("l1", "mse") for r in ("mean", "sum")}


def _direct_apply(fn: type[torch.autograd.Function]):
    """``fn.apply`` for the direct path, without the Python steps of
    ``autograd.Function.apply`` that cannot apply there (binding defaults for a
    ``setup_context``, which these Functions do not define; the functorch branch: the direct
    path runs only when no transform is active, see :func:`normreg._ops.direct_ok`). What
    ``apply`` does in that case is kept: dead functorch wrappers are unwrapped, then the C
    ``apply``. About 1 us of a 45 us forward + backward. Falls back to ``fn.apply`` where
    torch lacks either private entry point."""
    raw = getattr(torch._C, "_FunctionBase", None)
    unwrap = getattr(getattr(torch._C, "_functorch", None), "unwrap_if_dead", None)
    if raw is None or unwrap is None or "apply" not in vars(raw):
        return fn.apply
    c_apply = vars(raw)["apply"].__get__(None, fn)

    def apply(pred: Tensor, target: Tensor) -> Tensor:
        return c_apply(unwrap(pred), unwrap(target))

    return apply


_PLAIN_APPLY = {key: _direct_apply(fn) for key, fn in _PLAIN_FUNCTIONS.items()}


def _pointwise(kind: str, fn: str, pred, target, mask, weight, reduction) -> Tensor:
    if (
        mask is None
        and weight is None
        and reduction in _REDUCED
        and plain_pair(pred, target)
        and _ops.direct_ok()
    ):
        # the common case, checked in one test: float32/float64 batches of one dtype and shape,
        # contiguous on the CPU, no mask or weights (autocast keeps these dtypes as they are)
        if torch.is_grad_enabled() and (pred.requires_grad or target.requires_grad):
            return _PLAIN_APPLY[kind, reduction](pred, target)
        return _ops.k_pointwise_plain(kind, reduction, pred, target, False)[0]
    pred, target = _loss_inputs(pred, target, fn)
    _check_reduction(reduction, fn)
    m = _factor(mask, "mask", pred, fn)
    w = _factor(weight, "weight", pred, fn)
    # a bool mask converts to 0 and 1: only float factors need their values checked (after
    # the conversion: a float64 1e300 is Inf in float32). The check reads the whole tensor.
    m_check = None if mask is None or mask.dtype == torch.bool else m
    if any(x is not None and x.requires_grad for x in (m, w)) or _ops.functorch_active():
        # gradients for the mask / weights, or torch.func: the differentiable reference
        _ops.check_loss_factor(m_check, "mask", fn)
        _ops.check_loss_factor(w, "weight", fn)
        return ref.pointwise_loss(kind, pred, target, m, w, reduction).to(pred.dtype)
    want = torch.is_grad_enabled() and (pred.requires_grad or target.requires_grad)
    if not (pred.is_cpu and _ops.direct_ok()):  # other devices, compile, forced: the operator
        return torch.ops.normreg.pointwise_loss(pred, target, m, w, kind, reduction, want, fn)[0]
    # the direct path: the same checks and kernels as the operator's CPU implementation
    _ops.check_loss_factor(m_check, "mask", fn)
    _ops.check_loss_factor(w, "weight", fn)
    shape = pred.shape
    if m is not None:
        m = m.expand(shape).contiguous()
    if w is not None:
        w = w.expand(shape).contiguous()
    pred, target = pred.contiguous(), target.contiguous()
    if want:
        return _LOSS_FUNCTIONS[kind, reduction].apply(pred, target, m, w)
    return _ops.k_pointwise_value(kind, reduction, pred, target, m, w, False)[0]


def l1_loss(
    pred: Tensor,
    target: Tensor,
    *,
    mask: Tensor | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """L1 reconstruction loss ``[mask] [weight] |pred - target|``, fused.

    Same values and gradients as :func:`torch.nn.functional.l1_loss` (subgradient 0 where
    ``pred == target``), computed in one pass that never materializes ``pred - target``.
    When pred (or target) requires grad, that pass also writes the derivative, and the
    backward only scales it (and writes the target's gradient, its negative, if the target
    requires grad).

    Parameters
    ----------
    pred, target : Tensor
        Same shape and device; float32, float64, bfloat16 or float16. Different dtypes are
        promoted as torch promotes them (bf16 with float32 computes in float32). Under
        ``torch.autocast`` torch's float32 policy for ``F.l1_loss`` applies: computed and
        returned in float32 (float64 when an input is float64).
    mask : Tensor, optional, keyword-only
        Bool or float, broadcastable to ``pred`` (e.g. ``(N, 1, H, W)`` for an NCHW batch).
        Only elements where it is nonzero count (inpainting: the hidden region); a float
        mask weights the elements. Finite and >= 0; converted to the computation dtype.
    weight : Tensor, optional, keyword-only
        Per-element weights broadcastable to ``pred``, finite and >= 0 (else ValueError);
        converted to the computation dtype.
    reduction : {"mean", "sum", "none"}, keyword-only
        "sum": ``sum [m] [w] |pred - target|`` -- the sources' ``lambda * sum |G(x) - y|``
        is ``lam * l1_loss(fake, real, reduction="sum")``. "mean" (default): that sum
        divided by ``mask.expand_as(pred).sum()`` when a mask is given (the number of
        counted elements for a 0/1 mask), else by ``pred.numel()``; weights never enter
        the denominator. pix2pix's ``lambda = 100`` is meant with "mean". "none": the
        elementwise tensor, shape of ``pred``.

    Returns
    -------
    Tensor
        0-dim in the computation dtype ("mean", "sum"; accumulated in float64 and rounded
        once), or pred's shape ("none"). "mean" over an empty tensor or an all-zero mask is NaN.

    Notes
    -----
    ``mask`` and ``weight`` are constants for the kernels; if either requires grad, the
    call goes through the differentiable pure-torch reference so gradients reach them.
    NaN in ``pred`` or ``target`` gives NaN, even where the mask is 0 (``0 * NaN``).
    """
    return _pointwise("l1", "l1_loss", pred, target, mask, weight, reduction)


def mse_loss(
    pred: Tensor,
    target: Tensor,
    *,
    mask: Tensor | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Squared-L2 reconstruction loss ``[mask] [weight] (pred - target)**2``, fused.

    Same values and gradients as :func:`torch.nn.functional.mse_loss`; one pass forward
    (which also writes the derivative when an input requires grad), one scaling pass
    backward, ``pred - target`` never materialized.

    Parameters
    ----------
    pred, target : Tensor
        Same shape and device; dtypes promoted, and autocast followed, as in :func:`l1_loss`.
    mask : Tensor, optional, keyword-only
        Bool or float, broadcastable to ``pred``, finite and >= 0; see :func:`l1_loss`.
    weight : Tensor, optional, keyword-only
        Per-element weights broadcastable to ``pred``, finite and >= 0.
    reduction : {"mean", "sum", "none"}, keyword-only
        "sum" is the sources' ``sum ||G(x) - y||^2`` (no 1/2 factor, unlike
        ``normreg.SquaredL2``). "mean" divides by ``mask.expand_as(pred).sum()`` with a
        mask, else by ``pred.numel()``. "none": the elementwise tensor.

    Returns
    -------
    Tensor
        0-dim in the computation dtype, or pred's shape for "none".
    """
    return _pointwise("mse", "mse_loss", pred, target, mask, weight, reduction)
