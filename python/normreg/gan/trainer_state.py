"""A ``Trainer``'s state as checkpoint data: ``trainer_state_dict`` (models, optimizers without
their penalty objects, schedules, RNG states and the data's fingerprint, as tensors and plain
values that load with ``torch.load(weights_only=True)``) and ``load_trainer_state`` (exact
resume; a checkpoint of ``normreg compress`` first resizes G to its widths).
``Trainer.state_dict`` / ``load_state_dict`` (``normreg.gan.trainer``) call them;
``normreg.gan.checkpoint`` writes and reads the files, ``normreg.gan.rng`` the RNG states.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

import normreg
from normreg.compress.resize import fit_to_state_dict

from .rng import _rng_state, _set_rng_state
from .trainer_setup import build_optimizer

__all__ = ["trainer_state_dict", "load_trainer_state"]


def _opt_state(opt: torch.optim.Optimizer | None) -> dict | None:
    """Optimizer state without the penalty objects (re-attached on load), so it loads with weights_only."""
    if opt is None:
        return None
    sd = opt.state_dict()
    sd["param_groups"] = [{k: v for k, v in g.items() if k != "penalty"} for g in sd["param_groups"]]
    return sd


def trainer_state_dict(trainer) -> dict[str, Any]:
    """The state of ``trainer`` (a :class:`~normreg.gan.trainer.Trainer`) as checkpoint data."""
    cfg = trainer.cfg
    return {
        "format": 1,
        "normreg_version": normreg.__version__,
        "config": cfg.to_dict(),
        "step": trainer.step_,
        "ema_start": trainer.ema_start,
        **({"compressed": trainer.compressed} if trainer.compressed is not None else {}),
        "G": trainer.G.state_dict(),
        "D": trainer.D.state_dict() if trainer.D is not None else None,
        "G_ema": trainer.G_ema.state_dict() if trainer.G_ema is not None else None,
        "opt_g": _opt_state(trainer.opt_g),
        "opt_d": _opt_state(trainer.opt_d),
        "schedules": {
            "step": trainer.step_,
            "recon": {
                "kind": cfg.recon_schedule,
                "base": cfg.recon_weight,
                **trainer.recon_schedule.state_dict(),
            },
            "penalty": {
                "kind": cfg.penalty_schedule,
                "base": cfg.weight_penalty_strength,
                **(
                    {"controller": trainer.penalty_schedule.state_dict()}
                    if trainer.adaptive
                    else trainer.penalty_schedule.state_dict()
                ),
            },
            "values": trainer.lambdas(trainer.step_),
        },
        "rng": {**_rng_state(), "trainer": trainer.gen.get_state()},
        "data": {
            "fingerprint": trainer.data.fingerprint(),
            "image_size": trainer.data.image_size,
            "channels": trainer.data.channels,
            "c_cond": trainer.c_cond,
            "num_images": int(trainer.data.images.shape[0]),
        },
    }


def load_trainer_state(trainer, state: dict[str, Any]) -> None:
    """Put ``trainer`` in the state ``trainer_state_dict`` saved (the process's RNGs too)."""
    if state.get("compressed") is not None:
        _adopt_pruned_g(trainer, state)
    trainer.ema_start = int(state.get("ema_start", 0))
    trainer.G.load_state_dict(state["G"])
    if trainer.D is not None:
        trainer.D.load_state_dict(state["D"])
    if trainer.G_ema is not None and state.get("G_ema") is not None:
        trainer.G_ema.load_state_dict(state["G_ema"])
    for opt, key in ((trainer.opt_g, "opt_g"), (trainer.opt_d, "opt_d")):
        if opt is None:
            continue
        pens = [(("penalty" in g), g.get("penalty")) for g in opt.param_groups]
        opt.load_state_dict(state[key])
        for g, (had, p) in zip(opt.param_groups, pens, strict=True):
            if had:
                g["penalty"] = p
    trainer.step_ = int(state["step"])
    if trainer.adaptive:
        trainer.penalty_schedule.load_state_dict(state["schedules"]["penalty"]["controller"])
    for sched, key in ((trainer.recon_schedule, "recon"), (trainer.penalty_schedule, "penalty")):
        if sched is trainer.penalty_schedule and trainer.adaptive:
            continue
        sched.load_state_dict({k: v for k, v in state["schedules"][key].items() if k not in ("kind", "base")})
    rng = state["rng"]
    _set_rng_state(rng)
    trainer.gen.set_state(rng["trainer"])


def _adopt_pruned_g(trainer, state: dict[str, Any]) -> None:
    """A checkpoint of ``normreg compress``: G has fewer channels than the config builds.
    Resize G to the checkpoint's widths (``normreg.compress.fit_to_state_dict``, no module
    pickled) and rebuild EMA-G and G's optimizer on the new parameters."""

    if trainer.dist is not None:
        raise ValueError("a compressed run (normreg compress) trains on one process only")
    if trainer.pen_g:
        raise ValueError("a compressed run's config must not put a weight penalty on G")
    fit_to_state_dict(trainer.G, state["G"])
    if trainer.G_ema is not None:
        trainer.G_ema = copy.deepcopy(trainer.G).requires_grad_(False)
    trainer.opt_g, trainer.groups_g, trainer.units_g = build_optimizer(
        trainer.cfg, trainer.G, trainer.cfg.lr_g, False, trainer.unit_penalty, trainer.penalty_schedule
    )
    trainer.compressed = dict(state["compressed"])
