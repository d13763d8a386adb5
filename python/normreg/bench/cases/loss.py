"""Image losses: l1 / mse / total variation, forward and backward, against torch.nn.functional."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..workloads import make_image_batch
from ._common import TOL_SUM, Case, Impl, Inputs, _compiled, _eager_tv, _module

# ---------------------------------------------------------------------------------------------
# image losses


def loss_cases(image_shape: tuple[int, int, int, int] | None = None, compile: bool = False) -> list[Case]:
    """``normreg.losses`` on an image batch, forward and forward + backward, against
    ``F.l1_loss`` / ``F.mse_loss`` / the eager total-variation expression."""
    losses = _module("normreg.losses")
    shape = image_shape or make_image_batch()[0].shape
    wl = "images"
    nb = 4
    for d in shape:
        nb *= d
    specs = {
        # op: (ours, peer, number of image-sized inputs read)
        "l1-loss": (lambda x, y: losses.l1_loss(x, y), F.l1_loss, 2),
        "mse-loss": (lambda x, y: losses.mse_loss(x, y), F.mse_loss, 2),
        "tv-loss": (lambda x, y: losses.total_variation(x), lambda x, y: _eager_tv(x), 1),
    }
    cases = []
    for op, (ours, eager, n_in) in specs.items():
        for with_grad in (False, True):

            def bind(f, with_grad=with_grad, c=False):
                def b(inp):
                    g = _compiled(f) if c else f
                    if with_grad:

                        def run():
                            v = g(inp.x, inp.y)
                            v.backward()
                            return v.detach()

                        return run
                    return lambda: g(inp.x, inp.y)

                return b

            peers = [Impl("torch-eager", bind(eager))]
            if compile:
                peers.append(Impl("torch-compile", bind(eager, c=True)))

            def make(with_grad=with_grad):
                x, y = make_image_batch(tuple(shape), requires_grad=with_grad)
                if with_grad:
                    x.grad = torch.zeros_like(x)
                return Inputs(x=x, y=y)

            cases.append(
                Case(
                    family="image loss",
                    op=op + ("+grad" if with_grad else ""),
                    workload=wl,
                    make_inputs=make,
                    ours=Impl("normreg", bind(ours)),
                    peers=peers,
                    result=(
                        (lambda inp, ret: (torch.as_tensor(ret, dtype=torch.float64), inp.x.grad))
                        if with_grad
                        else (lambda inp, ret: torch.as_tensor(ret, dtype=torch.float64))
                    ),
                    nbytes=(n_in + 2 if with_grad else n_in) * nb,  # + read and write of x.grad
                    bw_kind="rw" if with_grad else "read",
                    tol=TOL_SUM,
                )
            )
    return cases
