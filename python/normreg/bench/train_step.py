"""What the penalty costs inside a whole GAN training step.

One step = a discriminator update and a generator update (Adam, BCE-with-logits loss),
on the GAN trainer's default model when :mod:`normreg.gan` is part of the build, otherwise
on a stand-in DCGAN of the same family (said so in the result). The L1 weight penalty
(``L1(1e-4)`` on the weights of both networks, biases and norm layers excluded by
:func:`normreg.param_groups`) is applied three ways:

``none``
    no penalty: the baseline step;
``normreg``
    ``penalty.add_grad_(weights)`` after each ``backward()``: one fused pass, no graph;
``torch-eager``
    ``loss = loss + l * sum(w.abs().sum() for w in weights)`` before ``backward()``: the
    expression users write, whose cost is split between forward and backward.

The penalty's time is measured directly inside each step with ``time.perf_counter``:
for normreg the two ``add_grad_`` calls; for eager the two penalty expressions and their
backward passes (launched as a separate ``backward()`` right after the loss's, which does
the same autograd work and accumulates the same gradient, so that it can be timed). The
variants run interleaved, ``reps`` times each after warm-up, and the best of each is
kept. The regularization's share of a step is ``best penalty time / best step time``;
the issue's target is normreg's share at most a fifth of eager's. (The difference of two
step times, with and without the penalty, is reported too, but a step's run-to-run noise
is often larger than the penalty itself.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["GanSetup", "default_setup", "standin_setup", "measure_training_step"]

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
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
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
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2, True)]
            ch *= 2
        layers += [nn.Conv2d(ch, 1, 4, 1, 0, bias=False), nn.Flatten()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def standin_setup(size: int = 32, batch: int = 64, nz: int = 100, width: int = 32, nc: int = 3, seed: int = 0) -> GanSetup:
    """A DCGAN pair for ``size`` x ``size`` images (the stand-in for the trainer's model)."""
    torch.manual_seed(seed)
    g, d = _G(nz, width, nc, size), _D(width, nc, size)
    real = torch.rand(batch, nc, size, size).mul_(2).sub_(1)
    return GanSetup(f"stand-in DCGAN {size}x{size}, width {width}, batch {batch}", g, d, lambda n: torch.randn(n, nz), real)


def default_setup(batch: int | None = None) -> GanSetup:
    """The GAN trainer's default model and batch when :mod:`normreg.gan` provides them;
    otherwise :func:`standin_setup`, with the name saying so."""
    try:
        from normreg import gan  # noqa: F401
    except ModuleNotFoundError:
        s = standin_setup(batch=batch or 64)
        s.name += " (normreg.gan is not part of this build)"
        return s
    return _gan_setup(batch)


def _gan_setup(batch: int | None) -> GanSetup:
    """Adapter to normreg.gan: its default TrainConfig and models."""
    from normreg import gan

    try:
        cfg = gan.TrainConfig()
        g, d = gan.models.build(cfg)  # type: ignore[attr-defined]
        nz = cfg.nz
        bs = batch or cfg.batch_size
        size, nc = cfg.image_size, cfg.channels
    except AttributeError as exc:
        s = standin_setup(batch=batch or 64)
        s.name += f" (normreg.gan has no default-model builder this benchmark knows: {exc})"
        return s
    real = torch.rand(bs, nc, size, size).mul_(2).sub_(1)
    return GanSetup(f"normreg.gan default model ({type(g).__name__}/{type(d).__name__}), batch {bs}", g, d, lambda n: torch.randn(n, nz), real)


def _weights(model: nn.Module) -> list[torch.Tensor]:
    import normreg

    return list(normreg.param_groups(model, normreg.L1(STRENGTH))[0]["params"])


def _make_step(s: GanSetup, variant: str) -> tuple[Callable[[], None], list[float]]:
    import normreg

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


def measure_training_step(setup: GanSetup | None = None, *, warmup: int = 2, reps: int = 10) -> dict:
    """Best step time without a penalty, with normreg's and with the eager penalty, and
    the share of the step the penalty costs in each (see module doc)."""
    s = setup or default_setup()
    variants = ("none", "normreg", "torch-eager")
    steps = {}
    for v in variants:
        steps[v] = _make_step(s, v)
    n_params = sum(p.numel() for p in s.generator.parameters()) + sum(p.numel() for p in s.discriminator.parameters())
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
    share = {v: pen[v] / best[v] for v in pen}
    return {
        "model": s.name,
        "parameters": n_params,
        "penalized_weights": n_weights,
        "penalty": f"L1({STRENGTH:g}) on the weights of both networks",
        "reps": reps,
        "variants": {
            v: {"best_s": best[v], "median_s": sorted(times[v])[len(times[v]) // 2], "penalty_s": pen.get(v, 0.0)}
            for v in variants
        },
        "share": share,
        "share_ratio": share["normreg"] / share["torch-eager"] if share["torch-eager"] > 0 else None,
        "share_by_difference": {v: (best[v] - best["none"]) / best[v] for v in pen},
    }
