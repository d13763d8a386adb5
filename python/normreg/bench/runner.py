"""Timing: agreement first, then best-of-N after warm-up.

For every case the runner

1. checks agreement: each implementation runs ``case.check_calls`` times on fresh inputs
   and its result is compared with normreg's by ``torch.testing.assert_close`` at the case's
   tolerance. A disagreement raises :class:`AgreementError` and nothing of that case is
   timed: a wrong implementation never becomes a row of the table;
2. times each implementation on its own fresh inputs: ``warmup`` untimed calls (which also
   pay for compilation of ``torch-compile`` peers), then ``reps`` timed repetitions with
   ``time.perf_counter``, keeping the best (the minimum: the least disturbed run) and the
   median. The implementations of a case take turns (rounds of :data:`ROUND` repetitions,
   each after one untimed call), so a drift of the machine's speed during the run hits
   all of them alike. In-place ops get their inputs restored before every repetition, outside the
   timed region. Ops faster than ``min_rep_s`` that need no restore are called
   ``number`` times per repetition and the time divided, so that microsecond calls are
   not lost in timer resolution.

Thread counts are set for both libraries at once (:func:`threads`): torch's intra-op pool
and normreg's kernels.

The agreement check is in :mod:`normreg.bench.agreement`, the timers and their rounds in
:mod:`normreg.bench.timers`; this module holds a case's result (:class:`CaseResult`),
:func:`run_case`, :func:`thread_scaling` and the thread counts.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

import normreg
from normreg._loader import _C
from normreg.bench.bandwidth import Probe

from .agreement import AgreementError, check_agreement
from .cases import Case
from .timers import (  # noqa: F401
    MAX_NUMBER,
    MIN_REP_S,
    PROBE,
    ROUND,
    Timing,
    _ProbeTimer,
    _take_turns,
    _Timer,
    time_impl,
)

__all__ = [
    "AgreementError",
    "Timing",
    "CaseResult",
    "threads",
    "check_agreement",
    "time_impl",
    "run_case",
    "thread_counts",
    "thread_scaling",
]


@dataclass
class CaseResult:
    family: str
    op: str
    workload: str
    group: str
    nbytes: int
    bw_kind: str
    tol: tuple[float, float]
    timings: dict[str, Timing] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    #: bandwidth (GB/s, of kind bw_kind) of a same-size probe timed in the same rounds, if probed
    probe_gbs: float | None = None
    #: whether that probe's buffer fits in the last-level cache
    probe_in_cache: bool | None = None

    def speedups(self) -> dict[str, float]:
        """normreg's speed-up over each peer: peer's best time / normreg's best time."""
        ours = self.timings.get("normreg")
        if ours is None:
            return {}
        return {k: t.best_s / ours.best_s for k, t in self.timings.items() if k != "normreg"}

    def as_dict(self, bandwidth=None) -> dict:
        out = {
            "family": self.family,
            "op": self.op,
            "workload": self.workload,
            "group": self.group,
            "nbytes": self.nbytes,
            "bw_kind": self.bw_kind,
            "tol": {"rtol": self.tol[0], "atol": self.tol[1]},
            "results": {},
            "speedup": self.speedups(),
            "notes": dict(self.notes),
        }
        # A share only against a probe of the case's size timed beside it (the start-of-run
        # figure is a memory buffer's at another minute: no yardstick for a case in cache).
        peak = None
        if self.probe_gbs is not None:
            out["probe_gbs"] = peak = self.probe_gbs
            out["probe_in_cache"] = bool(self.probe_in_cache)
        for name, t in self.timings.items():
            row = t.as_dict()
            row["gbs"] = self.nbytes / t.best_s / 1e9
            if peak is not None:
                row["fraction_of_bandwidth"] = row["gbs"] / peak
            out["results"][name] = row
        return out


@contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` threads in torch and in normreg's kernels (None: unchanged)."""

    if n is None:
        yield
        return
    before_torch, before_ours = torch.get_num_threads(), int(_C.thread_override())
    torch.set_num_threads(n)
    normreg.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before_torch)
        normreg.set_num_threads(before_ours)


def thread_counts(max_threads: int | None = None) -> list[int]:
    """1, 2, 4, ... up to the machine's thread count, plus that count itself."""

    if max_threads is None:
        max_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    top = max(1, int(max_threads or 1))
    out, n = [], 1
    while n < top:
        out.append(n)
        n *= 2
    out.append(top)
    if len(out) == 1:
        out.append(2)  # a one-core machine still reports the 2-thread ratio (oversubscribed)
    return out


def run_case(
    case: Case,
    *,
    warmup: int = 1,
    reps: int = 5,
    impls: Iterable[str] | None = None,
    n_threads: int | None = None,
    probe=None,
) -> CaseResult:
    """Check agreement of every implementation, then time them side by side.

    Raises :class:`AgreementError` before any timing if a peer disagrees with normreg.
    ``impls`` restricts the run to these implementation names (normreg is always run).
    The implementations take turns: rounds of :data:`ROUND` timed repetitions each, every
    round after one untimed call (so each round starts from that implementation's own warm
    state), until each has ``reps``. A machine whose speed drifts during a run (other
    tenants, frequency) then affects every implementation alike instead of whichever ran in
    the slow minute.

    ``probe``: ``True`` (or a :class:`normreg.bench.bandwidth.Probe`, whose class is
    used) times a probe of the case's size (``Probe.same_size``: one read or read+write
    pass moves the case's bytes) in the same turns; its best gives ``probe_gbs``, the
    bandwidth the case's share is taken against, and ``probe_in_cache`` says whether that
    buffer fits in the last-level cache (a cache's bandwidth, not memory's).
    """
    wanted = None if impls is None else set(impls) | {"normreg"}
    chosen = [i for i in case.impls if wanted is None or i.name in wanted]
    with threads(n_threads):
        check_agreement(case, [i.name for i in chosen])
        res = CaseResult(case.family, case.op, case.workload, case.group, case.nbytes, case.bw_kind, case.tol)
        res.notes = {i.name: i.note for i in chosen if i.note}
        timers: dict = {i.name: _Timer(case, i, warmup, MIN_REP_S, MAX_NUMBER) for i in chosen}
        if probe is not None and probe is not False and case.bw_kind in ("read", "rw"):
            maker = probe if isinstance(probe, type) else Probe
            timers[PROBE] = _ProbeTimer(maker.same_size(case.nbytes, case.bw_kind), case.bw_kind)
        times = _take_turns(timers, reps)
        for name, ts in times.items():
            if name == PROBE:
                res.probe_gbs = timers[name].bytes / min(ts) / 1e9
                res.probe_in_cache = timers[name].in_cache
                continue
            res.timings[name] = Timing(min(ts), statistics.median(ts), reps, timers[name].number)
    return res


def thread_scaling(
    case: Case,
    counts: Sequence[int],
    *,
    impls: Iterable[str] = ("normreg", "torch-eager"),
    warmup: int = 1,
    reps: int = 5,
) -> dict:
    """Best time of each named implementation at each thread count, and the ratio
    ``time(1 thread) / time(n threads)`` (the speed-up from threads; ideal: n).

    Name torch-compile too (the CLI does for the penalty values, with ``--compile``):
    whether a peer scales with threads tells a compute-bound kernel from one limited by
    memory bandwidth, which decides how far a memory-bound normreg pass can be ahead of it
    on a given machine."""
    names = [i.name for i in case.impls if i.name in set(impls)]
    out: dict = {"group": case.group, "family": case.family, "counts": list(counts), "impls": {}}
    check_agreement(case, names)
    # Every (implementation, thread count) takes turns, as in run_case: on a machine whose
    # speed drifts, timing all of 1 thread first and then all of 2 threads would put the
    # drift into the ratio.
    timers: dict[tuple[str, int], _Timer] = {}
    for name in names:
        for n in counts:
            with threads(n):
                timers[(name, n)] = _Timer(case, case.impl(name), warmup, MIN_REP_S, MAX_NUMBER)
    got = _take_turns(timers, reps, context=lambda key: threads(key[1]))
    for name in names:
        times = {n: min(got[(name, n)]) for n in counts}
        base = times[counts[0]]
        out["impls"][name] = {
            "best_s": {str(n): t for n, t in times.items()},
            "ratio": {str(n): base / t for n, t in times.items()},
        }
    return out
