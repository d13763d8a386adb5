"""Optimizer steps: ProxSGD / ProxAdam / ProxAdamW against torch.optim (foreach, fused)."""

from __future__ import annotations

import itertools
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


def _add_l1_subgrad(ps: list[torch.Tensor], g0s: list[torch.Tensor], foreach: bool) -> None:
    """``p.grad = g0 + strength * sign(p)``: the L1 subgradient added to the gradient (what
    ``penalty_mode="grad"`` fuses), out of place, so every call starts from the same ``g0``."""
    if foreach:
        grads = torch._foreach_add(g0s, torch._foreach_sign(ps), alpha=STRENGTH)
    else:
        grads = [g0.add(p.sign(), alpha=STRENGTH) for p, g0 in zip(ps, g0s)]
    for p, g in zip(ps, grads):
        p.grad = g


def optimizer_cases(workloads: Iterable[str], compile: bool = False) -> list[Case]:
    """One step of ProxSGD / ProxAdam with an L1 penalty, in both penalty modes, against
    torch's SGD / Adam and the same maths in torch: ``penalty_mode="prox"`` (``*-l1-step``)
    against the step followed by the soft threshold at ``lr * l``; ``penalty_mode="grad"``
    (``*-l1grad-step``, the trainer's default) against the step on the gradient plus
    ``l * sign(w)``."""

    optim = _module("normreg.optim")
    tau = LR * STRENGTH
    specs = {
        # name: (ours factory(params, mode), torch optimizer class, least traffic in tensor sizes)
        "proxsgd": (
            lambda ps, mode: optim.ProxSGD(ps, lr=LR, penalty=normreg.L1(STRENGTH), penalty_mode=mode),
            torch.optim.SGD,
            3,
        ),
        "proxadam": (
            lambda ps, mode: optim.ProxAdam(ps, lr=LR, penalty=normreg.L1(STRENGTH), penalty_mode=mode),
            torch.optim.Adam,
            7,
        ),
    }
    cases = []
    for (name, (ours_factory, torch_cls, traffic)), mode in itertools.product(
        specs.items(), ("prox", "grad")
    ):
        variants = {
            "torch-eager": ({"foreach": False}, _eager_soft_),
            "torch-foreach": ({"foreach": True}, _foreach_soft_),
        }
        if torch_cls is torch.optim.Adam:
            variants["torch-fused"] = ({"fused": True}, _foreach_soft_)
        if compile:
            variants["torch-compile"] = ({"foreach": True}, _foreach_soft_)

        def bind_ours(inp, f=ours_factory, mode=mode):
            opt = f(inp.params, mode)
            return opt.step

        def bind_torch(variant, cls=torch_cls, variants=variants, mode=mode):
            kwargs, soft = variants[variant]
            foreach = kwargs.get("foreach", True)

            def b(inp):
                opt = cls(inp.params, lr=LR, **kwargs)
                ps = [p.detach() for p in inp.params]
                g0s = [p.grad for p in inp.params]

                def step():
                    if mode == "grad":
                        with torch.no_grad():
                            _add_l1_subgrad(list(inp.params), g0s, foreach)
                        opt.step()
                        return
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
                    op=f"{name}-l1-step" if mode == "prox" else f"{name}-l1grad-step",
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
