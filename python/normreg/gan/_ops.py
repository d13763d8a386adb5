"""The normreg pieces the trainer uses: penalties, image losses, the proximal optimizer.

Everything comes from normreg's public API (``normreg.L1``..., ``normreg.losses``,
``normreg.optim.ProxAdam``); nothing here calls ``_C``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

import normreg

__all__ = ["make_penalty", "recon_loss", "tv_loss", "prox_adam", "schedule_factor"]


def make_penalty(kind: str, strength: float, l1_ratio: float = 0.5):
    """The normreg penalty object for ``kind`` at ``strength`` (``None`` for ``"none"``)."""
    if kind == "none":
        return None
    if kind == "l1":
        return normreg.L1(strength)
    if kind == "l2":
        return normreg.SquaredL2(strength)
    if kind == "elastic_net":
        return normreg.ElasticNet(strength * l1_ratio, strength * (1.0 - l1_ratio))
    if kind == "l0":
        return normreg.L0(strength)
    if kind == "group_lasso":
        return normreg.GroupLasso(strength, dim=0)
    raise ValueError(f"'weight_penalty' unknown: {kind!r}")


def _losses():
    try:
        from normreg import losses
    except ImportError:  # TEMPORARY until normreg.losses lands
        from . import _torch_losses as losses
    return losses


def recon_loss(kind: str, pred: Tensor, target: Tensor) -> Tensor:
    """Reconstruction term (mean reduction, as pix2pix's λ=100 assumes)."""
    losses = _losses()
    if kind == "l1":
        return losses.l1_loss(pred, target, reduction="mean")
    if kind == "l2":
        return losses.mse_loss(pred, target, reduction="mean")
    if kind == "ssim":
        return losses.ssim_loss(pred, target, data_range=2.0, win_size=3 if pred.shape[-1] < 16 else (7 if pred.shape[-1] < 32 else 11))
    raise ValueError(f"'recon' unknown: {kind!r}")


def tv_loss(images: Tensor) -> Tensor:
    losses = _losses()
    return losses.total_variation(images, kind="anisotropic", reduction="mean")


def prox_adam(groups, lr: float, betas: tuple[float, float]):
    try:
        from normreg.optim import ProxAdam
    except ImportError:
        raise ValueError("penalty_mode='prox' needs normreg.optim.ProxAdam, which this build lacks; use 'add_grad'") from None

    return ProxAdam(groups, lr=lr, betas=betas)


def schedule_factor(kind: str, step: int, total: int, warmup_fraction: float) -> float:
    """Multiplier of a λ at ``step`` (0-based) of ``total``: constant 1, linear warm-up, cosine decay."""
    if kind == "constant":
        return 1.0
    if kind == "linear_warmup":
        warm = max(1, int(round(warmup_fraction * total)))
        return min(1.0, (step + 1) / warm)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(1, total)))
    raise ValueError(f"schedule unknown: {kind!r}")


def available() -> dict[str, bool]:
    """Which optional normreg modules are present (losses, optim)."""
    out = {}
    for name in ("losses", "optim"):
        try:
            getattr(normreg, name)
            out[name] = True
        except (ImportError, AttributeError):
            out[name] = False
    return out

