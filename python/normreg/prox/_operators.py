"""The public proximal operators and projections (the table of :mod:`normreg.prox`): each
checks its arguments (:mod:`._checks`) and makes one run (:mod:`._runners`). A penalty
object's prox is in :mod:`._penalty`."""

from __future__ import annotations

import math

from .. import _ops
from .._bridge import check_strength
from ._checks import (
    Params,
    Strength,
    _bounds,
    _full,
    _group_shapes,
    _mul,
    _named,
    _params,
    _strengths,
    _weights,
)
from ._proxstats import ProxStats
from ._runners import _run_clamp, _run_group, _run_hard, _run_l2_norm, _run_linf, _run_shrink, _stats


def soft_threshold_(
    params: Params,
    step: float,
    strength: Strength = 1.0,
    *,
    weights=None,
    nonneg: bool = False,
) -> ProxStats:
    """Soft threshold in place: the prox of ``step * λ * ||u ⊙ w||_1`` (weighted L1).

    Parameters
    ----------
    params : tensor, nn.Module or iterable of tensors
        Contiguous float tensors, modified in place.
    step : float
        Step size τ >= 0; the threshold is ``τ λ`` (times the weight ``u``).
    strength : float or sequence of float
        Strength, one number or one per tensor, >= 0.
    weights : tensor or sequence of tensors, optional
        Per-element weights ``u >= 0``, one tensor per param of the same shape.
    nonneg : bool
        Also project onto ``w >= 0``: ``max(w - τ λ u, 0)``.

    Returns
    -------
    ProxStats
    """
    fn = "soft_threshold_"
    with _named(fn):
        step = check_strength(step, "step")
        tl = _params(params)
        ls = _strengths(strength, "strength", len(tl))
        u = _weights(tl, weights)
    return _run_shrink(tl, _mul(step, ls), [1.0], u, bool(nonneg))


def ridge_shrink_(params: Params, step: float, strength: Strength = 1.0) -> ProxStats:
    """Prox of ``step * (λ/2) ||w||^2`` in place: ``w / (1 + step * λ)``."""
    with _named("ridge_shrink_"):
        step = check_strength(step, "step")
        tl = _params(params)
        ls = _strengths(strength, "strength", len(tl))
    return _run_shrink(tl, [0.0], [1.0 / (1.0 + step * v) for v in ls], None, False)


def elastic_net_(
    params: Params, step: float, l1: Strength = 1.0, l2: Strength = 1.0, *, weights=None, nonneg: bool = False
) -> ProxStats:
    """Prox of ``step * (l1 ||u ⊙ w||_1 + (l2/2) ||w||^2)`` in place: ``soft(w, step*l1*u) / (1 + step*l2)``."""
    with _named("elastic_net_"):
        step = check_strength(step, "step")
        tl = _params(params)
        a = _strengths(l1, "l1", len(tl))
        b = _strengths(l2, "l2", len(tl))
        u = _weights(tl, weights)
    return _run_shrink(tl, _mul(step, a), [1.0 / (1.0 + step * v) for v in b], u, bool(nonneg))


def hard_threshold_(params: Params, step: float, strength: Strength = 1.0) -> ProxStats:
    """Exact prox of ``step * λ * ||w||_0`` in place: zero where ``|w| <= sqrt(2 * step * λ)``.

    Not ``F.hardshrink(w, step * λ)``, which thresholds at ``step * λ`` itself.
    """
    with _named("hard_threshold_"):
        step = check_strength(step, "step")
        tl = _params(params)
        ls = _strengths(strength, "strength", len(tl))
    return _run_hard(tl, [math.sqrt(2.0 * step * v) for v in ls])


def group_soft_threshold_(params: Params, step: float, strength: Strength = 1.0, dim: int = 0) -> ProxStats:
    """Group soft threshold (prox of the group lasso ``step * λ * sum_g ||w_g||``), groups = slices along ``dim``."""
    with _named("group_soft_threshold_"):
        step = check_strength(step, "step")
        tl = _params(params)
        ls = _strengths(strength, "strength", len(tl))
        shapes = _group_shapes(tl.tensors, dim)
    return _run_group(tl, shapes, dim, [0.0], _mul(step, ls), [1.0])


def l2_norm_prox_(params: Params, step: float, strength: Strength = 1.0) -> ProxStats:
    """Prox of ``step * λ * ||w||_2`` per tensor: ``w max(1 - step*λ/||w||, 0)``."""
    with _named("l2_norm_prox_"):
        step = check_strength(step, "step")
        tl = _params(params)
        ls = _strengths(strength, "strength", len(tl))
    return _run_l2_norm(tl, [0.0], _mul(step, ls), [1.0])


def linf_prox_(params: Params, step: float, strength: Strength = 1.0) -> ProxStats:
    """Prox of ``step * λ * max|w|`` per tensor through the exact L1-ball projection (Moreau)."""
    with _named("linf_prox_"):
        step = check_strength(step, "step")
        tl = _params(params)
        ls = _strengths(strength, "strength", len(tl))
    return _run_linf(tl, _mul(step, ls))


def project_box_(params: Params, lo: float | None = None, hi: float | None = None) -> ProxStats:
    """Projection onto the box ``[lo, hi]`` (clamp) in place; ``None`` leaves a side open."""
    with _named("project_box_"):
        tl = _params(params)
        los = _bounds(lo, "lo", len(tl), -math.inf)
        his = _bounds(hi, "hi", len(tl), math.inf)
        for a, b in zip(_full(los, tl), _full(his, tl)):
            if a > b:
                raise ValueError(f"'lo' ({a}) must be <= 'hi' ({b})")
    return _run_clamp(tl, los, his)


def project_l2_ball_(params: Params, radius: Strength = 1.0) -> ProxStats:
    """Projection onto ``{||w||_2 <= radius}`` per tensor: ``w min(1, radius/||w||)``."""
    with _named("project_l2_ball_"):
        tl = _params(params)
        rs = _strengths(radius, "radius", len(tl), positive=True)
    return _stats(tl, _ops.project_l2_ball(tl, rs))


def project_linf_ball_(params: Params, radius: Strength = 1.0) -> ProxStats:
    """Projection onto ``{max|w| <= radius}``: ``clamp(w, -radius, radius)``."""
    with _named("project_linf_ball_"):
        tl = _params(params)
        rs = _strengths(radius, "radius", len(tl), positive=True)
    return _run_clamp(tl, [-r for r in rs], rs)


def project_l1_ball_(params: Params, radius: Strength = 1.0) -> ProxStats:
    """Exact projection onto ``{||w||_1 <= radius}`` per tensor.

    The threshold θ with ``sum max(|w| - θ, 0) = radius`` is found exactly (elements below
    a lower bound of θ are filtered out in one parallel pass, Condat's algorithm runs on the
    rest), then one soft-threshold pass writes ``sign(w) max(|w| - θ, 0)``.
    """
    with _named("project_l1_ball_"):
        tl = _params(params)
        rs = _strengths(radius, "radius", len(tl), positive=True)
    return _stats(tl, _ops.project_l1_ball(tl, rs))
