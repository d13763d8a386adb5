"""Penalty values, value + gradient, and the per-call overhead of small lists."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

import normreg
from normreg import _ops

from ..workloads import SHAPES
from ._common import (
    NOTE_FLOAT32_NORM,
    STRENGTH,
    TOL_FLOAT32_NORM,
    TOL_SUM,
    Case,
    Impl,
    Inputs,
    Thunk,
    _compiled,
    _eager_value,
    _foreach_add_grad,
    _foreach_value,
    _grads,
    _params,
    _vector_norm_value,
)

# ---------------------------------------------------------------------------------------------
# penalty value and value + gradient

PENALTIES = {
    "l1": lambda normreg: normreg.L1(STRENGTH),
    "squared_l2": lambda normreg: normreg.SquaredL2(STRENGTH),
    "elastic_net": lambda normreg: normreg.ElasticNet(STRENGTH, STRENGTH),
}
_OP_NAME = {"l1": "l1", "squared_l2": "sql2", "elastic_net": "enet"}


def _strengths(kind: str) -> tuple[float, float]:
    return (STRENGTH if kind != "squared_l2" else 0.0, STRENGTH if kind != "l1" else 0.0)


def penalty_value_cases(
    workloads: Iterable[str], kinds=tuple(PENALTIES), compile: bool = False
) -> list[Case]:
    """``penalty.value(params)`` (no autograd graph) against the torch expressions."""

    cases = []
    for kind in kinds:
        pen = PENALTIES[kind](normreg)
        l1, l2 = _strengths(kind)
        exprs = {
            "torch-eager": _eager_value(kind, l1, l2),
            "torch-foreach": _foreach_value(kind, l1, l2),
            "torch-vector_norm": _vector_norm_value(kind, l1, l2),
        }
        if compile:
            exprs["torch-compile"] = _eager_value(kind, l1, l2)
        for wl in workloads:
            peers = [
                Impl(name, _bind_params(f, name == "torch-compile"), *_norm_tol(name))
                for name, f in exprs.items()
            ]
            cases.append(
                Case(
                    family="penalty value",
                    op=f"{_OP_NAME[kind]}-value",
                    workload=wl,
                    make_inputs=(lambda wl=wl: _params(wl)),
                    ours=Impl("normreg", lambda inp, pen=pen: lambda: pen.value(inp.params)),
                    peers=peers,
                    result=lambda inp, ret: torch.as_tensor(ret, dtype=torch.float64),
                    nbytes=_bytes(wl),
                    bw_kind="read",
                    tol=TOL_SUM,
                )
            )
    return cases


def _norm_tol(name: str) -> tuple:
    if name in ("torch-foreach", "torch-vector_norm"):
        return TOL_FLOAT32_NORM, NOTE_FLOAT32_NORM
    return None, ""


def _bind_params(f: Callable[[list[Tensor]], Any], compiled: bool) -> Callable[[Inputs], Thunk]:
    def bind(inp: Inputs) -> Thunk:
        g = _compiled(f) if compiled else f
        return lambda: g(inp.params)

    return bind


def _bytes(wl: str) -> int:
    """Bytes of one float32 read of workload ``wl``."""
    n = 0
    for shape in SHAPES[wl]:
        k = 1
        for d in shape:
            k *= d
        n += k
    return 4 * n


def penalty_grad_cases(workloads: Iterable[str], kinds=tuple(PENALTIES), compile: bool = False) -> list[Case]:
    """Value and gradient into ``.grad``: ``penalty.add_grad_(params)`` against
    ``expr(params).backward()`` and the foreach equivalent."""

    cases = []
    for kind in kinds:
        pen = PENALTIES[kind](normreg)
        l1, l2 = _strengths(kind)
        eager = _eager_value(kind, l1, l2)
        fe_value, fe_grad = _foreach_value(kind, l1, l2), _foreach_add_grad(kind, l1, l2)

        def bind_eager(inp, f=eager):
            def run():
                v = f(inp.params)
                v.backward()
                return v.detach()

            return run

        def bind_foreach(inp, fv=fe_value, fg=fe_grad):
            grads = [p.grad for p in inp.params]

            def run():
                with torch.no_grad():
                    v = fv(inp.params)
                    fg(inp.params, grads)
                return v

            return run

        def bind_compile(inp, f=eager):
            g = _compiled(f)

            def run():
                v = g(inp.params)
                v.backward()
                return v.detach()

            return run

        peers = [
            Impl("torch-eager", bind_eager),
            Impl("torch-foreach", bind_foreach, *_norm_tol("torch-foreach")),
        ]
        if compile:
            peers.append(Impl("torch-compile", bind_compile))
        for wl in workloads:
            cases.append(
                Case(
                    family="value+grad",
                    op=f"{_OP_NAME[kind]}-grad",
                    workload=wl,
                    make_inputs=(lambda wl=wl: _params(wl, requires_grad=True, grads="zeros")),
                    ours=Impl("normreg", lambda inp, pen=pen: lambda: pen.add_grad_(inp.params)),
                    peers=peers,
                    result=lambda inp, ret: (torch.as_tensor(float(ret), dtype=torch.float64), _grads(inp)),
                    nbytes=3 * _bytes(wl),  # read w, read + write grad
                    bw_kind="rw",
                    tol=TOL_SUM,
                )
            )
    return cases


def overhead_cases(compile: bool = False) -> list[Case]:
    """L1 value and value+grad on 1 tensor and on 200 tensors of one element: the fixed
    cost of a call and the cost per tensor (see :func:`normreg.bench.report.overhead`).

    Beside the eager call (the direct path) and torch's peers: ``normreg-dispatcher``, the
    same call through the registered ``torch.ops.normreg`` operators (what torch.compile,
    torch.func, meta tensors and other devices take); with ``compile``, ``normreg-compiled``:
    the call inside a ``torch.compile(fullgraph=True)`` function.
    """

    out = penalty_value_cases(("tiny1", "tiny200"), kinds=("l1",))
    out += penalty_grad_cases(("tiny1", "tiny200"), kinds=("l1",))
    for c in out:
        c.family = "per-call overhead"
        c.peers = [p for p in c.peers if p.name in ("torch-eager", "torch-foreach")]

        def bind_dispatcher(inp, bind=c.ours.bind):
            run = bind(inp)

            def go():
                with _ops.dispatcher_only():
                    return run()

            return go

        c.peers.append(Impl("normreg-dispatcher", bind_dispatcher))
        if compile:

            def bind_compiled(inp, bind=c.ours.bind):
                run = torch.compile(bind(inp), fullgraph=True, dynamic=False)

                def go():
                    out = run()
                    return out.detach() if isinstance(out, Tensor) else out

                return go

            c.peers.append(Impl("normreg-compiled", bind_compiled))
    return out
