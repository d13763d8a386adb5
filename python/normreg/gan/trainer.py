"""The GAN trainer's step: ``Trainer`` (models, optimizers, penalties, one training step,
state, sample grids). ``normreg.gan.train`` runs it in a run directory (``normreg.gan.rundir``:
logs, resume); its metrics are computed by ``normreg.gan.evaluation``. Beside it:
``normreg.gan.trainer_setup`` resolves its device and builds its optimizers and penalty
schedule from the config,
``normreg.gan.trainer_state`` turns its state into checkpoint data and back,
``normreg.gan.fixed_inputs`` holds its evaluation inputs and sample grids, and
``normreg.gan.nonfinite`` its NaN / inf checks.

One step (paired tasks, pix2pix style)::
    c = input(x)                  # masked / noisy / downsampled x
    y = G(c)
    D:  0.5 [BCE(D(c, x), 1) + BCE(D(c, y), 0)]  (+ lazy R1 every k steps, times k)
    G:  adv_weight BCE(D(c, y), 1) + λ_rec(t) recon(y, x) + tv_weight TV(y)
    weight penalty R on G and/or D, strength λ_pen(t):  mode 'loss'     -> + R(w) in the loss
                                                        mode 'add_grad' -> R.add_grad_ after backward
                                                        mode 'grad'     -> ∇R inside ProxAdam's update pass
                                                        mode 'prox'     -> ProxAdam's proximal step

Unconditional: y = G(z), D sees images only, no reconstruction term.

Exact resume: the batch order is a function of (seed, step), task noise and latents come from
a generator whose state is checkpointed with torch's, numpy's and Python's RNG states, so
training N steps equals training N/2, resuming and training N/2 more, bit for bit on CPU.
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _ops
from . import distributed as _dist  # DDP hooks: see normreg.gan.distributed
from .config import TrainConfig
from .data import ImageData, input_channels, load_data, make_inputs
from .evaluation import data_warnings, evaluate_trainer
from .fixed_inputs import N_GRID, eval_inputs, grid_rows, save_sample_grid
from .metrics import load_or_train_classifier
from .models import build_models
from .nonfinite import ON_NONFINITE, NonFiniteError, first_nonfinite_term, first_nonfinite_weight
from .rng import _seed_all
from .trainer_setup import MIN_FOLD_IMAGES, build_optimizer, check_folds, penalty_schedule, resolve_device
from .trainer_state import load_trainer_state, trainer_state_dict

# The names this module had before its helpers moved beside it keep working from here.
__all__ = ["Trainer", "NonFiniteError", "ON_NONFINITE", "resolve_device", "MIN_FOLD_IMAGES", "N_GRID"]


class Trainer:
    """Holds the data, G, D, EMA-G, optimizers and RNGs of one run; ``step()`` trains one step.

    Parameters
    ----------
    cfg : TrainConfig
    data : ImageData, optional
        Already loaded data (otherwise ``load_data(cfg)``; errors in the data raise
        ``ValueError`` here, before anything is written).
    """

    def __init__(self, cfg: TrainConfig, data: ImageData | None = None) -> None:
        if not isinstance(cfg, TrainConfig):
            raise TypeError(f"'cfg' must be a TrainConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.data = data if data is not None else load_data(cfg)
        d = self.data
        self.c_cond = input_channels(cfg, d.channels) if cfg.paired else 0
        self.device = resolve_device(cfg.device)
        _seed_all(cfg.seed)
        self.G, self.D = build_models(cfg, d.channels, d.image_size, self.c_cond)
        self.G.to(self.device)
        if self.D is not None:
            self.D.to(self.device)
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False) if cfg.ema_decay > 0 else None
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)  # task noise, latents
        self.step_ = 0
        self.ema_start = 0  # the step the EMA warm-up counts from (a compressed G restarts it)
        self.compressed: dict[str, Any] | None = None  # normreg.gan.compress: how G was pruned
        check_folds(cfg, d)
        self.train_x = d.split("train")[0].to(self.device)
        self._epoch: tuple[int, Tensor] | None = None  # this epoch's crops or permutation
        for msg in data_warnings(cfg, d):
            warnings.warn(msg, UserWarning, stacklevel=2)
        n = self.train_x.shape[0]
        self.batch = min(cfg.batch_size, n)
        self.batches_per_epoch = max(1, n // self.batch)
        # Weight penalties: one per network it applies to, at strength 1 (scaled per step).
        self.pen_g = cfg.penalty_on in ("g", "both") and cfg.weight_penalty != "none"
        self.pen_d = cfg.penalty_on in ("d", "both") and cfg.weight_penalty != "none" and self.D is not None
        self.unit_penalty = _ops.make_penalty(cfg.weight_penalty, 1.0, cfg.l1_ratio)
        self.recon_schedule = _ops.make_schedule(cfg.recon_schedule, cfg.steps, cfg.warmup_fraction)
        self.adaptive = cfg.penalty_schedule == "adaptive" and self.pen_d
        self.penalty_schedule = penalty_schedule(cfg, self.adaptive)
        self.opt_g, self.groups_g, self.units_g = build_optimizer(
            cfg, self.G, cfg.lr_g, self.pen_g, self.unit_penalty, self.penalty_schedule
        )
        self.opt_d, self.groups_d, self.units_d = (
            build_optimizer(cfg, self.D, cfg.lr_d, self.pen_d, self.unit_penalty, self.penalty_schedule)
            if self.D is not None
            else (None, None, [])
        )
        # Fixed evaluation inputs and sample-grid inputs / latents (their own generator).
        self.eval_inputs: dict[str, Tensor] = eval_inputs(cfg, d, self.device)
        grid = grid_rows(d, d.split("val")[0].shape[0])
        self.grid_inputs = self.eval_inputs["val"][grid]
        self.grid_targets = d.split("val")[0][grid].to(self.device)
        self._classifier = None
        self._classifier_ready = False
        self.last_terms: dict[str, float] = {}
        # DDP hook: data-parallel (DistributedDataParallel G and D, this rank's rows of each
        # global batch) when torch.distributed is initialized with > 1 process; else None.
        self.dist = _dist.attach(self.G, self.D, self.batch)

    # -- λ values ------------------------------------------------------------------------------
    def lambdas(self, step: int | None = None) -> dict[str, float]:
        """The λ values in force at ``step`` (default: the next step)."""
        cfg = self.cfg
        t = self.step_ if step is None else step
        out = {}
        if cfg.paired and cfg.recon != "none":
            out["lam_recon"] = cfg.recon_weight * float(self.recon_schedule(t))
        if self.pen_g or self.pen_d:
            out["lam_penalty"] = cfg.weight_penalty_strength * float(self.penalty_schedule(t))
            if self.adaptive:
                out["lam_d"] = out["lam_penalty"]  # D's penalty strength in force (adaptive)
        if cfg.uses_d:
            out["lam_adv"] = cfg.adv_weight
        if cfg.tv_weight > 0:
            out["lam_tv"] = cfg.tv_weight
        if cfg.r1_weight > 0 and cfg.uses_d:
            out["lam_r1"] = cfg.r1_weight
        return out

    def _penalty_at(self, step: int) -> float | None:
        """The weight penalty's strength at ``step`` (``None`` without a penalty)."""
        cfg = self.cfg
        if self.unit_penalty is None:
            return None
        return cfg.weight_penalty_strength * float(self.penalty_schedule(step))

    # -- one step ------------------------------------------------------------------------------
    def _batch(self, step: int) -> Tensor:
        # Each epoch's draw (a function of seed and epoch only, so resume is exact) is made
        # once, at its first batch: the crops of the photos, or the permutation of the images.
        epoch, i = divmod(step, self.batches_per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            g = torch.Generator().manual_seed(1_000_003 * self.cfg.seed + epoch)
            if self.data.crop_source is not None:  # new random crops of the photos every epoch
                self._epoch = (epoch, self.data.crop_source.crops(g)[0].to(self.device))
            else:
                self._epoch = (epoch, torch.randperm(self.train_x.shape[0], generator=g))
        rows = self._epoch[1][i * self.batch : (i + 1) * self.batch]
        return rows if self.data.crop_source is not None else self.train_x[rows]

    @staticmethod
    def _penalized(groups) -> list[Tensor]:
        return [p for g in groups if g.get("penalty") is not None for p in g["params"]]

    def _apply_penalty_before(self, units, strength: float, loss_terms: list[Tensor]) -> None:
        if self.cfg.penalty_mode == "loss":
            loss_terms.extend(unit.scaled(strength).value(params) for unit, params in units)

    def _apply_penalty_after(self, opt, units, strength: float) -> None:
        # 'prox' / 'grad': nothing here, ProxAdam's step applies the scheduled penalty.
        if self.cfg.penalty_mode == "add_grad":
            for unit, params in units:
                unit.scaled(strength).add_grad_(params)

    def _update(self, opt, units, penalized: bool, loss_terms: list[Tensor], strength) -> Tensor:
        """One network's update: the penalty (by mode), backward of the summed terms, the
        optimizer step; returns the summed loss."""
        if penalized:
            self._apply_penalty_before(units, strength, loss_terms)
        opt.zero_grad(set_to_none=True)
        total = sum(loss_terms)
        total.backward()
        if penalized:
            self._apply_penalty_after(opt, units, strength)
        opt.step()
        return total

    def step(self) -> None:
        """Train one step (``loss_terms()`` then reports its loss terms and λ values)."""
        cfg = self.cfg
        t = self.step_
        lam = self.lambdas(t)
        strength = self._penalty_at(t)
        x = self._batch(t)
        # DDP hook: the global batch and its noise are drawn as on one process; each rank
        # keeps its rows and trains through the DDP wrappers of G and D.
        ddp = self.dist
        G, D = (ddp.g, ddp.d) if ddp is not None else (self.G, self.D)
        if cfg.paired:
            c = make_inputs(cfg, x, self.gen)
            if ddp is not None:
                x, c = ddp.local(x), ddp.local(c)
            fake = G(c)
        else:
            c = None
            z = torch.randn(x.shape[0], cfg.z_dim, generator=self.gen).to(self.device)
            if ddp is not None:
                x, z = ddp.local(x), ddp.local(z)
            fake = G(z)
        terms: dict[str, Tensor] = {}
        # -- D ------------------------------------------------------------------------------
        if self.D is not None:
            self.D.requires_grad_(True)
            lr_ = D(x, c)
            lf = D(fake.detach(), c)
            d_real = F.binary_cross_entropy_with_logits(lr_, torch.ones_like(lr_))
            d_fake = F.binary_cross_entropy_with_logits(lf, torch.zeros_like(lf))
            terms["d_real"], terms["d_fake"] = d_real, d_fake
            terms["d_adv"] = 0.5 * (d_real + d_fake)
            if self.adaptive:
                sign = torch.sign(lr_.detach()).double().mean()
                terms["d_real_sign"] = sign
                r = float(sign)
                if ddp is not None:  # DDP hook: the global batch's mean, so every rank holds one λ
                    r = ddp.mean({"r": r})["r"]
                if math.isfinite(r):  # NaN logits: nothing observed; first_nonfinite reports them
                    self.penalty_schedule.observe(r)
            loss_d = [terms["d_adv"]]
            if cfg.r1_weight > 0 and t % cfg.r1_every == 0:
                xr = x.detach().requires_grad_(True)
                out = D(xr, c)
                (grad,) = torch.autograd.grad(out.sum(), xr, create_graph=True)
                r1 = grad.pow(2).flatten(1).sum(1).mean()
                terms["d_r1"] = r1
                terms["w_d_r1"] = 0.5 * cfg.r1_weight * cfg.r1_every * r1
                loss_d.append(terms["w_d_r1"])
            total_d = self._update(self.opt_d, self.units_d, self.pen_d, loss_d, strength)
            if self.adaptive:
                self.penalty_schedule.step()  # adjusts λ after this step (which used lam_d of lambdas(t))
            terms["d_total"] = total_d.detach()
            self.D.requires_grad_(False)
        # -- G ------------------------------------------------------------------------------
        loss_g: list[Tensor] = []
        if self.D is not None:
            lg = self.D(fake, c)
            terms["g_adv"] = F.binary_cross_entropy_with_logits(lg, torch.ones_like(lg))
            terms["w_g_adv"] = cfg.adv_weight * terms["g_adv"]
            loss_g.append(terms["w_g_adv"])
        if cfg.paired and cfg.recon != "none":
            terms["g_recon"] = _ops.recon_loss(cfg.recon, fake, x)
            terms["w_g_recon"] = lam["lam_recon"] * terms["g_recon"]
            loss_g.append(terms["w_g_recon"])
        if cfg.tv_weight > 0:
            terms["g_tv"] = _ops.tv_loss(fake)
            terms["w_g_tv"] = cfg.tv_weight * terms["g_tv"]
            loss_g.append(terms["w_g_tv"])
        total_g = self._update(self.opt_g, self.units_g, self.pen_g, loss_g, strength)
        terms["g_total"] = total_g.detach()
        self._update_ema(t)
        self.step_ = t + 1
        self._last = ({k: v.detach() for k, v in terms.items()}, lam)

    def loss_terms(self) -> dict[str, float]:
        """Raw and λ-weighted terms of the last step as floats, with the λ values.

        Weight-penalty terms are measured after the step: ``g_penalty`` is the raw norm
        ``R_1(w)`` (strength 1), ``w_g_penalty`` is ``λ_pen R_1(w)``; the same for D.
        """
        terms, lam = self._last
        out = {k: float(v) for k, v in terms.items()}
        if self.dist is not None:  # DDP hook: the mean over ranks (collective: every rank calls it)
            out = self.dist.mean(out)
        with torch.no_grad():
            for net, on, units in (("g", self.pen_g, self.units_g), ("d", self.pen_d, self.units_d)):
                if on:
                    raw = sum(float(unit.value(params)) for unit, params in units)
                    out[f"{net}_penalty"] = raw
                    out[f"w_{net}_penalty"] = lam.get("lam_penalty", 0.0) * raw
        out.update(lam)
        return out

    @torch.no_grad()
    def first_nonfinite(self, terms: bool = True) -> tuple[str, float] | None:
        """The first NaN or infinite loss term of the last step (``terms=True``) or weight of
        G, D or EMA-G, as ``(name, value)``; ``None`` when everything is finite.

        A weight is named ``"weight '<parameter>' of G"``; its value is NaN if it holds one,
        else its largest magnitude (inf). One fused norm per network: cheap beside a step
        (:mod:`normreg.gan.nonfinite`).
        """
        if terms:
            found = first_nonfinite_term(*self._last)
            if found is not None:
                return found
        return first_nonfinite_weight({"G": self.G, "D": self.D, "EMA-G": self.G_ema})

    @torch.no_grad()
    def _update_ema(self, t: int) -> None:
        if self.G_ema is None:
            return
        k = t - self.ema_start
        decay = min(self.cfg.ema_decay, (1 + k) / (10 + k))
        ema_p = list(self.G_ema.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in self.G.parameters()], 1.0 - decay)
        bufs_ema, bufs = list(self.G_ema.buffers()), list(self.G.buffers())
        if len(bufs_ema) != len(bufs):
            raise RuntimeError(f"EMA-G has {len(bufs_ema)} buffers and G {len(bufs)}: they must be copies")
        if bufs:
            torch._foreach_copy_(bufs_ema, bufs)

    # -- generation and evaluation ---------------------------------------------------------------
    @property
    def sampler(self) -> nn.Module:
        """EMA-G if enabled, else G."""
        return self.G_ema if self.G_ema is not None else self.G

    @torch.no_grad()
    def generate(self, inputs: Tensor, model: nn.Module | None = None, batch: int = 256) -> Tensor:
        """G's outputs (eval mode) for inputs (paired) or latents (unconditional)."""
        model = model or self.sampler
        was = model.training
        model.eval()
        out = torch.cat([model(inputs[i : i + batch]) for i in range(0, inputs.shape[0], batch)])
        model.train(was)
        return out

    def classifier(self):
        if not self._classifier_ready:
            self._classifier = load_or_train_classifier(self.data, seed=self.cfg.seed)
            if self._classifier is not None:
                self._classifier.to(self.device)
            self._classifier_ready = True
        return self._classifier

    def evaluate(self, split: str = "val") -> dict[str, float | None]:
        """Metrics of the EMA generator on ``split`` ("val" or "test"); see
        :func:`normreg.gan.evaluation.evaluate_trainer`."""
        return evaluate_trainer(self, split)

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """This trainer's state as checkpoint data (:mod:`normreg.gan.trainer_state`)."""
        return trainer_state_dict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state_dict()``'s data, exactly (:mod:`normreg.gan.trainer_state`)."""
        load_trainer_state(self, state)

    # -- run ---------------------------------------------------------------------------------------
    def sample_grid(self, path: Path) -> np.ndarray:
        """Write the sampler's grid of the fixed grid inputs to ``path`` (:mod:`normreg.gan.fixed_inputs`)."""
        out = self.generate(self.grid_inputs)
        return save_sample_grid(self.cfg, self.grid_inputs, out, self.grid_targets, self.data.channels, path)
