"""TEMPORARY stand-in for normreg.losses while it is being built (removed once it lands)."""

from __future__ import annotations

import torch.nn.functional as F


def l1_loss(pred, target, reduction="mean"):
    return F.l1_loss(pred, target, reduction=reduction)


def mse_loss(pred, target, reduction="mean"):
    return F.mse_loss(pred, target, reduction=reduction)


def ssim_loss(pred, target, data_range=2.0, win_size=11):
    from pytorch_msssim import ssim

    return 1 - ssim(pred + 1, target + 1, data_range=data_range, win_size=win_size, size_average=True)


def total_variation(images, kind="anisotropic", reduction="mean"):
    dh = (images[..., 1:, :] - images[..., :-1, :]).abs()
    dw = (images[..., :, 1:] - images[..., :, :-1]).abs()
    return dh.mean() + dw.mean()
