"""What ``normreg train``'s own bookkeeping costs over a bare loop doing the same math
(:func:`measure_trainer_overhead`; ``normreg bench`` reports it beside the training step of
:mod:`normreg.bench.train_step`)."""

from __future__ import annotations

import json
import time

import torch
import torch.nn.functional as F

from normreg.gan import TrainConfig, Trainer, _ops, load_data
from normreg.gan.data import make_inputs

__all__ = ["measure_trainer_overhead"]


def measure_trainer_overhead(
    config_changes: dict | None = None, *, warmup: int = 1, reps: int = 5, block: int | None = None
) -> dict:
    """What ``normreg train``'s own bookkeeping costs over a bare loop doing the same math.

    ``trainer``: ``Trainer.step()`` of ``TrainConfig()`` (plus ``config_changes``), with
    ``loss_terms()`` and its JSON log line every ``log_every`` steps, as ``normreg train``
    runs it (evaluations, samples and checkpoints excluded: their cadence is the user's).
    ``bare``: the loop a user would write over the *same* G, D, optimizers (the trainer's
    own objects, so the same ProxAdam and penalty), batches and losses: index a batch,
    build G's input, D's BCE step, G's BCE + λ·L1 step, the EMA update. The two take turns
    in blocks of ``block`` steps (default ``log_every``); ``ratio`` = best trainer block /
    best bare block (1.05: the trainer adds 5%).
    """
    cfg = TrainConfig(**(config_changes or {}))
    data = load_data(cfg)
    tr = Trainer(cfg, data=data)
    block = block or cfg.log_every
    # The bare loop's own copies of the models and optimizers, built like the trainer's
    # (same classes, groups and penalty), so both loops start from identical states.
    bare = Trainer(cfg, data=data)
    G, D, opt_g, opt_d, G_ema = bare.G, bare.D, bare.opt_g, bare.opt_d, bare.G_ema
    x_all = bare.train_x
    n, b = x_all.shape[0], bare.batch
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    perm = torch.randperm(n, generator=gen)
    state = {"t": 0}
    G_params, ema_params = list(G.parameters()), list(G_ema.parameters()) if G_ema is not None else []
    lam_rec = cfg.recon_weight

    def bare_step() -> None:
        t = state["t"]
        i = (t * b) % max(1, n - b + 1)
        x = x_all[perm[i : i + b]]
        c = make_inputs(cfg, x, gen) if cfg.paired else torch.randn(b, cfg.z_dim, generator=gen)
        fake = G(c)
        if D is not None:
            D.requires_grad_(True)
            lr_, lf = D(x, c), D(fake.detach(), c)
            loss_d = 0.5 * (
                F.binary_cross_entropy_with_logits(lr_, torch.ones_like(lr_))
                + F.binary_cross_entropy_with_logits(lf, torch.zeros_like(lf))
            )
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            D.requires_grad_(False)
            lg = D(fake, c)
            loss_g = cfg.adv_weight * F.binary_cross_entropy_with_logits(lg, torch.ones_like(lg))
        else:
            loss_g = fake.new_zeros(())
        if cfg.paired and cfg.recon != "none":
            loss_g = loss_g + lam_rec * _ops.recon_loss(cfg.recon, fake, x)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if G_ema is not None:
            with torch.no_grad():
                decay = min(cfg.ema_decay, (1 + t) / (10 + t))
                torch._foreach_lerp_(ema_params, [p.detach() for p in G_params], 1.0 - decay)
        state["t"] = t + 1

    log_lines: list[str] = []

    def trainer_block() -> None:
        for _ in range(block):
            tr.step()
            if tr.step_ % cfg.log_every == 0:
                log_lines.append(json.dumps({"step": tr.step_, **tr.loss_terms()}))
        del log_lines[:]

    def bare_block() -> None:
        for _ in range(block):
            bare_step()

    runs = {"trainer": trainer_block, "bare": bare_block}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for i in range(warmup + reps):
        for k, f in runs.items():
            t0 = time.perf_counter()
            f()
            if i >= warmup:
                times[k].append((time.perf_counter() - t0) / block)
    best = {k: min(v) for k, v in times.items()}
    return {
        "model": f"TrainConfig() default: task {cfg.task}, {cfg.dataset} {data.image_size}x{data.image_size}, "
        f"batch {tr.batch}, penalty_mode {cfg.penalty_mode}",
        "config": {k: str(v) for k, v in (config_changes or {}).items()},
        "block_steps": block,
        "reps": reps,
        "trainer_step_s": best["trainer"],
        "bare_step_s": best["bare"],
        "trainer_median_s": sorted(times["trainer"])[len(times["trainer"]) // 2],
        "bare_median_s": sorted(times["bare"])[len(times["bare"]) // 2],
        "ratio": best["trainer"] / best["bare"],
    }
