"""The prox of a penalty object (``penalty.prox_``, the optimizers): its prox terms composed
into one :class:`_Plan`, refused where the sum has no closed form, then one run of
:mod:`._runners`. The functional operators are in :mod:`._operators`."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._bridge import TensorList, check_strength
from ._checks import Params, _group_shapes, _named, _params
from ._proxstats import ProxStats
from ._runners import _run_group, _run_hard, _run_l2_norm, _run_linf, _run_shrink


@dataclass(frozen=True)
class _Plan:
    """A penalty in the normal form the prox understands.

    l1, l2: the elementwise elastic-net part; l0: L0 strength (alone); norm: None, or
    ("l2_norm", λ), ("group", λ, dim) or ("linf", λ) — the one non-separable term.
    """

    l1: float = 0.0
    l2: float = 0.0
    l0: float = 0.0
    norm: tuple | None = None

    @property
    def elementwise(self) -> bool:
        return self.norm is None


def _plan(penalty) -> _Plan:
    """Compose the penalty's prox terms (``penalty._prox_terms()``) into one :class:`_Plan`."""
    terms_of = getattr(penalty, "_prox_terms", None)
    if not callable(terms_of):
        raise TypeError(
            f"'penalty' must be a normreg penalty (e.g. normreg.L1(1e-4)), got {type(penalty).__name__}"
        )
    l1 = l2 = l0 = 0.0
    norm: tuple | None = None
    for term in terms_of():
        kind = term[0]
        if kind == "affine":
            l1 += term[1]
            l2 += term[2]
            continue
        if kind == "l0":
            l0 += term[1]
            continue
        strength, key = term[1], (kind, *term[2:])
        if strength == 0:
            continue
        if norm is not None and (norm[0],) + tuple(norm[2:]) != key:
            raise ValueError(
                f"prox_: the prox of {penalty!r} has no exact closed form (two different norm terms); "
                "apply the terms' proxes in sequence yourself if an approximation is acceptable"
            )
        norm = (kind, (norm[1] if norm else 0.0) + strength, *key[1:])
    if l0 > 0 and (l1 > 0 or l2 > 0 or norm is not None):
        raise ValueError(
            f"prox_: the prox of {penalty!r} has no exact closed form (L0 combined with another term); "
            "use L0 alone, or apply the terms' proxes in sequence yourself"
        )
    if norm is not None and norm[0] == "linf" and (l1 > 0 or l2 > 0):
        raise ValueError(
            f"prox_: the prox of {penalty!r} has no exact closed form (Linf combined with L1/L2 terms); "
            "use Linf alone, or apply the terms' proxes in sequence yourself"
        )
    return _Plan(l1, l2, l0, norm)


def _check_plan_params(plan: _Plan, tl: TensorList):
    if plan.norm is not None and plan.norm[0] == "group":
        return _group_shapes(tl.tensors, plan.norm[2])
    return None


def _run_plan(plan: _Plan, tl: TensorList, step: float, shapes=None) -> ProxStats:
    if plan.l0 > 0:
        return _run_hard(tl, [math.sqrt(2.0 * step * plan.l0)])
    t, d = step * plan.l1, 1.0 / (1.0 + step * plan.l2)
    if plan.norm is None:
        return _run_shrink(tl, [t], [d], None, False)
    kind, s = plan.norm[0], step * plan.norm[1]
    if kind == "linf":
        return _run_linf(tl, [s])
    if kind == "l2_norm":
        return _run_l2_norm(tl, [t], [s], [d])
    return _run_group(tl, shapes, plan.norm[2], [t], [s], [d])


def penalty_prox_(penalty, params: Params, step: float) -> ProxStats:
    """``w <- prox_{step * R}(w)`` in place for a penalty object ``R``; returns :class:`ProxStats`.

    Exact for every single penalty and for the sums whose prox has a closed form:
    L1 + SquaredL2 (elastic net), any of those + one GroupLasso or L2Norm (sparse group
    lasso: ``group_soft(soft(w, τ l1), τ lg) / (1 + τ l2)``), and sums of terms of one
    kind. Other sums raise ``ValueError`` instead of guessing.
    """
    with _named("prox_"):
        plan = _plan(penalty)
        step = check_strength(step, "step")
        tl = _params(params)
        shapes = _check_plan_params(plan, tl)
    return _run_plan(plan, tl, step, shapes)
