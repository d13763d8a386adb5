"""The timers of the benchmark runner: one implementation of a case ready to time (fresh
inputs, warmed up, calls per repetition chosen), the bandwidth probe as one more turn-taker,
:func:`time_impl`, and the rounds in which a case's timers take turns. The timing rules are
described in :mod:`normreg.bench.runner`, which uses them."""

from __future__ import annotations

import math
import statistics
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

from .cases import Case, Impl


@dataclass
class Timing:
    best_s: float
    median_s: float
    reps: int
    number: int

    def as_dict(self) -> dict:
        return asdict(self)


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
