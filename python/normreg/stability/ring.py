"""Ring of 8 Gaussians (Metz et al. 2017): a 2-D GAN testbed for training stability.

Data: 8 Gaussians of std ``sigma`` (0.02) at radius ``radius`` (2) on the circle, equal weights.
G and D are MLPs (ReLU, ``depth`` hidden layers of ``hidden`` units); the loss is the
non-saturating GAN loss; both use Adam. D's regularizer is one of (see :class:`RingConfig`):

* ``r1_gamma``: R1 = (γ/2) E|∇_x D(x_real)|² (Mescheder et al. 2018), every step;
* ``d_penalty`` (``l2`` = normreg.SquaredL2, ``l1`` = normreg.L1, ``elastic_net`` =
  normreg.ElasticNet) on D's weight matrices (biases excluded, normreg.param_groups),
  applied as the proximal step of normreg.optim.ProxAdam (``d_penalty_mode="prox"``) or as
  the penalty's gradient inside its update (``"grad"``);
* ``spectral_norm``: torch.nn.utils.parametrizations.spectral_norm on D's linear layers;
* ``adaptive_target``: an :class:`~normreg.stability.adaptive.AdaptiveLambda` controller
  scales ``d_penalty`` from E[sign(D(x_real))].

Metrics (:func:`ring_metrics`, the literature's): a sample is high quality if it lies within
3σ of some mode; a mode is covered if at least 1% of all samples are high-quality samples
of it; KL(mode histogram ‖ uniform) over the high-quality samples; a run diverged if a loss
or sample is not finite, or if fewer than 5% of its final samples are high quality.

The loop follows the image trainer's (normreg.gan.train): seeded RNGs checkpointed with
the state (training N steps = N/2, resume, N/2 more, bit for bit), ``log.jsonl`` every
``log_every`` steps, ``metrics.csv`` every ``eval_every`` steps, checksummed atomic
checkpoints (normreg.gan.checkpoint) every ``checkpoint_every`` steps.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

import normreg
from normreg.optim import ProxAdam

from ..gan.checkpoint import CHECKPOINT, PREVIOUS, load_checkpoint, save_checkpoint
from ..gan.rng import _rng_state, _seed_all, _set_rng_state
from ..gan.rundir import _truncate_logs
from ..study._io import atomic_write_text
from .adaptive import AdaptiveLambda
from .ring_config import D_PENALTIES, RingConfig
from .ring_data import ring_metrics, ring_modes, sample_ring

__all__ = [
    "RingConfig",
    "RingTrainer",
    "train_ring",
    "ring_modes",
    "sample_ring",
    "ring_metrics",
    "D_PENALTIES",
]

DIVERGED_HQ = 0.05  # a run whose final samples are < 5% high quality failed
RUN_FILES = (
    "config.json",
    "log.jsonl",
    "metrics.csv",
    "snapshots.json",
    "summary.json",
    CHECKPOINT,
    PREVIOUS,
)


# ---- models ---------------------------------------------------------------------------------
def mlp(d_in: int, d_out: int, hidden: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


def _d_penalty(cfg: RingConfig):
    s = cfg.d_penalty_strength
    if cfg.d_penalty == "l1":
        return normreg.L1(s)
    if cfg.d_penalty == "l2":
        return normreg.SquaredL2(s)
    if cfg.d_penalty == "elastic_net":
        return normreg.ElasticNet(s * cfg.l1_ratio, s * (1.0 - cfg.l1_ratio))
    return None


class RingTrainer:
    """G, D, their optimizers, the controller and the RNGs of one ring run; ``step()`` trains one step."""

    def __init__(self, cfg: RingConfig) -> None:
        if not isinstance(cfg, RingConfig):
            raise TypeError(f"'cfg' must be a RingConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        _seed_all(cfg.seed)
        self.G = mlp(cfg.z_dim, 2, cfg.hidden, cfg.depth)
        self.D = mlp(2, 1, cfg.hidden, cfg.depth)
        if cfg.spectral_norm:
            for i, m in enumerate(self.D):
                if isinstance(m, nn.Linear):
                    self.D[i] = spectral_norm(m)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)  # data and latents
        self.eval_z = torch.randn(
            cfg.eval_samples, cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed + 12345)
        )
        self.controller = (
            AdaptiveLambda(
                cfg.adaptive_target,
                gain=cfg.adaptive_gain,
                interval=cfg.adaptive_interval,
                base=cfg.d_penalty_strength,
            )
            if cfg.adaptive_target
            else None
        )
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=betas)
        penalty = _d_penalty(cfg)
        if penalty is not None and cfg.d_penalty_strength > 0:
            groups = normreg.param_groups(self.D, penalty)
            for g in groups:
                g.pop("param_names", None)
            self.opt_d = ProxAdam(
                groups,
                lr=cfg.lr_d,
                betas=betas,
                penalty_mode=cfg.d_penalty_mode,
                penalty_schedule=self.controller,
            )
        else:
            self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=betas)
        self.step_ = 0
        self._last: dict[str, float] = {}

    def _data(self, n: int) -> Tensor:
        c = self.cfg
        return sample_ring(n, self.gen, c.modes, c.radius, c.sigma)

    def step(self) -> dict[str, float]:
        """One D step then one G step (non-saturating loss); returns the step's loss terms."""
        cfg = self.cfg
        x = self._data(cfg.batch_size)
        z = torch.randn(cfg.batch_size, cfg.z_dim, generator=self.gen)
        fake = self.G(z)
        self.D.requires_grad_(True)
        need_r1 = cfg.r1_gamma > 0
        xr = x.requires_grad_(True) if need_r1 else x
        d_real = self.D(xr)
        d_fake = self.D(fake.detach())
        loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        out = {"d_adv": float(loss_d.detach())}
        total = loss_d
        if need_r1:
            (g,) = torch.autograd.grad(d_real.sum(), xr, create_graph=True)
            r1 = g.pow(2).sum(1).mean()
            total = total + 0.5 * cfg.r1_gamma * r1
            out["r1"] = float(r1.detach())
        if self.controller is not None:
            self.controller.observe(d_real)
        out["r_sign"] = float(torch.sign(d_real.detach()).mean())
        self.opt_d.zero_grad(set_to_none=True)
        total.backward()
        self.opt_d.step()  # ProxAdam reads the controller's factor here (penalty_schedule)
        if self.controller is not None:
            self.controller.step()
            out["lam_d"] = self.controller.strength
        elif cfg.d_penalty != "none":
            out["lam_d"] = cfg.d_penalty_strength
        self.D.requires_grad_(False)
        loss_g = F.softplus(-self.D(fake)).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        out["g_adv"] = float(loss_g.detach())
        out["d_total"] = float(total.detach())
        self.step_ += 1
        self._last = out
        return out

    @torch.no_grad()
    def generate(self, z: Tensor | None = None) -> Tensor:
        return self.G(self.eval_z if z is None else z)

    def evaluate(self) -> dict[str, Any]:
        c = self.cfg
        return ring_metrics(self.generate(), c.modes, c.radius, c.sigma)

    def d_weight_stats(self) -> dict[str, float]:
        ws = [p.detach() for n, p in self.D.named_parameters() if p.ndim > 1]
        total = sum(w.numel() for w in ws)
        return {
            "d_zero_fraction": sum(int((w == 0).sum()) for w in ws) / total,
            "d_weight_norm": math.sqrt(sum(float(w.double().pow(2).sum()) for w in ws)),
        }

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        sd_d = self.opt_d.state_dict()
        sd_d["param_groups"] = [{k: v for k, v in g.items() if k != "penalty"} for g in sd_d["param_groups"]]
        return {
            "format": 1,
            "kind": "ring",
            "normreg_version": normreg.__version__,
            "config": self.cfg.to_dict(),
            "step": self.step_,
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": sd_d,
            "controller": self.controller.state_dict() if self.controller is not None else None,
            "rng": {**_rng_state(), "trainer": self.gen.get_state()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "ring":
            raise ValueError("the checkpoint is not a ring run's (kind != 'ring')")
        if RingConfig.from_dict(state["config"]) != self.cfg:
            raise ValueError(
                "the checkpoint was written for another RingConfig; build the trainer from its config"
            )
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        pens = [g.get("penalty") for g in self.opt_d.param_groups]
        has = ["penalty" in g for g in self.opt_d.param_groups]
        self.opt_d.load_state_dict(state["opt_d"])
        for g, h, p in zip(self.opt_d.param_groups, has, pens, strict=True):
            if h:
                g["penalty"] = p
        if self.controller is not None:
            self.controller.load_state_dict(state["controller"])
        self.step_ = int(state["step"])
        _set_rng_state(state["rng"])
        self.gen.set_state(state["rng"]["trainer"])


# ---- a run ----------------------------------------------------------------------------------
def _finite(v: Any) -> Any:
    return v if not isinstance(v, float) or math.isfinite(v) else str(v)


def train_ring(
    cfg: RingConfig | None,
    run_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    resume: bool = False,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train one ring run into ``run_dir``; returns the summary (also ``summary.json``).

    ``resume=True`` continues from ``run_dir/checkpoint.pt`` (``cfg`` None: the saved one).
    ``stop_after``: stop with a checkpoint once this step is reached, as if interrupted.
    A run stops early (``diverged``) once a loss is not finite.
    """
    run_dir = Path(run_dir)
    if overwrite and resume:
        raise ValueError("'overwrite' and 'resume' cannot both be set")
    state = None
    if resume:
        state = load_checkpoint(run_dir)
        saved = RingConfig.from_dict(state["config"])
        if cfg is not None and cfg.replace(steps=saved.steps) != saved:
            raise ValueError("cannot resume with a different RingConfig (only 'steps' may change)")
        cfg = saved if cfg is None else cfg
        state["config"] = cfg.to_dict()
    elif cfg is None:
        raise ValueError("'cfg' is required unless resume=True")
    trainer = RingTrainer(cfg)
    if state is not None:
        trainer.load_state_dict(state)
        _truncate_logs(run_dir, trainer.step_)  # rows written after the checkpoint are written again
    else:
        ours = [f for f in RUN_FILES if (run_dir / f).exists()]
        if ours and not overwrite:
            raise ValueError(
                f"run directory {os.fspath(run_dir)!r} already holds a run ({', '.join(ours)}); "
                "pass overwrite=True to replace it or resume=True to continue it"
            )
        for f in ours:
            (run_dir / f).unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    met_path = run_dir / "metrics.csv"
    cols = ["step", "modes_covered", "hq_fraction", "kl_uniform", "finite"]
    if not met_path.exists():
        with open(met_path, "w", newline="") as fh:
            csv.writer(fh).writerow(cols)
    snap_path = run_dir / "snapshots.json"
    snaps: dict[str, list] = (
        json.loads(snap_path.read_text()) if state is not None and snap_path.is_file() else {}
    )
    snaps = {k: v for k, v in snaps.items() if int(k) <= trainer.step_}

    def snapshot() -> None:
        snaps[str(trainer.step_)] = trainer.generate()[: cfg.snapshot_samples].tolist()
        atomic_write_text(snap_path, json.dumps(snaps))

    if 0 in cfg.snapshots and trainer.step_ == 0:
        snapshot()
    diverged_at = None
    t0 = time.perf_counter()
    with open(run_dir / "log.jsonl", "a") as log:
        while trainer.step_ < end:
            terms = trainer.step()
            s = trainer.step_
            if not all(math.isfinite(v) for v in terms.values()):
                diverged_at = s
                log.write(json.dumps({"step": s, **{k: _finite(v) for k, v in terms.items()}}) + "\n")
                break
            if s % cfg.log_every == 0 or s == end:
                log.write(json.dumps({"step": s, **terms}) + "\n")
                log.flush()
            if s in cfg.snapshots:
                snapshot()
            if s % cfg.eval_every == 0 or s == cfg.steps:
                m = trainer.evaluate()
                with open(met_path, "a", newline="") as fh:
                    csv.writer(fh).writerow([s, *[_finite(m[k]) for k in cols[1:]]])
            if s % cfg.checkpoint_every == 0 or s == end:
                save_checkpoint(trainer.state_dict(), run_dir)
    seconds = time.perf_counter() - t0
    with open(met_path, newline="") as fh:  # the whole run's evaluations, resumed parts included
        curve = [
            {
                "step": int(r["step"]),
                "modes_covered": int(r["modes_covered"]),
                "hq_fraction": float(r["hq_fraction"]),
                "kl_uniform": _finite(float(r["kl_uniform"])),
            }
            for r in csv.DictReader(fh)
        ]
    final = trainer.evaluate()
    diverged = diverged_at is not None or not final["finite"] or final["hq_fraction"] < DIVERGED_HQ
    summary = {
        "steps": trainer.step_,
        "finished": trainer.step_ >= cfg.steps or diverged_at is not None,
        "seconds": round(seconds, 3),
        "ms_per_step": 1e3 * seconds / max(1, trainer.step_ - (state["step"] if state else 0)),
        "diverged": bool(diverged),
        "nonfinite_at": diverged_at,
        "metrics": {k: _finite(v) for k, v in final.items()},
        "d_weights": trainer.d_weight_stats(),
        "lam_d_final": trainer.controller.strength if trainer.controller is not None else None,
        "losses": {k: _finite(v) for k, v in trainer._last.items()},
        "curve": curve,
        "snapshots": snaps,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary) + "\n")
    return summary
