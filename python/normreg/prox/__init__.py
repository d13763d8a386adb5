"""Proximal operators and projections, in place, over a whole list of tensors in one call.

Every function takes any iterable of tensors (``model.parameters()``, a list, a module),
writes into them, and returns a :class:`ProxStats`: how many entries are exactly zero
after the step, per tensor and in total, counted in the same pass over memory.

``step`` is the proximal step size τ (for an optimizer, the learning rate) and the
strengths ``strength`` (λ below) are the penalty's; the prox of ``τ R`` uses thresholds ``τ λ``. Strengths
and radii may be one number or one per tensor.

===============================  ==============================================================
function                         result per element / tensor
===============================  ==============================================================
``soft_threshold_``              ``sign(w) max(|w| - τ λ u, 0)`` (``u``: optional weights),
                                 ``nonneg=True``: ``max(w - τ λ u, 0)``
``ridge_shrink_``                ``w / (1 + τ λ)``
``elastic_net_``                 ``soft(w, τ l1) / (1 + τ l2)``
``hard_threshold_``              exact L0 prox: ``0`` where ``|w| <= sqrt(2 τ λ)``, else ``w``
``group_soft_threshold_``        ``w_g max(1 - τ λ / ||w_g||, 0)``, groups = slices along ``dim``
``l2_norm_prox_``                the same with the whole tensor as one group
``linf_prox_``                   ``w - P_{L1 ball, radius τ λ}(w)`` (Moreau decomposition)
``project_box_``                 ``clamp(w, lo, hi)``
``project_l2_ball_``             ``w min(1, r / ||w||)``
``project_linf_ball_``           ``clamp(w, -r, r)``
``project_l1_ball_``             exact Euclidean projection onto ``{||w||_1 <= r}`` per tensor
===============================  ==============================================================

``hard_threshold_(p, step, λ)`` is **not** ``torch.nn.functional.hardshrink(p, step * λ)``:
the exact prox of ``τ λ ||w||_0`` thresholds at ``sqrt(2 τ λ)``; hardshrink thresholds at
its argument. Ties (``|w| = sqrt(2 τ λ)``, where both 0 and ``w`` are minimizers) go to 0.

NaN propagates: elementwise ops keep NaN where it is; ops that need a norm or threshold of
a whole tensor (or group) make that whole tensor (group) NaN when it contains NaN.

Every argument is checked before any tensor is modified. Any dense tensor is taken in place
(contiguous, channels_last, transposed, permuted); a tensor with gaps (a strided slice) and
tensors whose memory overlaps are refused. With grad mode on, tensors that require grad are
refused (as torch refuses an in-place op on such a leaf): call these under
``torch.no_grad()``, as optimizers do. Every call is a ``torch.ops.normreg`` operator that
bumps the version counters of what it writes (see :mod:`normreg._ops`); tensors not on the
CPU run :mod:`normreg._reference`.

The package: :mod:`._operators` (the functions above), :mod:`._penalty` (a penalty
object's prox: its terms composed into one plan, then one of the same runs),
:mod:`._checks` (the argument checks), :mod:`._runners` (checked arguments in, one
kernel call, :class:`ProxStats` out) and :mod:`._proxstats` (:class:`ProxStats`).
"""

from __future__ import annotations

from ._checks import _group_shapes, _named  # noqa: F401  (normreg.distributed uses them)
from ._operators import (
    elastic_net_,
    group_soft_threshold_,
    hard_threshold_,
    l2_norm_prox_,
    linf_prox_,
    project_box_,
    project_l1_ball_,
    project_l2_ball_,
    project_linf_ball_,
    ridge_shrink_,
    soft_threshold_,
)
from ._penalty import (  # noqa: F401  (the private names: normreg.optim and normreg.distributed use them)
    _check_plan_params,
    _Plan,
    _plan,
    _run_plan,
    penalty_prox_,
)
from ._proxstats import ProxStats

__all__ = [
    "ProxStats",
    "soft_threshold_",
    "ridge_shrink_",
    "elastic_net_",
    "hard_threshold_",
    "group_soft_threshold_",
    "l2_norm_prox_",
    "linf_prox_",
    "project_box_",
    "project_l2_ball_",
    "project_linf_ball_",
    "project_l1_ball_",
    "penalty_prox_",
]
