"""Argument checks and input dtypes of the image losses (``normreg.losses``): every check
runs before anything is computed; messages name the function and the argument and say how
to fix the call. Mixed input dtypes and ``torch.autocast`` follow torch's rules for
``F.l1_loss`` / ``F.mse_loss``."""

from __future__ import annotations

import torch
from torch import Tensor

from .._bridge import DTYPE_CODES

_REDUCTIONS = ("mean", "sum", "none")
_SUPPORTED = "float32, float64, bfloat16 or float16"


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
    """Same dtype, device and shape (SSIM): no promotion."""
    _check_tensor(pred, "pred", fn)
    _check_tensor(target, "target", fn)
    _check_float(pred, "pred", fn)
    if target.dtype != pred.dtype:
        raise TypeError(
            f"{fn}: 'target' has dtype {target.dtype} but 'pred' has {pred.dtype}; "
            "they must match (convert with target.to(pred.dtype))"
        )
    _check_device_shape(pred, target, fn)


def _check_device_shape(pred: Tensor, target: Tensor, fn: str) -> None:
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


def _autocast_on(device_type: str) -> bool:
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def _loss_dtype(pred: Tensor, target: Tensor) -> torch.dtype:
    """The dtype ``F.l1_loss`` / ``F.mse_loss`` compute in: the promoted input dtype; under
    autocast torch's float32 policy for these ops (every input that is not float64 is cast to
    float32, so the result is float32, or float64 when an input is float64)."""
    dtype = torch.promote_types(pred.dtype, target.dtype)
    if dtype != torch.float64 and _autocast_on(pred.device.type):
        return torch.float32
    return dtype


def _loss_inputs(pred, target, fn: str) -> tuple[Tensor, Tensor]:
    """Checked ``(pred, target)`` in the dtype the loss is computed and returned in."""
    _check_tensor(pred, "pred", fn)
    _check_tensor(target, "target", fn)
    _check_float(pred, "pred", fn)
    _check_float(target, "target", fn)
    _check_device_shape(pred, target, fn)
    dtype = _loss_dtype(pred, target)
    return pred.to(dtype), target.to(dtype)  # differentiable casts; no copy when the dtype is right


def _factor(x, arg: str, pred: Tensor, fn: str) -> Tensor | None:
    """A mask or weight: a bool or float tensor on pred's device that broadcasts to pred,
    converted to pred's dtype (its values are checked where the loss is computed:
    :func:`normreg._ops.check_loss_factor`)."""
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
