"""Image-space losses: fused L1 / squared-L2 reconstruction, total variation, SSIM.

The sources add a norm term on the generated image itself to the generator's loss,
``lambda * sum |G(x) - y|`` (L1, sharper) or ``lambda * sum ||G(x) - y||^2`` (L2):

>>> loss_g = adv_loss + lam * normreg.losses.l1_loss(fake, real, reduction="sum")  # the sources' sum form
>>> loss_g = adv_loss + 100 * normreg.losses.l1_loss(fake, real)  # pix2pix: lambda = 100 with "mean"

The sum form is ``reduction="sum"``; the usual pix2pix ``lambda = 100`` refers to
``reduction="mean"`` (the default, as in ``torch.nn.functional.l1_loss``). The two differ by
a factor of ``pred.numel()``: ``lambda`` with "sum" equals ``lambda * numel`` with "mean".

CPU tensors go through the fused C++ kernels (one pass for the value, one for the
gradient, nothing materialized in between); tensors on other devices, and masks or weights
that require grad, go through the pure-torch reference (:mod:`normreg._reference`) with the
same semantics.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import _reference as ref
from ._bridge import DTYPE_CODES, tensor_list
from ._loader import _C

__all__ = ["l1_loss", "mse_loss", "total_variation", "ssim_loss"]

_REDUCTIONS = ("mean", "sum", "none")
_TV_KINDS = ("anisotropic", "isotropic")
_SUPPORTED = "float32, float64, bfloat16 or float16"


# ---- argument checks (all before anything is computed) ------------------------------------


def _check_tensor(x, arg: str, fn: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: '{arg}' must be a torch.Tensor, got {type(x).__name__}")


def _check_float(x: Tensor, arg: str, fn: str) -> None:
    if x.dtype not in DTYPE_CODES:
        raise TypeError(
            f"{fn}: '{arg}' has dtype {x.dtype}; use a {_SUPPORTED} tensor (convert with .float())"
        )


def _check_reduction(reduction, fn: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{fn}: 'reduction' must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_pair(pred, target, fn: str) -> None:
    _check_tensor(pred, "pred", fn)
    _check_tensor(target, "target", fn)
    _check_float(pred, "pred", fn)
    if target.dtype != pred.dtype:
        raise TypeError(
            f"{fn}: 'target' has dtype {target.dtype} but 'pred' has {pred.dtype}; "
            "they must match (convert with target.to(pred.dtype))"
        )
    if target.device != pred.device:
        raise ValueError(
            f"{fn}: 'target' is on {target.device} but 'pred' is on {pred.device}; "
            "move both to one device (target.to(pred.device))"
        )
    if target.shape != pred.shape:
        raise ValueError(
            f"{fn}: 'target' has shape {tuple(target.shape)} but 'pred' has shape {tuple(pred.shape)}; "
            "they must match (no implicit broadcasting: use target.expand_as(pred) if you mean it)"
        )


def _factor(x, arg: str, pred: Tensor, fn: str) -> Tensor | None:
    """A mask or weight: a bool or float tensor on pred's device that broadcasts to pred."""
    if x is None:
        return None
    _check_tensor(x, arg, fn)
    if not (x.dtype == torch.bool or x.is_floating_point()):
        raise TypeError(f"{fn}: '{arg}' has dtype {x.dtype}; use a bool or floating-point tensor")
    if x.device != pred.device:
        raise ValueError(
            f"{fn}: '{arg}' is on {x.device} but 'pred' is on {pred.device}; move it with .to(pred.device)"
        )
    try:
        shape = torch.broadcast_shapes(x.shape, pred.shape)
    except RuntimeError:
        shape = None
    if shape != pred.shape:
        raise ValueError(
            f"{fn}: '{arg}' of shape {tuple(x.shape)} does not broadcast to pred's shape {tuple(pred.shape)}; "
            "give it pred's shape or size-1 dims where it repeats (e.g. (N, 1, H, W) for an NCHW batch)"
        )
    return x.to(pred.dtype)


def _ptrs(*tensors: Tensor | None) -> list[int]:
    """Kernel pointers of contiguous CPU tensors through the bridge; 0 for an absent one."""
    present = [t for t in tensors if t is not None]
    ptrs = iter(tensor_list(present, "tensors").ptrs)
    return [0 if t is None else next(ptrs) for t in tensors]


# ---- pointwise reconstruction losses --------------------------------------------------------


def _divide(total: float, denom: float) -> float:
    """``total / denom`` with a float64 tensor's semantics: x/0 = +-inf, 0/0 = NaN."""
    if denom != 0:
        return total / denom
    if total != total or total == 0:
        return math.nan
    return math.copysign(math.inf, total) * math.copysign(1.0, denom)


class _Denominator:
    """Filled by the forward with the "mean" denominator; read by setup_context."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 1.0


def _pointwise_value(kind: str, reduction: str, pred: Tensor, target: Tensor, mask, weight, box) -> Tensor:
    """One kernel pass: the reduced value (0-dim, pred's dtype) or the elementwise loss."""
    out = torch.empty_like(pred, memory_format=torch.contiguous_format) if reduction == "none" else None
    p, t, m, w, o = _ptrs(pred, target, mask, weight, out)
    total, msum = _C.pointwise_loss_value(kind, p, t, m, w, o, pred.numel(), DTYPE_CODES[pred.dtype])
    denom = msum if mask is not None else float(pred.numel())
    if box is not None:
        box.value = denom
    if out is not None:
        return out
    return torch.tensor(total if reduction == "sum" else _divide(total, denom), dtype=pred.dtype)


class _PointwiseLoss(torch.autograd.Function):
    """Reduced (or elementwise) ``[m] [w] loss(pred - target)`` through the fused kernels.

    The last input, a :class:`_Denominator`, carries the "mean" denominator (the mask's sum)
    from the forward to the backward. Double backward (``create_graph=True``) goes through
    the differentiable reference.
    """

    @staticmethod
    def forward(kind: str, reduction: str, pred: Tensor, target: Tensor, mask, weight, box):  # type: ignore[override]
        return _pointwise_value(kind, reduction, pred, target, mask, weight, box)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        kind, reduction, pred, target, mask, weight, box = inputs
        ctx.kind, ctx.reduction, ctx.denom = kind, reduction, box.value
        ctx.save_for_backward(pred, target, mask, weight)

    @staticmethod
    def backward(ctx, grad_value: Tensor):  # type: ignore[override]
        pred, target, mask, weight = ctx.saved_tensors
        need_p, need_t = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        if torch.is_grad_enabled():  # create_graph=True: stay differentiable through the reference
            inputs = [x for x, n in ((pred, need_p), (target, need_t)) if n]
            value = ref.pointwise_loss(ctx.kind, pred, target, mask, weight, ctx.reduction).to(pred.dtype)
            grads = iter(torch.autograd.grad(value, inputs, grad_value, create_graph=True))
            return (
                None,
                None,
                next(grads) if need_p else None,
                next(grads) if need_t else None,
                None,
                None,
                None,
            )
        go = None
        if ctx.reduction == "none":
            go, scale = grad_value.to(pred.dtype).contiguous(), 1.0
        else:
            scale = float(grad_value)
            if ctx.reduction == "mean":
                scale = _divide(scale, ctx.denom)
        gp = torch.empty_like(pred) if need_p else None
        gt = torch.empty_like(target) if need_t else None
        if gp is None:  # only the target: its gradient is the negative, written directly
            gp, gt, scale = gt, None, -scale
        p, t, m, w, g, pg, tg = _ptrs(pred, target, mask, weight, go, gp, gt)
        _C.pointwise_loss_grad(ctx.kind, p, t, m, w, g, pg, tg, pred.numel(), DTYPE_CODES[pred.dtype], scale)
        if not need_p:
            return None, None, None, gp, None, None, None
        return None, None, gp, gt, None, None, None


def _pointwise(kind: str, fn: str, pred, target, mask, weight, reduction) -> Tensor:
    _check_pair(pred, target, fn)
    _check_reduction(reduction, fn)
    m = _factor(mask, "mask", pred, fn)
    w = _factor(weight, "weight", pred, fn)
    if not pred.is_cpu or any(x is not None and x.requires_grad for x in (m, w)):
        return ref.pointwise_loss(kind, pred, target, m, w, reduction).to(pred.dtype)
    shape = pred.shape
    if m is not None:
        m = m.expand(shape).contiguous()
    if w is not None:
        w = w.expand(shape).contiguous()
    pred, target = pred.contiguous(), target.contiguous()
    if torch.is_grad_enabled() and (pred.requires_grad or target.requires_grad):
        return _PointwiseLoss.apply(kind, reduction, pred, target, m, w, _Denominator())
    return _pointwise_value(kind, reduction, pred, target, m, w, None)


def l1_loss(
    pred: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """L1 reconstruction loss ``[mask] [weight] |pred - target|``, fused.

    Same values and gradients as :func:`torch.nn.functional.l1_loss` (subgradient 0 where
    ``pred == target``), computed in one pass that never materializes ``pred - target``;
    the backward pass writes the gradient (and the target's, its negative, if the target
    requires grad) in one pass.

    Parameters
    ----------
    pred, target : Tensor
        Same shape, dtype (float32, float64, bfloat16, float16) and device.
    mask : Tensor, optional
        Bool or float, broadcastable to ``pred`` (e.g. ``(N, 1, H, W)`` for an NCHW batch).
        Only elements where it is nonzero count (inpainting: the hidden region); a float
        mask weights the elements. Converted to ``pred.dtype``.
    weight : Tensor, optional
        Per-element weights broadcastable to ``pred``; converted to ``pred.dtype``.
    reduction : {"mean", "sum", "none"}
        "sum": ``sum [m] [w] |pred - target|`` -- the sources' ``lambda * sum |G(x) - y|``
        is ``lam * l1_loss(fake, real, reduction="sum")``. "mean" (default): that sum
        divided by ``mask.expand_as(pred).sum()`` when a mask is given (the number of
        counted elements for a 0/1 mask), else by ``pred.numel()``; weights never enter
        the denominator. pix2pix's ``lambda = 100`` is meant with "mean". "none": the
        elementwise tensor, shape of ``pred``.

    Returns
    -------
    Tensor
        0-dim in ``pred.dtype`` ("mean", "sum"; accumulated in float64 and rounded once),
        or pred's shape ("none"). "mean" over an empty tensor or an all-zero mask is NaN.

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
    mask: Tensor | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Squared-L2 reconstruction loss ``[mask] [weight] (pred - target)**2``, fused.

    Same values and gradients as :func:`torch.nn.functional.mse_loss`; one pass forward,
    one pass backward, ``pred - target`` never materialized.

    Parameters
    ----------
    pred, target : Tensor
        Same shape, dtype (float32, float64, bfloat16, float16) and device.
    mask : Tensor, optional
        Bool or float, broadcastable to ``pred``; see :func:`l1_loss`.
    weight : Tensor, optional
        Per-element weights broadcastable to ``pred``.
    reduction : {"mean", "sum", "none"}
        "sum" is the sources' ``sum ||G(x) - y||^2`` (no 1/2 factor, unlike
        ``normreg.SquaredL2``). "mean" divides by ``mask.expand_as(pred).sum()`` with a
        mask, else by ``pred.numel()``. "none": the elementwise tensor.

    Returns
    -------
    Tensor
        0-dim in ``pred.dtype``, or pred's shape for "none".
    """
    return _pointwise("mse", "mse_loss", pred, target, mask, weight, reduction)


# ---- total variation ------------------------------------------------------------------------


def _tv_value(kind: str, reduction: str, eps: float, images: Tensor) -> Tensor:
    (p,) = _ptrs(images)
    per = _C.tv_value(kind, p, list(images.shape), DTYPE_CODES[images.dtype], eps)
    if reduction == "none":
        return torch.tensor(per, dtype=torch.float64).to(images.dtype)
    total = sum(per)  # image order: deterministic
    return torch.tensor(
        total if reduction == "sum" else _divide(total, float(images.numel())), dtype=images.dtype
    )


class _TotalVariation(torch.autograd.Function):
    """Total variation through the fused kernels: per-image values forward, one gradient pass back."""

    @staticmethod
    def forward(kind: str, reduction: str, eps: float, images: Tensor) -> Tensor:  # type: ignore[override]
        return _tv_value(kind, reduction, eps, images)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        kind, reduction, eps, images = inputs
        ctx.kind, ctx.reduction, ctx.eps = kind, reduction, eps
        ctx.save_for_backward(images)

    @staticmethod
    def backward(ctx, grad_value: Tensor):  # type: ignore[override]
        (images,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: stay differentiable through the reference
            value = ref.total_variation(images, ctx.kind, ctx.reduction, ctx.eps).to(images.dtype)
            (g,) = torch.autograd.grad(value, [images], grad_value, create_graph=True)
            return None, None, None, g
        n = images.shape[0]
        if ctx.reduction == "none":
            scale = grad_value.to(torch.float64).tolist()
        else:
            s = float(grad_value)
            if ctx.reduction == "mean":
                s = _divide(s, float(images.numel()))
            scale = [s] * n
        grad = torch.empty_like(images, memory_format=torch.contiguous_format)
        p, g = _ptrs(images, grad)
        _C.tv_grad(ctx.kind, p, g, list(images.shape), DTYPE_CODES[images.dtype], ctx.eps, scale)
        return None, None, None, grad


def total_variation(
    images: Tensor,
    kind: str = "anisotropic",
    reduction: str = "sum",
    eps: float = 1e-8,
) -> Tensor:
    """Total variation of an NCHW batch, fused (value and gradient in one pass each).

    With forward differences ``dx(i,j) = x(i,j+1) - x(i,j)`` and
    ``dy(i,j) = x(i+1,j) - x(i,j)``, taken as 0 past the last column / row:

    * ``kind="anisotropic"``: ``sum |dx| + |dy|`` -- exactly
      ``torch.diff(x, dim=-1).abs().sum() + torch.diff(x, dim=-2).abs().sum()``;
      subgradient 0 where a difference is 0.
    * ``kind="isotropic"``: ``sum_{i,j} sqrt(dx^2 + dy^2 + eps)`` over all H*W pixels of
      every plane, so the value includes ``N*C*H*W*sqrt(eps)`` more than the exact TV (a
      constant: the gradient is unaffected by it). With ``eps=0`` a zero term has gradient 0.

    Parameters
    ----------
    images : Tensor
        4-D ``(N, C, H, W)``, float32, float64, bfloat16 or float16.
    kind : {"anisotropic", "isotropic"}
    reduction : {"sum", "mean", "none"}
        "sum" (default): the sources' ``sum`` over the whole batch. "mean": that sum divided
        by ``N*C*H*W`` (the number of pixels, not the number of differences). "none": one
        value per image, shape ``(N,)`` (summed over channels).
    eps : float
        Smoothing of the isotropic square root (ignored by "anisotropic"); finite, >= 0.

    Returns
    -------
    Tensor
        In ``images.dtype``: 0-dim, or ``(N,)`` for "none". Accumulated in float64.
    """
    fn = "total_variation"
    _check_tensor(images, "images", fn)
    _check_float(images, "images", fn)
    if images.dim() != 4:
        raise ValueError(
            f"{fn}: 'images' must be 4-D (N, C, H, W), got shape {tuple(images.shape)}; "
            "add batch / channel dims with images.view(1, 1, H, W) or .unsqueeze"
        )
    if kind not in _TV_KINDS:
        raise ValueError(f"{fn}: 'kind' must be 'anisotropic' or 'isotropic', got {kind!r}")
    _check_reduction(reduction, fn)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"{fn}: 'eps' must be a real number, got {type(eps).__name__}")
    eps = float(eps)
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"{fn}: 'eps' must be finite and >= 0, got {eps}")
    if not images.is_cpu:
        return ref.total_variation(images, kind, reduction, eps).to(images.dtype)
    images = images.contiguous()
    if torch.is_grad_enabled() and images.requires_grad:
        return _TotalVariation.apply(kind, reduction, eps, images)
    return _tv_value(kind, reduction, eps, images)


# ---- SSIM -----------------------------------------------------------------------------------


def ssim_loss(
    pred: Tensor,
    target: Tensor,
    data_range: float = 1.0,
    win_size: int = 11,
    win_sigma: float = 1.5,
    K: tuple[float, float] = (0.01, 0.03),
    reduction: str = "mean",
) -> Tensor:
    """``1 - SSIM(pred, target)`` per image, through ``pytorch_msssim.ssim``.

    SSIM comes from pytorch-msssim (a maintained implementation with a Gaussian window),
    not from our own kernels.

    Parameters
    ----------
    pred, target : Tensor
        ``(N, C, H, W)``, same shape, dtype and device.
    data_range : float
        Range of the pixel values: 1.0 for [0, 1] images, 2.0 for tanh outputs in [-1, 1],
        255 for bytes. It sets SSIM's stabilizing constants ``(K1 * data_range)^2`` etc.
    win_size : int
        Side of the Gaussian window (odd, >= 3); it must not exceed H or W. The default 11
        suits images of 32 pixels and more; for small images use a small window:
        ``win_size=3`` for the 8x8 digits (the SSIM map is then 6x6), 7 for 16x16, 5..7 for
        28x28. pytorch-msssim itself would silently skip the smoothing along a dimension
        smaller than the window; here that is an error.
    win_sigma : float
        Standard deviation of the Gaussian window (1.5 as in the SSIM paper).
    K : (float, float)
        SSIM constants (K1, K2).
    reduction : {"mean", "sum", "none"}
        Over the per-image losses (each averaged over channels): mean, sum, or ``(N,)``.

    Returns
    -------
    Tensor
        0-dim, or ``(N,)`` for "none"; differentiable (autograd through pytorch-msssim).
    """
    fn = "ssim_loss"
    _check_pair(pred, target, fn)
    if pred.dim() != 4:
        raise ValueError(f"{fn}: 'pred' must be 4-D (N, C, H, W), got shape {tuple(pred.shape)}")
    _check_reduction(reduction, fn)
    if isinstance(win_size, bool) or not isinstance(win_size, int):
        raise TypeError(f"{fn}: 'win_size' must be an int, got {type(win_size).__name__}")
    if win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"{fn}: 'win_size' must be odd and >= 3, got {win_size}")
    h, w = pred.shape[-2:]
    if win_size > min(h, w):
        best = min(h, w) if min(h, w) % 2 else min(h, w) - 1
        hint = (
            f"use win_size={best} or smaller (3 for 8x8 digits)"
            if best >= 3
            else "images must be at least 3x3"
        )
        raise ValueError(f"{fn}: 'win_size' {win_size} is larger than the {h}x{w} images; {hint}")
    for name, v in (("data_range", data_range), ("win_sigma", win_sigma)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{fn}: '{name}' must be a real number, got {type(v).__name__}")
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{fn}: '{name}' must be finite and > 0, got {v}")
    try:
        from pytorch_msssim import ssim
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise ImportError("ssim_loss needs pytorch-msssim: pip install pytorch-msssim") from exc
    per = 1.0 - ssim(
        pred,
        target,
        data_range=float(data_range),
        size_average=False,
        win_size=win_size,
        win_sigma=float(win_sigma),
        K=K,
    )
    if reduction == "none":
        return per
    return per.mean() if reduction == "mean" else per.sum()
