"""What the penalty costs inside a whole GAN training step.

With :mod:`normreg.gan` in the build, a step is ``Trainer.step()`` of the trainer's default
configuration (``TrainConfig()``: image completion on the 8x8 digits, U-Net generator and
patch discriminator, batch 64, Adam), whose default weight penalty is L1 on the generator's
weights (biases and norm layers excluded), applied by ``penalty.add_grad_``. Without it, a
stand-in DCGAN step (:func:`standin_setup`) is measured instead and the result says so.

The L1 weight penalty is applied these ways:

``none``
    no penalty: the baseline step;
``normreg``
    the trainer's default ``penalty_mode="grad"``: ``ProxAdam(penalty_mode="grad")`` adds
    ``l * sign(w)`` to the gradient inside its update pass, so the weights and gradients are
    read once per step (in the stand-in step: ``penalty.add_grad_``);
``normreg-add_grad``
    ``penalty.add_grad_(weights)`` after ``backward()``, then ``torch.optim.Adam``: one
    fused pass of its own, no graph (``penalty_mode="add_grad"``);
``torch-eager``
    ``loss = loss + l * sum(w.abs().sum() for w in weights)`` before ``backward()``: the
    expression users write, whose cost is split between the forward and the backward.

How the penalty's time is measured. ``normreg``: the penalized optimizer steps are timed
inside the trainer's step, and so are the same optimizer's steps in a twin trainer whose
groups carry no penalty; the penalty's cost is the difference of the two best times (the
marginal cost of the fused term, in the cache state of a real step). ``normreg-add_grad``:
the ``add_grad_`` calls inside the step, timed with ``time.perf_counter``. ``torch-eager``:
the expression and its ``backward()`` on the same weights, run right after the step (inside
the step its backward is fused into the loss's backward pass and cannot be timed apart; run
alone it does the same autograd work and accumulates the same gradient into ``.grad``,
which the next step discards; its data are then warm in cache, which favours eager). The
variants run interleaved, ``reps`` times each after warm-up, and the best time of each is
kept. The regularization's share of a step is ``penalty time / best step time``; the
issue's target is normreg's share at most a fifth of eager's. The difference of step
times with and without the penalty is reported too, but a step's run-to-run noise is often
larger than the penalty itself.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import normreg
from normreg.gan import TrainConfig, Trainer, load_data

__all__ = [
    "GanSetup",
    "default_setup",
    "standin_setup",
    "measure_training_step",
    "measure_trainer_step",
    "gan_available",
]

STRENGTH = 1e-4


@dataclass
class GanSetup:
    """Everything a step needs: the two networks, a latent sampler and a real batch."""

    name: str
    generator: nn.Module
    discriminator: nn.Module
    latent: Callable[[int], torch.Tensor]
    real: torch.Tensor


class _G(nn.Module):
    def __init__(self, nz: int, ngf: int, nc: int, size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        n_up = {8: 1, 16: 2, 32: 3, 64: 4}[size]
        ch = ngf * 2 ** (n_up - 1)
        layers += [nn.ConvTranspose2d(nz, ch, 4, 1, 0, bias=False), nn.BatchNorm2d(ch), nn.ReLU(True)]
        for _ in range(n_up - 1):
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ch // 2),
                nn.ReLU(True),
            ]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.nz = nz

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.nz, 1, 1))


class _D(nn.Module):
    def __init__(self, ndf: int, nc: int, size: int) -> None:
        super().__init__()
        n_down = {8: 1, 16: 2, 32: 3, 64: 4}[size]
        layers: list[nn.Module] = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        ch = ndf
        for _ in range(n_down - 1):
            layers += [
                nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ch * 2),
                nn.LeakyReLU(0.2, True),
            ]
            ch *= 2
        layers += [nn.Conv2d(ch, 1, 4, 1, 0, bias=False), nn.Flatten()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def standin_setup(
    size: int = 32, batch: int = 64, nz: int = 100, width: int = 32, nc: int = 3, seed: int = 0
) -> GanSetup:
    """A DCGAN pair for ``size`` x ``size`` images (the stand-in for the trainer's model)."""
    torch.manual_seed(seed)
    g, d = _G(nz, width, nc, size), _D(width, nc, size)
    real = torch.rand(batch, nc, size, size).mul_(2).sub_(1)
    return GanSetup(
        f"stand-in DCGAN {size}x{size}, width {width}, batch {batch}",
        g,
        d,
        lambda n: torch.randn(n, nz),
        real,
    )


def gan_available() -> bool:
    """Whether this installation has the GAN trainer (a build may leave normreg.gan out).
    Only its presence is asked: a normreg.gan that fails to import raises, not hidden."""
    return importlib.util.find_spec("normreg.gan") is not None


def default_setup(batch: int | None = None) -> GanSetup:
    """The stand-in DCGAN pair, named as such (used when :mod:`normreg.gan` is missing)."""
    s = standin_setup(batch=batch or 64)
    s.name += " (normreg.gan is not part of this build)"
    return s


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return list(normreg.param_groups(model, normreg.L1(STRENGTH))[0]["params"])


def _make_step(s: GanSetup, variant: str) -> tuple[Callable[[], None], list[float]]:
    g, d = s.generator, s.discriminator
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    wg, wd = _weights(g), _weights(d)
    pen = normreg.L1(STRENGTH)
    bce = nn.BCEWithLogitsLoss()
    n = s.real.shape[0]
    ones, zeros = torch.ones(n, 1), torch.zeros(n, 1)
    pen_times: list[float] = []

    def eager_(ws, loss):
        t0 = time.perf_counter()
        term = STRENGTH * sum(w.abs().sum() for w in ws)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        term.backward()
        return (t1 - t0) + (time.perf_counter() - t2)

    def step() -> None:
        spent = 0.0
        # discriminator
        opt_d.zero_grad(set_to_none=False)
        fake = g(s.latent(n))
        loss_d = bce(d(s.real), ones) + bce(d(fake.detach()), zeros)
        if variant == "torch-eager":
            spent += eager_(wd, loss_d)
        else:
            loss_d.backward()
        if variant == "normreg":
            t0 = time.perf_counter()
            pen.add_grad_(wd)
            spent += time.perf_counter() - t0
        opt_d.step()
        # generator
        opt_g.zero_grad(set_to_none=False)
        loss_g = bce(d(fake), ones)
        if variant == "torch-eager":
            spent += eager_(wg, loss_g)
        else:
            loss_g.backward()
        if variant == "normreg":
            t0 = time.perf_counter()
            pen.add_grad_(wg)
            spent += time.perf_counter() - t0
        opt_g.step()
        pen_times.append(spent)

    return step, pen_times


def _shares(best: dict, times: dict, pen: dict, variants) -> dict:
    """The per-variant times and the regularization shares of a step (both measurements)."""
    share = {v: pen[v] / best[v] for v in pen}
    return {
        "variants": {
            v: {
                "best_s": best[v],
                "median_s": sorted(times[v])[len(times[v]) // 2],
                "penalty_s": pen.get(v, 0.0),
            }
            for v in variants
        },
        "share": share,
        "share_ratio": share["normreg"] / share["torch-eager"] if share["torch-eager"] > 0 else None,
        # every normreg way of applying the penalty against eager (the stand-in has only one)
        "share_ratios": {
            v: share[v] / share["torch-eager"]
            for v in share
            if v.startswith("normreg") and share["torch-eager"] > 0
        },
        "share_by_difference": {v: (best[v] - best["none"]) / best[v] for v in pen},
    }


def measure_training_step(setup: GanSetup | None = None, *, warmup: int = 2, reps: int = 10) -> dict:
    """Best step time without a penalty, with normreg's and with the eager penalty, and
    the share of the step the penalty costs in each (see module doc)."""
    s = setup or default_setup()
    variants = ("none", "normreg", "torch-eager")
    steps = {}
    for v in variants:
        steps[v] = _make_step(s, v)
    n_params = sum(p.numel() for p in s.generator.parameters()) + sum(
        p.numel() for p in s.discriminator.parameters()
    )
    n_weights = sum(w.numel() for w in _weights(s.generator) + _weights(s.discriminator))
    times: dict[str, list[float]] = {v: [] for v in variants}
    torch.manual_seed(1)
    for _ in range(warmup):
        for v in variants:
            steps[v][0]()
    for v in variants:
        steps[v][1].clear()
    for _ in range(reps):
        for v in variants:
            t0 = time.perf_counter()
            steps[v][0]()
            times[v].append(time.perf_counter() - t0)
    best = {v: min(ts) for v, ts in times.items()}
    pen = {v: min(steps[v][1]) for v in ("normreg", "torch-eager")}
    return {
        "model": s.name,
        "parameters": n_params,
        "penalized_weights": n_weights,
        "penalty": f"L1({STRENGTH:g}) on the weights of both networks",
        "reps": reps,
        **_shares(best, times, pen, variants),
    }


def measure_trainer_step(config_changes: dict | None = None, *, warmup: int = 2, reps: int = 10) -> dict:
    """The training-step measurement on ``normreg.gan.Trainer`` with ``TrainConfig()`` (plus
    ``config_changes``, e.g. a smaller batch for a smoke run); see the module doc."""

    base = TrainConfig(**(config_changes or {}))
    if base.weight_penalty != "l1":
        base = base.replace(weight_penalty="l1")
    data = load_data(base)
    trainers = {
        "none": Trainer(base.replace(weight_penalty="none"), data=data),
        "normreg": Trainer(base.replace(penalty_mode="grad"), data=data),
        "normreg-add_grad": Trainer(base.replace(penalty_mode="add_grad"), data=data),
        "torch-eager": Trainer(base.replace(penalty_mode="add_grad"), data=data),
        # the fused trainer's optimizer with no penalty: the baseline of its optimizer step
        "fused-baseline": Trainer(base.replace(penalty_mode="grad"), data=data),
    }
    for opt in (trainers["fused-baseline"].opt_g, trainers["fused-baseline"].opt_d):
        for group in opt.param_groups if opt is not None else []:
            group["penalty"] = None
    # penalty times measured directly; the fused one is a difference of opt_times (below)
    pen_times: dict[str, list[float]] = {"normreg-add_grad": [], "torch-eager": []}
    spent = [0.0]

    def timed(f):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            out = f(*args, **kwargs)
            spent[0] += time.perf_counter() - t0
            return out

        return run

    # normreg, fused: the penalized optimizer steps inside the trainer's step (their cost
    # over the same optimizer's steps without a penalty is the penalty's cost)
    opt_times: dict[str, list[float]] = {"normreg": [], "fused-baseline": []}
    for v in opt_times:
        tr = trainers[v]
        for opt, on in ((tr.opt_g, tr.pen_g), (tr.opt_d, tr.pen_d)):
            if opt is not None and on:
                opt.step = timed(opt.step)

    # normreg, add_grad: the trainer's own add_grad_ call inside its step
    ta = trainers["normreg-add_grad"]
    ta._apply_penalty_after = timed(ta._apply_penalty_after)

    # eager: the same penalty as a loss term (the expression users write), no add_grad_
    te = trainers["torch-eager"]

    def eager_term(params, strength):
        return strength * sum(p.abs().sum() for p in params)

    def eager_before(units, strength, loss_terms):
        loss_terms.append(eager_term([p for _, params in units for p in params], strength))

    te._apply_penalty_before = eager_before
    te._apply_penalty_after = lambda opt, units, strength: None

    def eager_cost() -> float:
        cost = 0.0
        for on, groups in ((te.pen_g, te.groups_g), (te.pen_d, te.groups_d)):
            if on:
                params = te._penalized(groups)
                t0 = time.perf_counter()
                eager_term(params, te._penalty_at(te.step_)).backward()
                cost += time.perf_counter() - t0
        return cost

    times: dict[str, list[float]] = {v: [] for v in trainers}
    for i in range(warmup + reps):
        for v, trainer in trainers.items():
            spent[0] = 0.0
            t0 = time.perf_counter()
            trainer.step()
            dt = time.perf_counter() - t0
            pen = eager_cost() if v == "torch-eager" else spent[0]
            if i >= warmup:
                times[v].append(dt)
                if v in opt_times:
                    opt_times[v].append(pen)
                elif v in pen_times:
                    pen_times[v].append(pen)
    del times["fused-baseline"]
    best = {v: min(ts) for v, ts in times.items()}
    pen = {v: min(ts) for v, ts in pen_times.items()}
    opt_best = {v: min(ts) for v, ts in opt_times.items()}
    pen["normreg"] = opt_best["normreg"] - opt_best["fused-baseline"]
    tr = trainers["normreg"]
    g, d = tr.G, tr.D
    n_params = sum(p.numel() for p in g.parameters()) + (
        sum(p.numel() for p in d.parameters()) if d is not None else 0
    )
    n_weights = sum(p.numel() for p in tr._penalized(tr.groups_g or [])) + (
        sum(p.numel() for p in tr._penalized(tr.groups_d)) if tr.pen_d else 0
    )
    cfg = tr.cfg
    return {
        "model": (
            f"normreg.gan default model: {type(g).__name__} + {type(d).__name__ if d is not None else 'no D'}, "
            f"task {cfg.task}, {cfg.dataset} {tr.data.image_size}x{tr.data.image_size}, batch {tr.batch}"
        ),
        "config": {k: str(v) for k, v in (config_changes or {}).items()},
        "parameters": n_params,
        "penalized_weights": n_weights,
        "penalty": f"L1({cfg.weight_penalty_strength:g}) on the weights of {'G and D' if cfg.penalty_on == 'both' else cfg.penalty_on.upper()}",
        "reps": reps,
        "optimizer_step": {
            "with_penalty_s": opt_best["normreg"],
            "without_penalty_s": opt_best["fused-baseline"],
            "note": "normreg: ProxAdam(penalty_mode='grad') steps inside the training step; its penalty "
            "cost is their best time minus the best time of the same steps with no penalty",
        },
        **_shares(best, times, pen, list(times)),
    }
