"""The benchmark cases: every op family of normreg beside the torch code it replaces.

A :class:`Case` is one op on one workload: how to make its inputs, normreg's
implementation (``ours``), the peers, how to restore the inputs of an in-place op, what
result to compare, and the tolerance of that comparison. ``normreg bench`` and the
pytest-benchmark files in ``benchmarks/`` both take their cases from here, so the two time
the same code on the same data.

Peers
-----
``torch-eager``
    the plain torch expression a user writes (a Python loop over the tensors);
``torch-foreach``
    torch's multi-tensor ``torch._foreach_*`` ops (``foreach=True`` optimizers);
``torch-fused``
    torch's fused optimizer kernels (``Adam(fused=True)``), plus the foreach soft threshold;
``torch-vector_norm`` / ``torch-softshrink``
    the dedicated torch op (``torch.linalg.vector_norm``, ``F.softshrink``) per tensor;
``torch-compile``
    ``torch.compile`` of the eager expression (only with ``compile=True``: compiling
    takes a while, and the first call, which compiles, is part of the warm-up).

Agreement
---------
Before anything is timed, every peer's result is compared with normreg's by
``torch.testing.assert_close(peer, ours, rtol, atol)``. The tolerances
(:data:`TOL_SUM`, :data:`TOL_ELEMENTWISE`, :data:`TOL_OPTIM`) are float32 tolerances:
reductions over millions of elements may differ in summation order (normreg accumulates
in double, torch in float32 with blocked sums), element-wise results by a few ulps.

"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .workloads import SHAPES, WORKLOADS, make_image_batch, make_workload

__all__ = [
    "Impl",
    "Case",
    "Inputs",
    "FAMILIES",
    "TOL_SUM",
    "TOL_ELEMENTWISE",
    "TOL_OPTIM",
    "TOL_FLOAT32_NORM",
    "build_cases",
    "penalty_value_cases",
    "penalty_grad_cases",
    "prox_cases",
    "optimizer_cases",
    "loss_cases",
    "overhead_cases",
]

#: (rtol, atol) for sums over whole workloads (penalty values, mean losses).
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
    import normreg

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
    import normreg

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
    from normreg import _ops

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


# ---------------------------------------------------------------------------------------------
# proximal steps


def prox_cases(workloads: Iterable[str], kinds=tuple(PENALTIES), compile: bool = False) -> list[Case]:
    """``penalty.prox_(params, step)`` in place (soft threshold, ridge shrink, elastic net)."""
    import normreg

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


# ---------------------------------------------------------------------------------------------
# optimizer steps


def optimizer_cases(workloads: Iterable[str], compile: bool = False) -> list[Case]:
    """One step of ProxSGD / ProxAdam with an L1 penalty against torch's SGD / Adam
    followed by the soft threshold at ``lr * l`` (the same proximal-gradient step)."""
    import normreg

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


# ---------------------------------------------------------------------------------------------
# the table of families

#: family -> builder(workloads, compile, image_shape) -> cases
FAMILIES: dict[str, Callable[..., list[Case]]] = {
    "penalty value": lambda wls, compile, image_shape: penalty_value_cases(wls, compile=compile),
    "value+grad": lambda wls, compile, image_shape: penalty_grad_cases(wls, compile=compile),
    "prox": lambda wls, compile, image_shape: prox_cases(wls, compile=compile),
    "optimizer step": lambda wls, compile, image_shape: optimizer_cases(wls, compile=compile),
    "image loss": lambda wls, compile, image_shape: loss_cases(image_shape, compile=compile),
    "per-call overhead": lambda wls, compile, image_shape: overhead_cases(compile),
}


def build_cases(
    families: Iterable[str] | None = None,
    workloads: Iterable[str] = WORKLOADS,
    compile: bool = False,
    image_shape: tuple[int, int, int, int] | None = None,
) -> list[Case]:
    """All cases of the requested families (every family is part of normreg: an error in
    building one is an error, never a silently skipped benchmark)."""
    fams = list(FAMILIES) if families is None else list(families)
    for f in fams:
        if f not in FAMILIES:
            raise ValueError(f"unknown family {f!r}; choose from {', '.join(FAMILIES)}")
    wls = list(workloads)
    cases: list[Case] = []
    for f in fams:
        cases += FAMILIES[f](wls, compile, image_shape)
    return cases
