"""What every family of cases shares: tolerances, the Case / Impl / Inputs types, inputs and
their snapshots, and the torch peers' building blocks (eager, foreach, compiled)."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..workloads import make_workload

TOL_SUM = (1e-4, 1e-6)
#: (rtol, atol) for element-wise float32 results (gradients, prox steps).
TOL_ELEMENTWISE = (1e-5, 1e-7)
#: (rtol, atol) for parameters after three optimizer steps (division, sqrt, bias corrections).
TOL_OPTIM = (1e-5, 1e-6)
#: (rtol, atol) for torch's float32 norm reductions (``torch._foreach_norm``,
#: ``torch.linalg.vector_norm``): on CPU they accumulate in float32 without blocked
#: summation, so on the 25M-element workload their L1 norm is about 1% low.
TOL_FLOAT32_NORM = (2e-2, 1e-6)
NOTE_FLOAT32_NORM = (
    "accumulates in float32: about 1% low on one 25M-element tensor, so it is checked at rtol 2e-2"
)

#: penalty strength, prox step and learning rate used throughout. With weights ~ N(0, 0.02^2),
#: a threshold of STEP * STRENGTH = 0.01 sets about 38% of the weights to zero.
STRENGTH = 1e-2
STEP = 1.0
LR = 1e-3

Thunk = Callable[[], Any]


class Inputs(dict):
    """The inputs of one case (params, grads, images, ...), reachable as attributes."""

    # a plain function (not dict.__getitem__): torch.compile traces the peers that read it
    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass(frozen=True)
class Impl:
    """One implementation: ``bind(inputs)`` returns the zero-argument callable that is timed.

    ``tol`` overrides the case's tolerance for this implementation, and ``note`` says why
    (shown in the report); used only for peers whose own accuracy is known to be lower.
    """

    name: str
    bind: Callable[[Inputs], Thunk]
    tol: tuple[float, float] | None = None
    note: str = ""


@dataclass
class Case:
    """One op on one workload, with normreg's implementation and its peers.

    ``result(inputs, returned)`` gives what is compared between implementations (a tensor,
    a float or a tuple of them). ``restore(inputs)`` (in-place ops) returns a callable that
    puts the inputs back as they were; the runner calls it before every timed repetition,
    outside the timed region. ``nbytes`` is the least memory traffic the op needs (each
    input read once, each output written once) and ``bw_kind`` the bandwidth it is compared
    with: ``"read"`` for reductions, ``"rw"`` for ops that write.
    """

    family: str
    op: str
    workload: str
    make_inputs: Callable[[], Inputs]
    ours: Impl
    peers: list[Impl]
    result: Callable[[Inputs, Any], Any]
    nbytes: int
    bw_kind: str = "read"
    tol: tuple[float, float] = TOL_SUM
    restore: Callable[[Inputs], Callable[[], None]] | None = None
    check_calls: int = 1

    @property
    def group(self) -> str:
        """The pytest-benchmark group, e.g. ``"l1-value/dcgan"``."""
        return f"{self.op}/{self.workload}"

    @property
    def impls(self) -> list[Impl]:
        return [self.ours, *self.peers]

    def impl(self, name: str) -> Impl:
        for i in self.impls:
            if i.name == name:
                return i
        raise KeyError(
            f"case {self.group} has no implementation {name!r}; it has {[i.name for i in self.impls]}"
        )


# ---------------------------------------------------------------------------------------------
# helpers


def _compiled(fn: Callable) -> Callable:
    import torch._dynamo

    # Every workload and every bind recompiles the same code object; do not fall back to eager.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 256)
    if hasattr(torch._dynamo.config, "accumulated_cache_size_limit"):
        torch._dynamo.config.accumulated_cache_size_limit = max(
            torch._dynamo.config.accumulated_cache_size_limit, 4096
        )
    return torch.compile(fn)


def _snapshot(tensors: Sequence[Tensor]) -> Callable[[], None]:
    saved = [t.detach().clone() for t in tensors]
    live = [t.detach() for t in tensors]

    def restore() -> None:
        torch._foreach_copy_(live, saved)

    return restore


@functools.lru_cache(maxsize=2)
def _master(workload: str) -> tuple[Tensor, ...]:
    return tuple(make_workload(workload))


def _params(workload: str, requires_grad: bool = False, grads: str | None = None) -> Inputs:
    """Fresh copies of the workload's tensors (copied from a cached master: fast)."""
    params = [t.clone().requires_grad_(requires_grad) for t in _master(workload)]
    if grads == "zeros":
        for p in params:
            p.grad = torch.zeros_like(p)
    elif grads == "random":
        g = torch.Generator().manual_seed(1)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).mul_(0.01)
    return Inputs(params=params)


def _grads(inputs: Inputs) -> tuple[Tensor, ...]:
    return tuple(p.grad for p in inputs.params)


def _module(name: str):
    return importlib.import_module(name)


# the eager expressions users write -----------------------------------------------------------


def _eager_value(kind: str, l1: float, l2: float) -> Callable[[list[Tensor]], Tensor]:
    if kind == "l1":
        return lambda ps: l1 * sum(p.abs().sum() for p in ps)
    if kind == "squared_l2":
        return lambda ps: 0.5 * l2 * sum(p.pow(2).sum() for p in ps)
    return lambda ps: l1 * sum(p.abs().sum() for p in ps) + 0.5 * l2 * sum(p.pow(2).sum() for p in ps)


def _foreach_value(kind: str, l1: float, l2: float) -> Callable[[list[Tensor]], Tensor]:
    def n1(ps):
        return torch.stack(torch._foreach_norm(ps, 1)).sum()

    def n2sq(ps):
        return torch.stack(torch._foreach_norm(ps, 2)).pow(2).sum()

    if kind == "l1":
        return lambda ps: l1 * n1(ps)
    if kind == "squared_l2":
        return lambda ps: 0.5 * l2 * n2sq(ps)
    return lambda ps: l1 * n1(ps) + 0.5 * l2 * n2sq(ps)


def _vector_norm_value(kind: str, l1: float, l2: float) -> Callable[[list[Tensor]], Tensor]:
    vn = torch.linalg.vector_norm

    def n1(ps):
        return torch.stack([vn(p, 1) for p in ps]).sum()

    def n2sq(ps):
        return torch.stack([vn(p, 2) for p in ps]).pow(2).sum()

    if kind == "l1":
        return lambda ps: l1 * n1(ps)
    if kind == "squared_l2":
        return lambda ps: 0.5 * l2 * n2sq(ps)
    return lambda ps: l1 * n1(ps) + 0.5 * l2 * n2sq(ps)


def _foreach_add_grad(kind: str, l1: float, l2: float) -> Callable[[list[Tensor], list[Tensor]], None]:
    def add(ps, gs):
        if kind in ("l1", "elastic_net"):
            torch._foreach_add_(gs, torch._foreach_sign(ps), alpha=l1)
        if kind in ("squared_l2", "elastic_net"):
            torch._foreach_add_(gs, ps, alpha=l2)

    return add


def _eager_soft_(ps: list[Tensor], tau: float) -> None:
    for p in ps:
        p.copy_(p.sign() * (p.abs() - tau).clamp_min(0))


def _softshrink_(ps: list[Tensor], tau: float) -> None:
    for p in ps:
        p.copy_(F.softshrink(p, tau))


def _foreach_soft_(ps: list[Tensor], tau: float) -> None:
    mag = torch._foreach_abs(ps)
    torch._foreach_sub_(mag, tau)
    torch._foreach_clamp_min_(mag, 0.0)
    torch._foreach_mul_(mag, torch._foreach_sign(ps))
    torch._foreach_copy_(ps, mag)


def _eager_prox(kind: str, tau1: float, tau2: float) -> Callable[[list[Tensor]], None]:
    def prox(ps):
        if kind in ("l1", "elastic_net"):
            _eager_soft_(ps, tau1)
        if kind in ("squared_l2", "elastic_net"):
            for p in ps:
                p.div_(1.0 + tau2)

    return prox


def _foreach_prox(kind: str, tau1: float, tau2: float) -> Callable[[list[Tensor]], None]:
    def prox(ps):
        if kind in ("l1", "elastic_net"):
            _foreach_soft_(ps, tau1)
        if kind in ("squared_l2", "elastic_net"):
            torch._foreach_div_(ps, 1.0 + tau2)

    return prox


def _eager_tv(x: Tensor) -> Tensor:
    """Anisotropic total variation, summed over the batch: the reference expression."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().sum()
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().sum()
    return dh + dw
