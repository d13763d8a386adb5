"""Measured memory bandwidth of this machine, the yardstick of every benchmark.

* read: bytes of a buffer larger than the last-level cache divided by the best time of a
  full reduction over it (the fastest of torch's and numpy's sums);
* read+write: 2 x bytes over the best time of an in-place scale of the same buffer
  (what an in-place op such as a prox step must move).
Each is the best of several repetitions, with the process's default thread count.

:class:`Probe` keeps such a buffer for a whole run, so that the benchmark runner can time
the probe in the same rounds as each case's implementations (see
:func:`normreg.bench.runner.run_case`): on a machine whose bandwidth drifts from minute to
minute, a case's share of the bandwidth is then taken against what the machine gave at
that moment, not at the start of the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Bandwidth", "Probe", "measure_bandwidth"]


@dataclass(frozen=True)
class Bandwidth:
    read_gbs: float
    rw_gbs: float
    buffer_mb: float
    threads: int


def _best(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


class Probe:
    """A buffer larger than the last-level cache and the two passes that measure bandwidth
    over it: ``read()`` (torch's sum, ``nbytes`` read) and ``rw()`` (an in-place scale by 1,
    ``2 * nbytes`` moved)."""

    def __init__(self, mb: int = 256) -> None:
        if mb < 1:
            raise ValueError(f"'mb' must be >= 1, got {mb}")
        self.x = torch.ones(mb * (1 << 20) // 4, dtype=torch.float32)
        self.nbytes = self.x.numel() * 4

    def read(self) -> None:
        self.x.sum()

    def rw(self) -> None:
        self.x.mul_(1.0)

    def moved(self, kind: str) -> int:
        """Bytes one pass of ``kind`` ("read" or "rw") moves."""
        return self.nbytes if kind == "read" else 2 * self.nbytes


def measure_bandwidth(mb: int = 256, reps: int = 7) -> Bandwidth:
    n = mb * (1 << 20) // 4
    x = torch.ones(n, dtype=torch.float32)
    a = x.numpy()
    nbytes = n * 4
    t_read = min(_best(lambda: x.sum(), reps), _best(lambda: a.sum(), reps))
    t_rw = min(_best(lambda: x.mul_(1.0), reps), _best(lambda: np.multiply(a, 1.0, out=a), reps))
    return Bandwidth(nbytes / t_read / 1e9, 2 * nbytes / t_rw / 1e9, nbytes / 1e6, torch.get_num_threads())
