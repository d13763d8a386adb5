"""Measured memory bandwidth of this machine, the yardstick of every benchmark.

* read: bytes of a buffer larger than the last-level cache divided by the best time of a
  full reduction over it (the fastest of torch's and numpy's sums);
* read+write: 2 x bytes over the best time of an in-place scale of the same buffer
  (what an in-place op such as a prox step must move).
Each is the best of several repetitions, with the process's default thread count.

:class:`Probe` holds such a buffer. The benchmark runner times a probe of the *same size
as each case* (one pass moves the case's bytes) in the same rounds as the case's
implementations (see :func:`normreg.bench.runner.run_case`): a case whose data fit in the
last-level cache is compared with a pass over an in-cache buffer (``in_cache``), a larger
one with a pass over memory, and on a machine whose bandwidth drifts from minute to minute
the share is taken against what the machine gave at that moment.
"""

from __future__ import annotations

import glob
import time
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Bandwidth", "Probe", "measure_bandwidth", "last_level_cache_bytes"]


def last_level_cache_bytes() -> int:
    """The largest CPU cache of this machine in bytes (Linux sysfs; 32 MiB when unknown)."""

    sizes = []
    for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            with open(path, encoding="ascii") as fh:
                text = fh.read().strip().upper()
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            sizes.append(int(text.rstrip("KMG")) * mult)
        except (OSError, ValueError):
            continue
    return max(sizes) if sizes else 32 << 20


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

    def __init__(self, mb: int = 256, *, nbytes: int | None = None) -> None:
        if nbytes is None:
            if mb < 1:
                raise ValueError(f"'mb' must be >= 1, got {mb}")
            nbytes = mb * (1 << 20)
        self.x = torch.ones(max(1, nbytes // 4), dtype=torch.float32)
        self.nbytes = self.x.numel() * 4
        #: whether the buffer fits in the last-level cache (its GB/s is then a cache's)
        self.in_cache = self.nbytes <= last_level_cache_bytes()

    @classmethod
    def same_size(cls, moved: int, kind: str) -> Probe:
        """A probe one of whose ``kind`` passes moves ``moved`` bytes, as a case's call does."""
        if kind not in ("read", "rw"):
            raise ValueError(f"'kind' must be 'read' or 'rw', got {kind!r}")
        return cls(nbytes=max(4, moved if kind == "read" else moved // 2))

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
