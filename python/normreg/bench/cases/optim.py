"""Optimizer steps: ProxSGD / ProxAdam / ProxAdamW against torch.optim (foreach, fused)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

import normreg

from ._common import (
    LR,
    STRENGTH,
    TOL_OPTIM,
    Case,
    Impl,
    _compiled,
    _eager_soft_,
    _foreach_soft_,
    _module,
    _params,
    _snapshot,
)
from .penalty import _bytes

# ---------------------------------------------------------------------------------------------
# optimizer steps


def optimizer_cases(workloads: Iterable[str], compile: bool = False) -> list[Case]:
    """One step of ProxSGD / ProxAdam with an L1 penalty against torch's SGD / Adam
    followed by the soft threshold at ``lr * l`` (the same proximal-gradient step)."""

    optim = _module("normreg.optim")
    tau = LR * STRENGTH
    specs = {
        # name: (ours factory, torch optimizer class, least traffic in tensor sizes)
        "proxsgd": (lambda ps: optim.ProxSGD(ps, lr=LR, penalty=normreg.L1(STRENGTH)), torch.optim.SGD, 3),
        "proxadam": (lambda ps: optim.ProxAdam(ps, lr=LR, penalty=normreg.L1(STRENGTH)), torch.optim.Adam, 7),
    }
    cases = []
    for name, (ours_factory, torch_cls, traffic) in specs.items():
        variants = {
            "torch-eager": ({"foreach": False}, _eager_soft_),
            "torch-foreach": ({"foreach": True}, _foreach_soft_),
        }
        if torch_cls is torch.optim.Adam:
            variants["torch-fused"] = ({"fused": True}, _foreach_soft_)
        if compile:
            variants["torch-compile"] = ({"foreach": True}, _foreach_soft_)

        def bind_ours(inp, f=ours_factory):
            opt = f(inp.params)
            return opt.step

        def bind_torch(variant, cls=torch_cls, variants=variants):
            kwargs, soft = variants[variant]

            def b(inp):
                opt = cls(inp.params, lr=LR, **kwargs)
                ps = [p.detach() for p in inp.params]

                def step():
                    opt.step()
                    with torch.no_grad():
                        soft(ps, tau)

                return _compiled(step) if variant == "torch-compile" else step

            return b

        peers = [Impl(v, bind_torch(v)) for v in variants]
        for wl in workloads:
            cases.append(
                Case(
                    family="optimizer step",
                    op=f"{name}-l1-step",
                    workload=wl,
                    make_inputs=(lambda wl=wl: _params(wl, requires_grad=True, grads="random")),
                    ours=Impl("normreg", bind_ours),
                    peers=peers,
                    result=lambda inp, ret: tuple(p.detach() for p in inp.params),
                    nbytes=traffic * _bytes(wl),
                    bw_kind="rw",
                    tol=TOL_OPTIM,
                    restore=lambda inp: _snapshot(inp.params),
                    check_calls=3,
                )
            )
    return cases
