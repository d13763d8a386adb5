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
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from . import _ops
from . import _reference as ref
from ._bridge import TensorList, check_strength, check_writable, paired, tensor_list

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

Params = Tensor | Iterable[Tensor] | torch.nn.Module
Strength = float | Sequence[float]

# op codes of _C.prox_elementwise
_SHRINK, _SHRINK_NONNEG, _HARD, _CLAMP = 0, 1, 2, 3


@dataclass(frozen=True)
class ProxStats:
    """Zeros after a proximal step: per tensor (in the order given), in total, and of how many."""

    zeros: list[int]
    total_zeros: int
    numel: int

    @property
    def fraction(self) -> float:
        """Fraction of entries that are exactly zero (0.0 for no entries)."""
        return self.total_zeros / self.numel if self.numel else 0.0

    @classmethod
    def from_counts(cls, zeros: Sequence[int] | Tensor, tensors: Sequence[Tensor]) -> ProxStats:
        """From the counts of a direct call (ints) or of an operator (an int64 tensor).

        Under torch.compile and for meta tensors the counts stay a tensor (``zeros`` and
        ``total_zeros`` are then tensors): reading them would end the graph.
        """
        numel = sum(t.numel() for t in tensors)
        if isinstance(zeros, Tensor):
            if torch.compiler.is_compiling() or zeros.device.type == "meta":
                return cls(zeros, zeros.sum(), numel)
            zeros = zeros.tolist()
        z = [int(v) for v in zeros]
        return cls(z, sum(z), numel)

    @classmethod
    def combine(cls, parts: Iterable[ProxStats]) -> ProxStats:
        """Concatenate the stats of several calls (zeros lists are joined in order)."""
        zeros: list[int] = []
        numel = 0
        for p in parts:
            zeros.extend(p.zeros)
            numel += p.numel
        return cls(zeros, sum(zeros), numel)

    def __repr__(self) -> str:
        return f"ProxStats(total_zeros={self.total_zeros}, numel={self.numel}, fraction={self.fraction:.4g})"


# ---- argument checks (all before any write) -------------------------------------------------


@contextlib.contextmanager
def _named(fn: str):
    """Prefix TypeError / ValueError messages with the function's name."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        msg = str(exc)
        if msg.startswith(fn + ":"):
            raise
        raise type(exc)(f"{fn}: {msg}") from None


def _strengths(value, arg: str, n: int, *, positive: bool = False) -> list[float]:
    """One number (broadcast) or one per tensor; finite and >= 0 (> 0 if ``positive``)."""
    if isinstance(value, (list, tuple)) or (isinstance(value, Tensor) and value.dim() == 1):
        vals = list(value.tolist() if isinstance(value, Tensor) else value)
        if len(vals) != n:
            raise ValueError(
                f"'{arg}' has {len(vals)} values for {n} tensors; give one number or one per tensor"
            )
        out = [check_strength(v, f"{arg}[{i}]") for i, v in enumerate(vals)]
    else:
        out = [check_strength(value, arg)]
    if positive:
        for i, v in enumerate(out):
            if v <= 0:
                name = arg if len(out) == 1 else f"{arg}[{i}]"
                raise ValueError(f"'{name}' must be > 0, got {v}")
    return out


def _bounds(value, arg: str, n: int, default: float) -> list[float]:
    if value is None:
        return [default]
    vals = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(vals) not in (1, n):
        raise ValueError(f"'{arg}' has {len(vals)} values for {n} tensors; give one number or one per tensor")
    out = []
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"'{arg}' must be a real number or None, got {type(v).__name__}")
        if v != v:
            raise ValueError(f"'{arg}' must not be NaN")
        out.append(float(v))
    return out


def _params(params: Params) -> TensorList:
    tl = tensor_list(params, "params", inplace=True, direct=_ops.direct_ok())
    check_writable(tl.tensors)
    return tl


def _weights(tl: TensorList, weights) -> TensorList | None:
    if weights is None:
        return None
    ws = [weights] if isinstance(weights, Tensor) else list(weights)
    if len(ws) != len(tl.tensors):
        raise ValueError(f"'weights' must have one tensor per param: got {len(ws)} for {len(tl.tensors)}")
    conv = []
    for i, (p, u) in enumerate(zip(tl.tensors, ws)):
        if not isinstance(u, Tensor):
            raise TypeError(f"'weights'[{i}] must be a torch.Tensor, got {type(u).__name__}")
        if u.shape != p.shape:
            raise ValueError(
                f"'weights'[{i}] has shape {tuple(u.shape)} but its param has shape {tuple(p.shape)}; they must match"
            )
        if not u.is_floating_point():
            raise TypeError(f"'weights'[{i}] must be a floating-point tensor, got {u.dtype}")
        u = u.detach().to(device=p.device, dtype=p.dtype).contiguous()
        if not bool(torch.all(u >= 0)) or not bool(torch.all(torch.isfinite(u))):
            raise ValueError(f"'weights'[{i}] must be finite and >= 0 everywhere")
        conv.append(u)
    return paired(tl, conv, "weights", inplace=False)


def _group_shapes(tensors: Sequence[Tensor], dim) -> tuple[list[int], list[int], list[int]]:
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"'dim' must be an int, got {type(dim).__name__}")
    outer, groups, inner = [], [], []
    for i, t in enumerate(tensors):
        nd = t.dim()
        if not -max(nd, 1) <= dim < max(nd, 1):
            raise ValueError(
                f"'dim'={dim} is out of range for 'params'[{i}] with shape {tuple(t.shape)}; pick a dim "
                "every tensor has, or leave such tensors (e.g. biases) out"
            )
        o, g, n = ref.group_shape(tuple(t.shape), dim)
        outer.append(o)
        groups.append(g)
        inner.append(n)
    return outer, groups, inner


def _stats(tl: TensorList, zeros) -> ProxStats:
    return ProxStats.from_counts(zeros, tl.tensors)


def _mul(step: float, ls: list[float]) -> list[float]:
    return [step * v for v in ls]


# ---- runners (checked arguments in, stats out) ----------------------------------------------


def _run_shrink(
    tl: TensorList, t: list[float], c: list[float], u: TensorList | None, nonneg: bool
) -> ProxStats:
    return _stats(tl, _ops.prox_shrink(tl, u, t, c, nonneg))


def _full(v: list[float], tl: TensorList) -> list[float]:
    return v * len(tl.tensors) if len(v) == 1 else v


def _run_hard(tl: TensorList, thr: list[float]) -> ProxStats:
    return _stats(tl, _ops.prox_hard(tl, thr))


def _run_clamp(tl: TensorList, lo: list[float], hi: list[float]) -> ProxStats:
    return _stats(tl, _ops.project_box(tl, lo, hi))


def _run_l2_norm(tl: TensorList, t: list[float], s: list[float], d: list[float]) -> ProxStats:
    return _stats(tl, _ops.prox_l2_norm(tl, t, s, d))


def _run_group(tl: TensorList, shapes, dim: int, t: list[float], s: list[float], d: list[float]) -> ProxStats:
    return _stats(tl, _ops.prox_group(tl, dim, t, s, d))


def _run_linf(tl: TensorList, s: list[float]) -> ProxStats:
    return _stats(tl, _ops.prox_linf(tl, s))


# ---- public functions ------------------------------------------------------------------------


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


# ---- penalties ------------------------------------------------------------------------------


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
