"""Benchmark support shared by ``benchmarks/`` (pytest-benchmark) and ``normreg bench``:
the standard workloads and the machine's memory-bandwidth probe."""

from .bandwidth import Bandwidth, measure_bandwidth
from .workloads import WORKLOADS, make_workload, workload_bytes

__all__ = ["WORKLOADS", "make_workload", "workload_bytes", "Bandwidth", "measure_bandwidth"]
