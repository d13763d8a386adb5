"""Proximal steps (soft threshold, elastic-net, hard threshold) beside torch's."""

from __future__ import annotations

from collections.abc import Iterable

import normreg

from ._common import (
    STEP,
    TOL_ELEMENTWISE,
    Case,
    Impl,
    _compiled,
    _eager_prox,
    _foreach_prox,
    _module,
    _params,
    _snapshot,
    _softshrink_,
)
from .penalty import _OP_NAME, PENALTIES, _bytes, _strengths

# ---------------------------------------------------------------------------------------------
# proximal steps


def prox_cases(workloads: Iterable[str], kinds=tuple(PENALTIES), compile: bool = False) -> list[Case]:
    """``penalty.prox_(params, step)`` in place (soft threshold, ridge shrink, elastic net)."""

    _module("normreg.prox")  # skip the family when the prox module is not built
    cases = []
    for kind in kinds:
        pen = PENALTIES[kind](normreg)
        l1, l2 = _strengths(kind)
        tau1, tau2 = STEP * l1, STEP * l2
        impls = {
            "torch-eager": _eager_prox(kind, tau1, tau2),
            "torch-foreach": _foreach_prox(kind, tau1, tau2),
        }
        if kind == "l1":
            impls["torch-softshrink"] = lambda ps, t=tau1: _softshrink_(ps, t)
        if compile:
            impls["torch-compile"] = _eager_prox(kind, tau1, tau2)

        def bind(f, c):
            def b(inp):
                g = _compiled(f) if c else f
                ps = [p.detach() for p in inp.params]
                return lambda: g(ps)

            return b

        peers = [Impl(name, bind(f, name == "torch-compile")) for name, f in impls.items()]
        for wl in workloads:
            cases.append(
                Case(
                    family="prox",
                    op=f"{_OP_NAME[kind]}-prox",
                    workload=wl,
                    make_inputs=(lambda wl=wl: _params(wl)),
                    ours=Impl("normreg", lambda inp, pen=pen: lambda: pen.prox_(inp.params, STEP)),
                    peers=peers,
                    result=lambda inp, ret: tuple(inp.params),
                    nbytes=2 * _bytes(wl),
                    bw_kind="rw",
                    tol=TOL_ELEMENTWISE,
                    restore=lambda inp: _snapshot(inp.params),
                )
            )
    return cases
