"""Soft threshold in place on the shared workloads: normreg vs a per-tensor
``p.copy_(F.softshrink(p, t))`` loop and a ``torch._foreach_*`` composition.

Each benchmark first checks that the implementation agrees with normreg, then times it
with ``benchmark.pedantic`` so every round starts from the same data. Bandwidth: the op
reads and writes every element once (``rw``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import report

import normreg
from normreg.bench import workload_bytes

THRESHOLD = 0.01  # the workloads are N(0, 0.02^2): about 38% of the entries become 0


def _softshrink_loop(ts):
    with torch.no_grad():
        for p in ts:
            p.copy_(F.softshrink(p, THRESHOLD))


def _foreach(ts):
    # soft(x, t) = x - clamp(x, -t, t)
    c = torch._foreach_clamp_min(ts, -THRESHOLD)
    torch._foreach_clamp_max_(c, THRESHOLD)
    torch._foreach_sub_(ts, c)


def _normreg(ts):
    normreg.prox.soft_threshold_(ts, THRESHOLD)


IMPLS = {"normreg": _normreg, "torch-softshrink": _softshrink_loop, "torch-foreach": _foreach}


@pytest.mark.parametrize("impl", list(IMPLS))
def test_soft_threshold(benchmark, workload, workload_name, bandwidth, impl):
    benchmark.group = f"soft-threshold/{workload_name}"
    fn = IMPLS[impl]
    original = [t.clone() for t in workload]
    ours = [t.clone() for t in workload]
    _normreg(ours)
    fn(workload)
    for a, b in zip(workload, ours):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)

    def setup():
        for t, o in zip(workload, original):
            t.copy_(o)

    rounds = 5 if workload_name == "big25m" else 20
    benchmark.pedantic(fn, args=(workload,), setup=setup, rounds=rounds, iterations=1, warmup_rounds=1)
    report(benchmark, 2 * workload_bytes(workload), bandwidth, "rw")
