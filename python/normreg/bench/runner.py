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
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field

import torch

import normreg
from normreg._loader import _C
from normreg.bench.bandwidth import Probe

from .cases import Case, Impl

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


class AgreementError(AssertionError):
    """An implementation's result differs from normreg's beyond the case's tolerance."""

    def __init__(self, case: Case, impl: str, detail: str) -> None:
        self.group, self.impl, self.detail = case.group, impl, detail
        rtol, atol = case.impl(impl).tol or case.tol
        super().__init__(
            f"{case.group}: {impl} disagrees with normreg (rtol={rtol:g}, atol={atol:g}); "
            f"it is not timed. {detail}"
        )


@dataclass
class Timing:
    best_s: float
    median_s: float
    reps: int
    number: int

    def as_dict(self) -> dict:
        return asdict(self)


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


def _to_compare(x):
    if isinstance(x, (tuple, list)):
        return tuple(_to_compare(v) for v in x)
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, (int, float)):
        return torch.tensor(float(x), dtype=torch.float64)
    return x


def _result(case: Case, impl: Impl):
    inputs = case.make_inputs()
    thunk = impl.bind(inputs)
    ret = None
    for _ in range(case.check_calls):
        ret = thunk()
    return _to_compare(case.result(inputs, ret))


def _compare(a, b, rtol: float, atol: float) -> None:
    """assert_close for nested tuples, casting each pair to a common dtype."""
    if isinstance(a, tuple):
        if not isinstance(b, tuple) or len(a) != len(b):
            raise AssertionError(
                f"results have different structure: {type(a).__name__} vs {type(b).__name__}"
            )
        tensors = all(isinstance(x, torch.Tensor) for x in a + b)
        if tensors and len(a) > 1 and all(x.shape == y.shape for x, y in zip(a, b, strict=False)):
            # one comparison of the concatenation: a list of 200 tensors costs one call, not 200
            dt = torch.promote_types(a[0].dtype, b[0].dtype)
            flat_a = torch.cat([x.reshape(-1).to(dt) for x in a])
            flat_b = torch.cat([y.reshape(-1).to(dt) for y in b])
            torch.testing.assert_close(flat_a, flat_b, rtol=rtol, atol=atol, equal_nan=True)
            return
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            try:
                _compare(x, y, rtol, atol)
            except AssertionError as exc:
                raise AssertionError(f"item {i}: {exc}") from None
        return
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        dt = torch.promote_types(a.dtype, b.dtype)
        torch.testing.assert_close(a.to(dt), b.to(dt), rtol=rtol, atol=atol, equal_nan=True)
        return
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def check_agreement(case: Case, impls: Sequence[str] | None = None) -> None:
    """Raise :class:`AgreementError` unless every peer (or those named) matches normreg."""
    ours = _result(case, case.ours)
    for impl in case.peers:
        if impls is not None and impl.name not in impls:
            continue
        theirs = _result(case, impl)
        rtol, atol = impl.tol or case.tol
        try:
            _compare(theirs, ours, rtol, atol)
        except AssertionError as exc:
            raise AgreementError(
                case, impl.name, str(exc).strip().splitlines()[0] if str(exc) else ""
            ) from None


class _Timer:
    """One implementation of a case, ready to time: fresh inputs, warmed up, with the number
    of calls per repetition chosen (see module doc)."""

    def __init__(self, case: Case, impl: Impl, warmup: int, min_rep_s: float, max_number: int) -> None:
        inputs = case.make_inputs()
        self.thunk = impl.bind(inputs)
        self.restore = case.restore(inputs) if case.restore is not None else None
        for _ in range(max(warmup, 1)):
            self.warm()
        self.number = 1
        if self.restore is None:
            t0 = time.perf_counter()
            self.thunk()
            dt = time.perf_counter() - t0
            if dt < min_rep_s:
                self.number = min(max_number, max(1, math.ceil(min_rep_s / max(dt, 1e-7))))

    def warm(self) -> None:
        """One untimed call (restoring in-place inputs first)."""
        if self.restore:
            self.restore()
        self.thunk()

    def rep(self) -> float:
        """Seconds of one call, from one timed repetition."""
        if self.restore:
            self.restore()
        perf, thunk = time.perf_counter, self.thunk
        t0 = perf()
        for _ in range(self.number):
            thunk()
        return (perf() - t0) / self.number


#: calls faster than this are repeated inside one repetition, at most MAX_NUMBER times
MIN_REP_S = 2e-3
MAX_NUMBER = 1000


def time_impl(
    case: Case,
    impl: Impl,
    *,
    warmup: int = 1,
    reps: int = 5,
    min_rep_s: float = MIN_REP_S,
    max_number: int = MAX_NUMBER,
) -> Timing:
    """Best and median seconds of one call of ``impl`` on fresh inputs (see module doc)."""
    t = _Timer(case, impl, warmup, min_rep_s, max_number)
    times = [t.rep() for _ in range(reps)]
    return Timing(min(times), statistics.median(times), reps, t.number)


#: timed repetitions an implementation runs in a row before the next one takes its turn
ROUND = 2


class _ProbeTimer:
    """The bandwidth probe as one more turn-taker of a case (see :func:`run_case`); a pass
    faster than ``MIN_REP_S`` is repeated within a repetition, as a case's call is."""

    def __init__(self, probe, kind: str) -> None:
        self.pass_ = probe.read if kind == "read" else probe.rw
        self.bytes = probe.moved(kind)
        self.in_cache = probe.in_cache
        self.number = 1
        self.warm()
        t0 = time.perf_counter()
        self.pass_()
        dt = time.perf_counter() - t0
        if dt < MIN_REP_S:
            self.number = min(MAX_NUMBER, max(1, math.ceil(MIN_REP_S / max(dt, 1e-7))))

    def warm(self) -> None:
        self.pass_()

    def rep(self) -> float:
        perf, pass_ = time.perf_counter, self.pass_
        t0 = perf()
        for _ in range(self.number):
            pass_()
        return (perf() - t0) / self.number


#: the name under which the probe takes its turns (never an implementation's name)
PROBE = "(bandwidth probe)"


def _take_turns(timers: dict, reps: int, context=lambda key: nullcontext()) -> dict:
    """``reps`` repetitions of every timer, taking turns: rounds of :data:`ROUND` repetitions
    each, every round after the first preceded by one untimed call. ``context(key)`` is
    entered around a timer's turn (a thread count, say). Returns ``{key: [seconds, ...]}``."""
    got: dict = {key: [] for key in timers}
    while any(len(ts) < reps for ts in got.values()):
        for key, t in timers.items():
            k = min(ROUND, reps - len(got[key]))
            if k <= 0:
                continue
            with context(key):
                if got[key]:
                    t.warm()
                got[key].extend(t.rep() for _ in range(k))
    return got


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
