"""One GAN training step (default digits completion, batch 64) per weight-penalty mode.

The penalty is ``L1(1e-5)`` on G, applied as a loss term through autograd (``loss``), as a
fused gradient pass (``add_grad``), as a gradient inside ProxAdam's update pass (``grad``,
the trainer's default), as ProxAdam's proximal step (``prox``), or not at all (``none``: the
cost of the step itself). The full default run (``normreg train``, 2000 of
these steps plus evaluations) is a documented command, not a benchmark: see docs/trainer.md.
"""

from __future__ import annotations

import pytest
import torch

from normreg.gan import TrainConfig, Trainer

MODES = ["none", "loss", "add_grad", "grad", "prox"]


def _trainer(mode: str) -> Trainer:
    cfg = TrainConfig(eval_every=10**6, sample_every=10**6)
    if mode == "none":
        cfg = cfg.replace(weight_penalty="none")
    else:
        cfg = cfg.replace(penalty_mode=mode)
    return Trainer(cfg)


@pytest.mark.parametrize("other", ["add_grad", "grad"])
def test_penalty_modes_agree_after_one_step(other):
    """'loss', 'add_grad' and 'grad' add the same gradient: one step from the same state
    gives the same G."""
    a, b = _trainer("loss"), _trainer(other)
    a.step()
    b.step()
    for p, q in zip(a.G.parameters(), b.G.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.benchmark(group="gan-step/digits-completion")
@pytest.mark.parametrize("mode", MODES)
def test_gan_step(benchmark, mode):
    tr = _trainer(mode)
    tr.step()  # warm-up (allocations, Adam state)
    benchmark.pedantic(tr.step, rounds=20, iterations=1, warmup_rounds=2)
