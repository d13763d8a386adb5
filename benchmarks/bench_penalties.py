"""Penalty value and value + gradient: normreg against the torch code it replaces.

Groups are ``<op>/<workload>``, e.g. ``l1-value/dcgan``: within a group every
implementation runs on the same tensors. The cases (inputs, peers, tolerances) come from
:mod:`normreg.bench.cases`, the same ones ``normreg bench`` times; each benchmark first
asserts that its implementation agrees with normreg (normreg itself is checked against
the eager expression) and only then times it.

* ``l1-value``, ``sql2-value``, ``enet-value``: ``penalty.value(params)`` vs
  ``sum(p.abs().sum() for p in params)`` (torch-eager), ``torch._foreach_norm``
  (torch-foreach), ``torch.linalg.vector_norm`` per tensor, and ``torch.compile`` of the
  eager expression (``--compile``);
* ``l1-grad``, ``sql2-grad``, ``enet-grad``: ``penalty.add_grad_(params)`` vs
  ``expr(params).backward()``, the foreach gradient, and the compiled expression;
* ``l1-value-overhead`` / ``l1-grad-overhead`` on ``tiny1`` and ``tiny200`` (1 and 200 tensors
  of one element): fixed cost per call = t(tiny1), cost per tensor = (t(tiny200) - t(tiny1)) / 199.

Run ``pytest benchmarks/bench_penalties.py``; ``--benchmark-columns=min,median,rounds``
and ``--benchmark-json`` show the GB/s and bandwidth fraction kept in ``extra_info``.
"""

from __future__ import annotations

import pytest
from conftest import report

from normreg.bench import cases, runner

KINDS = ["l1", "squared_l2", "elastic_net"]
VALUE_IMPLS = ["normreg", "torch-eager", "torch-foreach", "torch-vector_norm", "torch-compile"]
GRAD_IMPLS = ["normreg", "torch-eager", "torch-foreach", "torch-compile"]
OVERHEAD_IMPLS = ["normreg", "torch-eager", "torch-foreach"]


def run(benchmark, case: cases.Case, impl: str, bandwidth) -> None:
    """Assert agreement with normreg, then time ``impl`` on fresh inputs of ``case``."""
    runner.check_agreement(case, ["torch-eager"] if impl == "normreg" else [impl])
    benchmark.group = case.group
    inputs = case.make_inputs()
    thunk = case.impl(impl).bind(inputs)
    if case.restore is not None:
        restore = case.restore(inputs)
        benchmark.pedantic(thunk, setup=restore, rounds=20, warmup_rounds=1)
    else:
        benchmark(thunk)
    report(benchmark, case.nbytes, bandwidth, case.bw_kind)


def _one(builder, workload: str, kind: str, use_compile: bool) -> cases.Case:
    (case,) = builder([workload], kinds=(kind,), compile=use_compile)
    return case


@pytest.mark.parametrize("impl", VALUE_IMPLS)
@pytest.mark.parametrize("kind", KINDS)
def test_penalty_value(benchmark, workload_name, kind, impl, use_compile, bandwidth):
    if impl == "torch-compile" and not use_compile:
        pytest.skip("torch.compile peers need --compile")
    run(benchmark, _one(cases.penalty_value_cases, workload_name, kind, use_compile), impl, bandwidth)


@pytest.mark.parametrize("impl", GRAD_IMPLS)
@pytest.mark.parametrize("kind", KINDS)
def test_penalty_value_and_grad(benchmark, workload_name, kind, impl, use_compile, bandwidth):
    if impl == "torch-compile" and not use_compile:
        pytest.skip("torch.compile peers need --compile")
    run(benchmark, _one(cases.penalty_grad_cases, workload_name, kind, use_compile), impl, bandwidth)


@pytest.mark.parametrize("impl", OVERHEAD_IMPLS)
@pytest.mark.parametrize("op", ["value", "grad"])
@pytest.mark.parametrize("tiny", ["tiny1", "tiny200"])
def test_per_call_overhead(benchmark, tiny, op, impl, bandwidth):
    builder = cases.penalty_value_cases if op == "value" else cases.penalty_grad_cases
    case = _one(builder, tiny, "l1", False)
    case.op = f"l1-{op}-overhead"
    run(benchmark, case, impl, bandwidth)
