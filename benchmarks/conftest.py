"""Shared workloads and the bandwidth probe for the pytest-benchmark suite.

Fixtures
--------
workload_name : "dcgan" | "small200" | "big25m" (parametrized)
workload      : fresh float32 tensors of that workload (see normreg.bench.workloads)
bandwidth     : normreg.bench.Bandwidth measured once per session (read / read+write GB/s)

``report(benchmark, nbytes, bandwidth, kind)`` adds GB/s and the fraction of measured
bandwidth to a benchmark's ``extra_info`` (shown with ``--benchmark-columns`` or saved
with ``--benchmark-json``). ``--compile`` adds torch.compile peers (slow to compile).
"""

from __future__ import annotations

import pytest

from normreg.bench import WORKLOADS, make_workload, measure_bandwidth


def pytest_addoption(parser):
    parser.addoption(
        "--compile", action="store_true", default=False, help="also benchmark torch.compile peers"
    )
    parser.addoption(
        "--compile-backend", default="inductor", help="torch.compile backend of the compiled training step"
    )


@pytest.fixture(scope="session")
def use_compile(request) -> bool:
    return bool(request.config.getoption("--compile"))


@pytest.fixture(scope="session")
def bandwidth(request):
    disabled = request.config.getoption("--benchmark-disable", default=False)
    return measure_bandwidth(mb=16 if disabled else 256, reps=1 if disabled else 7)


@pytest.fixture(params=WORKLOADS)
def workload_name(request) -> str:
    return request.param


@pytest.fixture
def workload(workload_name):
    return make_workload(workload_name)


def report(benchmark, nbytes: int, bandwidth, kind: str = "read") -> None:
    """Record GB/s and the fraction of the machine's measured bandwidth (kind: read | rw)."""
    stats = getattr(benchmark, "stats", None)
    if not stats:
        return
    t = stats.stats.min
    gbs = nbytes / t / 1e9
    peak = bandwidth.read_gbs if kind == "read" else bandwidth.rw_gbs
    benchmark.extra_info.update(
        {"GB/s": round(gbs, 2), "fraction_of_bandwidth": round(gbs / peak, 3), "bandwidth_kind": kind}
    )
