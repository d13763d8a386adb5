"""The normreg pieces the trainer uses: penalties, image losses, the proximal optimizer.

Everything comes from normreg's public API (``normreg.L1``..., ``normreg.losses``,
``normreg.optim.ProxAdam``); nothing here calls ``_C``.
"""

from __future__ import annotations

from torch import Tensor

import normreg
from normreg import losses
from normreg.optim import Constant, Cosine, LinearWarmup, ProxAdam

__all__ = ["make_penalty", "recon_loss", "tv_loss", "prox_adam", "make_schedule"]


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
        return normreg.GroupLasso(strength, dim="out")  # output channels of each layer (param_groups)
    raise ValueError(f"'weight_penalty' unknown: {kind!r}")


def recon_loss(kind: str, pred: Tensor, target: Tensor) -> Tensor:
    """Reconstruction term (mean reduction, as pix2pix's λ=100 assumes)."""

    if kind == "l1":
        return losses.l1_loss(pred, target, reduction="mean")
    if kind == "l2":
        return losses.mse_loss(pred, target, reduction="mean")
    if kind == "ssim":
        # SSIM's luminance term is not shift-invariant: images in [-1, 1] are compared in [0, 2].
        win = 3 if pred.shape[-1] < 16 else (7 if pred.shape[-1] < 32 else 11)
        return losses.ssim_loss(pred + 1, target + 1, data_range=2.0, win_size=win)
    raise ValueError(f"'recon' unknown: {kind!r}")


def tv_loss(images: Tensor) -> Tensor:
    """Anisotropic total variation, summed differences divided by the number of pixels."""

    return losses.total_variation(images, kind="anisotropic", reduction="mean")


def prox_adam(groups, lr: float, betas: tuple[float, float], schedule, mode: str = "prox"):
    """ProxAdam over param groups that carry their penalty; ``schedule`` scales it per step;
    ``mode``: its proximal step ("prox") or its gradient inside the update ("grad")."""

    return ProxAdam(groups, lr=lr, betas=betas, penalty_schedule=schedule, penalty_mode=mode)


def make_schedule(kind: str, total: int, warmup_fraction: float):
    """A normreg.optim λ schedule (step -> factor) for ``kind``.

    constant: 1; linear_warmup: 0 -> 1 over ``warmup_fraction * total`` steps, then 1;
    cosine: 1 -> 0 along half a cosine over ``total`` steps (anneals the term);
    cosine_ramp: 0 -> 1 along half a cosine (brings the term in gently).
    """

    if kind == "constant":
        return Constant(1.0)
    if kind == "linear_warmup":
        return LinearWarmup(max(1, int(round(warmup_fraction * total))), start=0.0)
    if kind == "cosine":
        return Cosine(max(1, total), start=1.0, end=0.0)
    if kind == "cosine_ramp":
        return Cosine(max(1, total), start=0.0, end=1.0)
    raise ValueError(f"schedule unknown: {kind!r}")
