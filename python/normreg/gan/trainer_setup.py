"""What a ``Trainer`` builds and checks from its config before the first step: its device
(``resolve_device``), the k-fold split's size (``check_folds``), the weight penalty's schedule
(``penalty_schedule``: the λ factor per step, a fixed shape or D's adaptive controller) and
each network's optimizer (``build_optimizer``, with each layer's penalty in its param groups).
The normreg pieces (penalties, schedules, ProxAdam) come from ``normreg.gan._ops``; the
trainer (``normreg.gan.trainer``) applies the penalty by mode in its step.
"""

from __future__ import annotations

import torch
from torch import nn

import normreg

from . import _ops
from .config import TrainConfig
from .data import ImageData

__all__ = ["resolve_device", "check_folds", "MIN_FOLD_IMAGES", "penalty_schedule", "build_optimizer"]

# At least this many images in every validation fold of a k-fold split.
MIN_FOLD_IMAGES = 2


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)``, or a ``ValueError`` when this machine has no such device."""
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"'device' {name!r}: torch.cuda.is_available() is False on this machine; use --device cpu"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"'device' {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"'device' {name!r}: torch.backends.mps.is_available() is False; use --device cpu")
    return dev


def check_folds(cfg: TrainConfig, data: ImageData) -> None:
    """A ``ValueError`` when ``cfg.folds`` leaves fewer than ``MIN_FOLD_IMAGES`` images in
    some validation fold of ``data``."""
    if cfg.folds > 1:
        n_rest = int(data.splits["train"].numel() + data.splits["val"].numel())
        small = n_rest // cfg.folds  # the smallest of the k parts (they differ by one at most)
        if small < MIN_FOLD_IMAGES:
            raise ValueError(
                f"TrainConfig: 'folds' = {cfg.folds} leaves {small} image(s) in some validation folds "
                f"({n_rest} non-test images); use at most {max(2, n_rest // MIN_FOLD_IMAGES)} folds "
                f"(at least {MIN_FOLD_IMAGES} images per fold; 5 or 10 is usual)"
            )


def penalty_schedule(cfg: TrainConfig, adaptive: bool):
    """The weight penalty's schedule (step -> factor of ``weight_penalty_strength``): the
    configured shape, or with ``adaptive`` the controller of D's penalty strength."""
    if adaptive:
        # D's penalty strength follows E[sign(D(x_real))] (the ADA heuristic); the
        # controller's factor is the schedule ProxAdam (or the loss / add_grad path) applies.
        # Imported here: normreg.stability's __init__ imports its ring trainer, which
        # imports normreg.gan, and so this module (a cycle through the packages, not
        # through these modules).
        from normreg.stability.adaptive import AdaptiveLambda

        return AdaptiveLambda(
            cfg.adaptive_target,
            gain=cfg.adaptive_gain,
            interval=cfg.adaptive_interval,
            min_factor=1.0 / cfg.adaptive_max_factor,
            max_factor=cfg.adaptive_max_factor,
            base=cfg.weight_penalty_strength,
        )
    return _ops.make_schedule(cfg.penalty_schedule, cfg.steps, cfg.warmup_fraction)


def build_optimizer(cfg: TrainConfig, model: nn.Module, lr: float, penalized: bool, unit_penalty, schedule):
    """``(optimizer, param groups, units)``: the groups hold each layer's penalty at the
    configured strength, made concrete for its layout by ``normreg.param_groups`` (group
    lasso: output channels, ``dim=1`` on transposed convs); ``units`` are the same
    penalties at strength 1 beside their params, which the 'loss' / 'add_grad' modes scale
    by the step's strength and the logged raw norm sums.

    ``unit_penalty`` is the weight penalty at strength 1, ``schedule`` its λ schedule
    (:func:`penalty_schedule`); both are unused unless ``penalized``."""
    if penalized:
        unit_groups = normreg.param_groups(model, unit_penalty)
        units = [(g["penalty"], g["params"]) for g in unit_groups if g["penalty"] is not None]
        groups = [
            {**g, "penalty": g["penalty"].scaled(cfg.weight_penalty_strength)}
            if g["penalty"] is not None
            else g
            for g in unit_groups
        ]
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "penalty": None}]
        units = []
    if cfg.penalty_mode in ("prox", "grad") and penalized:
        # ProxAdam applies the schedule itself (its step count is part of its state): its
        # proximal step ('prox'), or the penalty's gradient inside its update ('grad').
        opt = _ops.prox_adam(groups, lr=lr, betas=cfg.betas, schedule=schedule, mode=cfg.penalty_mode)
        return opt, groups, units
    plain = [{"params": g["params"]} for g in groups]
    return torch.optim.Adam(plain, lr=lr, betas=cfg.betas), groups, units
