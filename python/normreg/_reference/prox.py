"""The proximal operators and projections, in place."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._common import _acc, _exponent, _norm, _per_tensor, _pow2mul, _store_rz
from .penalty import group_shape

# ---- proximal operators (in place; each returns the zeros per tensor after the step) ----
# Computed in float64 and written back with one rounding, like the kernels. A threshold or
# coefficient that is NaN (a tensor or group whose norm is NaN) makes its elements NaN.


def _zeros(t: Tensor) -> int:
    return int((t == 0).sum())


def _write(dst: Tensor, value: Tensor) -> int:
    with torch.no_grad():
        dst.copy_(value.reshape(dst.shape).to(dst.dtype))
    return _zeros(dst)


def soft(x: Tensor, t) -> Tensor:
    """sign(x) * max(|x| - t, 0); NaN in x or t gives NaN."""
    return torch.sign(x) * torch.clamp_min(x.abs() - t, 0.0) + torch.where(torch.isnan(x), x, 0.0)


def prox_shrink_(
    tensors: Sequence[Tensor], t, c, weights: Sequence[Tensor] | None = None, nonneg: bool = False
) -> list[int]:
    """w <- c * soft(w, t * u) (u: optional weights); nonneg: c * max(w - t*u, 0)."""
    n = len(tensors)
    ts, cs = _per_tensor(t, n), _per_tensor(c, n)
    out = []
    for i, w in enumerate(tensors):
        x = _acc(w)
        ti = ts[i] * _acc(weights[i]) if weights is not None else ts[i]
        y = torch.clamp_min(x - ti, 0.0) + torch.where(torch.isnan(x), x, 0.0) if nonneg else soft(x, ti)
        out.append(_write(w, y * cs[i]))
    return out


def prox_hard_(tensors: Sequence[Tensor], thr) -> list[int]:
    """Exact L0 prox: 0 where |w| <= thr (thr = sqrt(2*step*l)), else w; NaN kept."""
    ths = _per_tensor(thr, len(tensors))
    return [_write(w, torch.where(_acc(w).abs() <= th, 0.0, _acc(w))) for w, th in zip(tensors, ths)]


def project_box_(tensors: Sequence[Tensor], lo, hi) -> list[int]:
    los, his = _per_tensor(lo, len(tensors)), _per_tensor(hi, len(tensors))
    return [_write(w, torch.clamp(_acc(w), a, b)) for w, a, b in zip(tensors, los, his)]


def _norm_coef(norm: Tensor, s: float) -> Tensor:
    return torch.where(
        norm > s, 1.0 - s / torch.where(norm > 0, norm, 1.0), torch.where(torch.isnan(norm), norm, 0.0)
    )


def prox_l2_norm_(tensors: Sequence[Tensor], t, s, d) -> list[int]:
    """Prox of l1|w|_1 + (l2/2)|w|^2 + lg||w||_2 per tensor: t = step*l1, s = step*lg, d = 1/(1+step*l2)."""
    n = len(tensors)
    ts, ss, ds = _per_tensor(t, n), _per_tensor(s, n), _per_tensor(d, n)
    out = []
    for w, ti, si, di in zip(tensors, ts, ss, ds):
        y = soft(_acc(w), ti)
        out.append(_write(w, y * (_norm_coef(_norm(y), si) * di)))
    return out


def prox_group_(tensors: Sequence[Tensor], dim: int, t, s, d) -> list[int]:
    """As prox_l2_norm_ with one group per slice along ``dim`` (sparse group lasso)."""
    n = len(tensors)
    ts, ss, ds = _per_tensor(t, n), _per_tensor(s, n), _per_tensor(d, n)
    out = []
    for w, ti, si, di in zip(tensors, ts, ss, ds):
        outer, groups, inner = group_shape(w.shape, dim)
        y = soft(_acc(w).reshape(outer, groups, inner), ti)
        norms = _norm(y.transpose(0, 1).reshape(groups, outer * inner), dim=1)
        out.append(_write(w, y * (_norm_coef(norms, si) * di).view(1, groups, 1)))
    return out


def project_l2_ball_(tensors: Sequence[Tensor], radius) -> list[int]:
    rs = _per_tensor(radius, len(tensors))
    out = []
    for w, r in zip(tensors, rs):
        x = _acc(w)
        norm = _norm(x)
        inf = torch.isinf(x)
        if bool(norm > r) and bool(inf.any()):  # the limit: the radius shared by the infinities
            out.append(_write(w, torch.where(inf, r * torch.sign(x) / math.sqrt(int(inf.sum())), 0.0)))
            continue
        if bool(norm > r):
            e = _exponent(norm)  # x r / ||x|| = (x 2^-e) (r / (||x|| 2^-e)): no underflow of r / ||x||
            y = _pow2mul(x, -e) * (r / _pow2mul(norm, -e))
        else:
            y = x * torch.where(torch.isnan(norm), norm, 1.0)
        out.append(_write(w, y))
    return out


def l1_ball_threshold(x: Tensor, radius: float) -> float:
    """theta with sum(max(|x| - theta, 0)) = radius (sort-based, Duchi et al. 2008); 0 inside
    the ball, +inf for radius 0 or when x has an infinite element, NaN if x has NaN."""
    a = _acc(x).reshape(-1).abs()
    if a.numel() == 0:
        return 0.0
    if torch.isnan(a).any():
        return float("nan")
    if radius == 0 or torch.isinf(a).any():
        return float("inf")
    if float(a.sum()) <= radius:
        return 0.0
    if math.isinf(float(a.sum())):  # float64 overflow: the same threshold of x 2^-64 (exact), scaled back
        return math.ldexp(l1_ball_threshold(a * 2.0**-64, math.ldexp(radius, -64)), 64)
    u = torch.sort(a, descending=True).values
    css = torch.cumsum(u, 0)
    k = torch.arange(1, u.numel() + 1, dtype=u.dtype)
    cond = u * k > css - radius
    cond[0] = True  # always true in exact arithmetic (u_1 > u_1 - radius), whatever css rounds to
    rho = int(torch.nonzero(cond).max())
    return max(float((css[rho] - radius) / (rho + 1)), 0.0)


def project_l1_ball_(tensors: Sequence[Tensor], radius) -> list[int]:
    rs = _per_tensor(radius, len(tensors))
    out = []
    for w, r in zip(tensors, rs):
        x = _acc(w)
        inf = torch.isinf(x)
        k = int(inf.sum())
        if k and r > 0 and not torch.isnan(x).any():  # the limit: the radius shared by the infinities
            y = torch.where(inf, torch.sign(x) * (r / k), 0.0)
        else:
            theta = l1_ball_threshold(w, r)
            y = torch.where(torch.isnan(x), x, 0.0) if theta == math.inf else soft(x, theta)
        # rounded toward zero: inside the ball, within 1 ulp of the float64 projection
        with torch.no_grad():
            w.copy_(_store_rz(y.reshape(w.shape), w.dtype))
        out.append(_zeros(w))
    return out


def prox_linf_(tensors: Sequence[Tensor], s) -> list[int]:
    """Prox of s * max|w| per tensor: w - P_{L1 ball of radius s}(w) = clamp(w, -theta, theta)."""
    ss = _per_tensor(s, len(tensors))
    out = []
    for w, si in zip(tensors, ss):
        x = _acc(w)
        theta = float("inf") if si == 0 else l1_ball_threshold(w, si)
        y = torch.full_like(x, theta) if theta != theta else torch.clamp(x, -theta, theta)
        out.append(_write(w, y))
    return out
