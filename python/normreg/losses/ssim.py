"""SSIM as a loss (``1 - SSIM``), through pytorch-msssim."""

from __future__ import annotations

import math

from pytorch_msssim import ssim
from torch import Tensor

from ._args import (
    _check_pair,
    _check_reduction,
)

# ---- SSIM -----------------------------------------------------------------------------------


def _check_ssim_k(K, fn: str) -> tuple[float, float]:
    if isinstance(K, (str, bytes)) or not isinstance(K, (tuple, list)) or len(K) != 2:
        raise TypeError(f"{fn}: 'K' must be a pair of real numbers (K1, K2) such as (0.01, 0.03), got {K!r}")
    for v in K:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(
                f"{fn}: 'K' must hold two real numbers (K1, K2), got {K!r} ({type(v).__name__} inside)"
            )
    k1, k2 = float(K[0]), float(K[1])
    for name, v in (("K1", k1), ("K2", k2)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(
                f"{fn}: 'K' values must be finite and > 0, got {name}={v} in K={K!r}; the usual K is (0.01, 0.03)"
            )
    return k1, k2


def ssim_loss(
    pred: Tensor,
    target: Tensor,
    *,
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

    The options below are keyword-only.

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
        SSIM constants (K1, K2): two finite real numbers > 0 (they set the stabilizing
        constants; 0 would divide 0 by 0 on flat regions).
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
    k1, k2 = _check_ssim_k(K, fn)
    per = 1.0 - ssim(
        pred,
        target,
        data_range=float(data_range),
        size_average=False,
        win_size=win_size,
        win_sigma=float(win_sigma),
        K=(k1, k2),
    )
    if reduction == "none":
        return per
    return per.mean() if reduction == "mean" else per.sum()
