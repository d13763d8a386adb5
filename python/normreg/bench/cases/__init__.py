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

from collections.abc import Callable, Iterable

from ..workloads import WORKLOADS
from ._common import TOL_ELEMENTWISE, TOL_FLOAT32_NORM, TOL_OPTIM, TOL_SUM, Case, Impl, Inputs  # noqa: F401
from .loss import loss_cases  # noqa: F401
from .optim import optimizer_cases  # noqa: F401
from .penalty import overhead_cases, penalty_grad_cases, penalty_value_cases  # noqa: F401
from .prox import prox_cases  # noqa: F401

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
