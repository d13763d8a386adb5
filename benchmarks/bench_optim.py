"""Fused proximal optimizer steps on the shared workloads.

* ``ProxAdam(penalty=L1)`` vs ``torch.optim.Adam(foreach=True)`` and
  ``torch.optim.Adam(fused=True)``, each followed by an in-place softshrink of every
  param at ``lr * l`` (what the fused prox does in the same pass);
* ``ProxSGD(momentum, penalty=L1)`` vs ``torch.optim.SGD(foreach=True)`` + softshrink;
* the same two with ``penalty_mode="grad"`` (the trainer's default: ``l * sign(w)`` added to
  the gradient inside the update pass) vs torch's step on ``grad + l * sign(w)`` (foreach).

Each benchmark first checks that one step of the pair agrees with ours from the same
state, then times steps; params are restored before every round (``pedantic(setup=)``).
Bandwidth: Adam moves params (r/w), grads (r), exp_avg and exp_avg_sq (r/w) = 7x the
param bytes; SGD with momentum 5x.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import report

import normreg
from normreg.bench import workload_bytes
from normreg.optim import ProxAdam, ProxSGD

LR, LAM = 1e-3, 5.0  # threshold lr * l = 5e-3 on N(0, 0.02^2) params


def _grads(params):
    g = torch.Generator().manual_seed(1)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 0.01


def _softshrink_(params, t):
    with torch.no_grad():
        for p in params:
            p.copy_(F.softshrink(p, t))


def _make(kind, impl, params, mode="prox"):
    if kind == "adam":
        if impl == "normreg":
            opt = ProxAdam(params, lr=LR, penalty=normreg.L1(LAM), penalty_mode=mode)
            return opt.step
        opt = torch.optim.Adam(params, lr=LR, **{impl.split("-")[1]: True})
    else:
        if impl == "normreg":
            opt = ProxSGD(params, lr=LR, momentum=0.9, penalty=normreg.L1(LAM), penalty_mode=mode)
            return opt.step
        opt = torch.optim.SGD(params, lr=LR, momentum=0.9, foreach=True)

    if mode == "grad":
        g0s = [p.grad for p in params]

        def grad_step():
            with torch.no_grad():  # grad + l * sign(w), out of place: every step from the same grads
                grads = torch._foreach_add(g0s, torch._foreach_sign(params), alpha=LAM)
            for p, g in zip(params, grads):
                p.grad = g
            opt.step()

        return grad_step

    def step():
        opt.step()
        _softshrink_(params, LR * LAM)

    return step


def _bench(benchmark, workload, workload_name, bandwidth, kind, impl, traffic, mode="prox"):
    name = "prox-adam" if kind == "adam" else "prox-sgd"
    benchmark.group = f"{name}{'-grad' if mode == 'grad' else ''}/{workload_name}"
    original = [t.clone() for t in workload]
    # agreement: one step of the pair and of ours from the same params, grads and state
    ours = [t.clone().requires_grad_() for t in workload]
    params = [t.clone().requires_grad_() for t in workload]
    _grads(ours)
    _grads(params)
    _make(kind, "normreg", ours, mode)()
    step = _make(kind, impl, params, mode)
    step()
    for a, b in zip(params, ours):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    def setup():
        with torch.no_grad():
            for t, o in zip(params, original):
                t.copy_(o)

    rounds = 5 if workload_name == "big25m" else 15
    benchmark.pedantic(step, setup=setup, rounds=rounds, iterations=1, warmup_rounds=1)
    report(benchmark, traffic * workload_bytes(workload), bandwidth, "rw")


@pytest.mark.parametrize("impl", ["normreg", "torch-foreach", "torch-fused"])
def test_prox_adam_step(benchmark, workload, workload_name, bandwidth, impl):
    _bench(benchmark, workload, workload_name, bandwidth, "adam", impl, 7)


@pytest.mark.parametrize("impl", ["normreg", "torch-foreach"])
def test_prox_sgd_step(benchmark, workload, workload_name, bandwidth, impl):
    _bench(benchmark, workload, workload_name, bandwidth, "sgd", impl, 5)


@pytest.mark.parametrize("impl", ["normreg", "torch-foreach", "torch-fused"])
def test_prox_adam_grad_mode_step(benchmark, workload, workload_name, bandwidth, impl):
    _bench(benchmark, workload, workload_name, bandwidth, "adam", impl, 7, mode="grad")


@pytest.mark.parametrize("impl", ["normreg", "torch-foreach"])
def test_prox_sgd_grad_mode_step(benchmark, workload, workload_name, bandwidth, impl):
    _bench(benchmark, workload, workload_name, bandwidth, "sgd", impl, 5, mode="grad")
