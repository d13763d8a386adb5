"""Pure-torch implementation of every normreg op, with the kernels' semantics.

Two jobs: the fallback for tensors the kernels do not take (CUDA and other devices), and
the oracle of the tests. It is written for clarity, not speed: float64 arithmetic, plain
torch expressions, autograd-differentiable (so double backward works through it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "group_shape",
    "penalty_value",
    "penalty_grad",
    "group_norms",
    "group_value",
    "group_grad",
    "pointwise_loss",
    "total_variation",
    "total_variation_grad",
    "soft",
    "prox_shrink_",
    "prox_hard_",
    "project_box_",
    "prox_l2_norm_",
    "prox_group_",
    "project_l2_ball_",
    "l1_ball_threshold",
    "project_l1_ball_",
    "prox_linf_",
    "sgd_step_",
    "adam_step_",
    "adam_scalars",
]


def _acc(t: Tensor) -> Tensor:
    """Accumulation copy: float64 where the device has it."""
    return t.to(torch.float32 if t.device.type == "mps" else torch.float64)


def _per_tensor(s: float | Sequence[float], n: int) -> list[float]:
    return [float(s)] * n if isinstance(s, (int, float)) else [float(v) for v in s]


# ---- edge values (docs/conventions.md, "Edge values"): scaled norms, infinities, rounding ----


def _pow2mul(x: Tensor, k: Tensor) -> Tensor:
    """x * 2^k exactly (k: int tensor broadcasting against x, |k| <= 1100), in two factors so
    that 2^k itself need not be a double."""
    k = k.to(x.device)
    h = torch.div(k, 2, rounding_mode="floor")
    one = torch.ones(k.shape, dtype=x.dtype, device=x.device)
    return x * torch.ldexp(one, h) * torch.ldexp(one, k - h)


def _exponent(m: Tensor) -> Tensor:
    """Binary exponent e with m in [2^(e-1), 2^e) (0 for 0, inf, NaN): the scale of a norm."""
    e = torch.frexp(m.detach()).exponent
    return torch.where(torch.isfinite(m.detach()) & (m.detach() > 0), e, torch.zeros_like(e))


def _norm(x: Tensor, dim=None) -> Tensor:
    """L2 norm over ``dim`` (all dims if None) without overflow or underflow: the values are
    scaled by 2^-e, e the exponent of their max |x| (exact), as the kernels do."""
    if x.numel() == 0:
        return x.new_zeros(()) if dim is None else x.abs().sum(dim=dim)
    m = x.detach().abs().amax() if dim is None else x.detach().abs().amax(dim=dim, keepdim=True)
    e = _exponent(m)
    y = _pow2mul(x, -e)
    q = (y * y).sum() if dim is None else (y * y).sum(dim=dim, keepdim=True)
    n = _pow2mul(torch.sqrt(q), e)
    return n if dim is None else n.squeeze(dim)


def _half_sq(x: Tensor, l2: float) -> Tensor:
    """(l2 / 2) * sum x^2, finite wherever the true value is (scaled like _norm)."""
    if x.numel() == 0:
        return x.new_zeros(())
    e = _exponent(x.detach().abs().amax())
    y = _pow2mul(x, -e)
    return _pow2mul((0.5 * l2) * (y * y).sum(), 2 * e)


def _store_rz(x: Tensor, dtype: torch.dtype) -> Tensor:
    """float64 ``x`` rounded to ``dtype`` toward zero (|result| <= |x|): a projection stays in its set."""
    y = x.to(dtype)
    if dtype == torch.float64:
        return y
    bits = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}[dtype]
    over = y.to(torch.float64).abs() > x.abs()  # NaN: False
    # one step toward 0: the magnitude's bit pattern minus 1 (sign-magnitude format)
    return torch.where(over, (y.view(bits) - 1).view(dtype), y)


def _tensor_value(kind: str, w: Tensor, s1: float, s2: float) -> Tensor:
    x = _acc(w).reshape(-1)
    if kind == "l1":
        return s1 * x.abs().sum()
    if kind == "squared_l2":
        return _half_sq(x, s2)
    if kind == "elastic_net":
        return s1 * x.abs().sum() + _half_sq(x, s2)
    if kind == "l2_norm":
        return s1 * _norm(x)
    if kind == "linf":
        if x.numel() == 0:
            return x.new_zeros(())
        if torch.isnan(x).any():
            return x.new_tensor(float("nan"))
        return s1 * x.abs().max()
    if kind == "l0":
        if torch.isnan(x).any():
            return x.new_tensor(float("nan"))
        return s1 * (x != 0).sum().to(x.dtype)
    raise ValueError(f"unknown penalty kind {kind!r}")


def penalty_value(kind: str, tensors: Sequence[Tensor], s1=0.0, s2=0.0) -> Tensor:
    """Value of the penalty as a float64 0-dim tensor (differentiable where the kind is)."""
    n = len(tensors)
    a, b = _per_tensor(s1, n), _per_tensor(s2, n)
    total = _acc(tensors[0]).new_zeros(())
    for w, x, y in zip(tensors, a, b):
        total = total + _tensor_value(kind, w, x, y)
    return total


def penalty_grad(kind: str, tensors: Sequence[Tensor], s1=0.0, s2=0.0, dtype: torch.dtype | None = None) -> list[Tensor]:
    """Gradient of the penalty per tensor, in ``dtype`` (default: each tensor's, rounded once)."""
    if kind == "l0":
        raise ValueError("penalty_grad: L0 has no gradient; use its proximal step (prox_) instead")
    n = len(tensors)
    a, b = _per_tensor(s1, n), _per_tensor(s2, n)
    out = []
    for w, x, y in zip(tensors, a, b):
        v = _acc(w)
        sign = torch.where(torch.isnan(v), v, torch.sign(v))
        # b * w is left out for b = 0 (0 * inf would make an infinite weight's L1 gradient NaN)
        if kind == "l1":
            g = x * sign
        elif kind == "squared_l2":
            g = y * v if y != 0 else x * 0.0 * sign
        elif kind == "elastic_net":
            g = x * sign + y * v if y != 0 else x * sign
        elif kind == "l2_norm":
            g = _l2_norm_grad(v, x)
        elif kind == "linf":
            g = torch.zeros_like(v)
            if v.numel():
                if torch.isnan(v).any():
                    g = torch.full_like(v, float("nan"))
                else:
                    # the first arg max in memory order, as the kernels walk it (any dense layout:
                    # channels_last, transposed); zeros_like kept v's strides, so g walks alike
                    order = sorted(range(v.dim()), key=lambda d: -v.stride(d))
                    flat = v.permute(order).reshape(-1)
                    k = int(torch.argmax(flat.abs()))
                    g.permute(order).view(-1)[k] = x * torch.sign(flat[k])
        else:
            raise ValueError(f"unknown penalty kind {kind!r}")
        out.append(g.to(dtype or w.dtype))
    return out


def _l2_norm_grad(v: Tensor, s: float) -> Tensor:
    """s * v / ||v||: 0 for a zero norm, NaN for a NaN norm, and the limit for infinite
    elements (s * sign / sqrt(k) on each of the k of them, 0 elsewhere)."""
    norm = _norm(v)
    if torch.isnan(norm):
        return v * norm
    if not norm > 0 or s == 0:
        return v * 0.0
    inf = torch.isinf(v)
    if bool(inf.any()):
        return torch.where(inf, s * torch.sign(v) / math.sqrt(int(inf.sum())), 0.0 * v)
    e = _exponent(norm)  # v / ||v|| = (v 2^-e) / (||v|| 2^-e): no overflow for tiny norms
    return s * (_pow2mul(v, -e) / _pow2mul(norm, -e))


def group_shape(shape: Sequence[int], dim: int) -> tuple[int, int, int]:
    """(outer, groups, inner) of a tensor whose groups are the slices along ``dim``."""
    nd = len(shape)
    d = dim + nd if dim < 0 else dim
    if not 0 <= d < max(nd, 1):
        raise ValueError(f"'dim' is {dim} but the tensor has {nd} dims")
    if nd == 0:
        return 1, 1, 1
    outer = 1
    for s in shape[:d]:
        outer *= s
    inner = 1
    for s in shape[d + 1 :]:
        inner *= s
    return outer, shape[d], inner


def group_norms(w: Tensor, dim: int) -> Tensor:
    """L2 norm of each slice along ``dim`` (float64)."""
    outer, groups, inner = group_shape(w.shape, dim)
    x = _acc(w).reshape(outer, groups, inner)
    return _norm(x.transpose(0, 1).reshape(groups, outer * inner), dim=1)


def group_value(tensors: Sequence[Tensor], dim: int, s1=0.0) -> Tensor:
    a = _per_tensor(s1, len(tensors))
    total = _acc(tensors[0]).new_zeros(())
    for w, x in zip(tensors, a):
        total = total + x * group_norms(w, dim).sum()
    return total


def group_grad(tensors: Sequence[Tensor], dim: int, s1=0.0, dtype: torch.dtype | None = None) -> list[Tensor]:
    a = _per_tensor(s1, len(tensors))
    out = []
    for w, x in zip(tensors, a):
        outer, groups, inner = group_shape(w.shape, dim)
        v = _acc(w).reshape(outer, groups, inner)
        norms = group_norms(w, dim)
        coef = torch.where(norms > 0, x / torch.where(norms > 0, norms, 1.0), norms * 0.0)
        g = v * coef.view(1, groups, 1)
        big = (norms > 0) & torch.isfinite(norms) & ~torch.isfinite(coef)  # x / ||w|| overflows
        if bool(big.any()):  # x w / ||w|| = (w 2^-e) (x / (||w|| 2^-e))
            e = _exponent(norms)
            scaled = _pow2mul(v, -e.view(1, groups, 1)) * (x / _pow2mul(norms, -e)).view(1, groups, 1)
            g = torch.where(big.view(1, groups, 1), scaled, g)
        inf = torch.isinf(v)
        k = inf.sum(dim=(0, 2))  # infinite elements per group
        lim = (torch.isinf(norms) & (k > 0)).view(1, groups, 1)
        if bool(lim.any()):  # the limit of x w / ||w||: x sign(w) / sqrt(k) on the k infinities, 0 elsewhere
            r = x * torch.sign(v) / torch.sqrt(k.clamp_min(1).to(v.dtype)).view(1, groups, 1)
            g = torch.where(lim, torch.where(inf, r, 0.0), g)
        out.append(g.reshape(w.shape).to(dtype or w.dtype))
    return out


# ---- image-space losses -------------------------------------------------------------------


def pointwise_loss(
    kind: str,
    pred: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``[mask] [weight] loss(pred - target)`` reduced, in float64 (differentiable).

    ``loss`` is ``|d|`` (``kind="l1"``) or ``d**2`` (``kind="mse"``). ``mask`` and ``weight``
    broadcast to pred's shape. "mean" divides by the mask's sum over pred's shape when a mask
    is given, else by ``pred.numel()``; weights do not enter the denominator.
    """
    d = _acc(pred) - _acc(target)
    if kind == "l1":
        e = d.abs()
    elif kind == "mse":
        e = d * d
    else:
        raise ValueError(f"unknown loss kind {kind!r}")
    m = None
    if mask is not None:
        m = _acc(mask).expand_as(d)
        e = m * e
    if weight is not None:
        e = _acc(weight).expand_as(d) * e
    if reduction == "none":
        return e
    total = e.sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / (m.sum() if m is not None else d.new_tensor(float(d.numel())))
    raise ValueError(f"unknown reduction {reduction!r}")


def total_variation(images: Tensor, kind: str = "anisotropic", reduction: str = "sum", eps: float = 1e-8) -> Tensor:
    """Total variation of an NCHW batch in float64 (differentiable).

    Forward differences, zero past the last row / column. anisotropic: ``sum |dx| + |dy|``;
    isotropic: ``sum sqrt(dx^2 + dy^2 + eps)`` over all N*C*H*W pixels (a zero term has
    gradient 0 when ``eps == 0``). "none": per-image values (N,); "mean": the sum divided by
    N*C*H*W.
    """
    x = _acc(images)
    dx = torch.diff(x, dim=-1)
    dy = torch.diff(x, dim=-2)
    if kind == "anisotropic":
        per = dx.abs().sum(dim=(1, 2, 3)) + dy.abs().sum(dim=(1, 2, 3))
    elif kind == "isotropic":
        n, c, h, w = x.shape
        dx = torch.cat([dx, x.new_zeros(n, c, h, min(w, 1))], dim=-1)
        dy = torch.cat([dy, x.new_zeros(n, c, min(h, 1), w)], dim=-2)
        q = dx * dx + dy * dy + eps
        nz = q != 0  # NaN counts as nonzero, so it propagates
        per = torch.where(nz, torch.where(nz, q, 1.0).sqrt(), 0.0).sum(dim=(1, 2, 3))
    else:
        raise ValueError(f"unknown total variation kind {kind!r}")
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    if reduction == "mean":
        return per.sum() / float(x.numel()) if x.numel() else per.sum() * float("nan")
    raise ValueError(f"unknown reduction {reduction!r}")
def total_variation_grad(images: Tensor, kind: str, reduction: str, eps: float, grad_value: Tensor) -> Tensor:
    """The gradient of :func:`total_variation` times ``grad_value`` (0-dim, or (N,) for
    "none"), in float64, without autograd (the formula autograd gives for it)."""
    x = _acc(images)
    dx = torch.diff(x, dim=-1)
    dy = torch.diff(x, dim=-2)
    if kind == "anisotropic":
        ux, uy = torch.sign(dx), torch.sign(dy)
    else:
        n, c, h, w = x.shape
        px = torch.cat([dx, x.new_zeros(n, c, h, min(w, 1))], dim=-1)
        py = torch.cat([dy, x.new_zeros(n, c, min(h, 1), w)], dim=-2)
        q = px * px + py * py + eps
        nz = q != 0
        r = torch.where(nz, q, 1.0).sqrt()
        ux = torch.where(nz, px / r, 0.0)[..., :, : w - 1]
        uy = torch.where(nz, py / r, 0.0)[..., : h - 1, :]
    g = torch.zeros_like(x)
    g[..., :, :-1] -= ux
    g[..., :, 1:] += ux
    g[..., :-1, :] -= uy
    g[..., 1:, :] += uy
    k = grad_value.to(x)
    if reduction == "none":
        return g * k.reshape(-1, 1, 1, 1)
    if reduction == "mean":
        k = k / float(x.numel())
    return g * k


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


def prox_shrink_(tensors: Sequence[Tensor], t, c, weights: Sequence[Tensor] | None = None, nonneg: bool = False) -> list[int]:
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
    return torch.where(norm > s, 1.0 - s / torch.where(norm > 0, norm, 1.0), torch.where(torch.isnan(norm), norm, 0.0))


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


# ---- optimizer steps (the fallback for non-CPU tensors, and an oracle of the tests) ----
# Multi-tensor: torch._foreach_* ops over the whole list (few kernel launches on a GPU), in the
# kernels' compute type (float64 for float64, else float32: bf16 / f16 are computed in float32
# and rounded once when stored), the same formulas and order as torch.optim's single-tensor
# SGD / Adam. Not bitwise the kernels' (they contract some products into FMAs, and torch's
# sqrt is not theirs): equal within float rounding.


def _compute_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _to_compute(tensors: Sequence[Tensor]) -> list[Tensor]:
    """The tensors in their compute type (the tensor itself where it already is: read only)."""
    return [t.to(_compute_dtype(t)) for t in tensors]


def _zero_counts(tensors: Sequence[Tensor]) -> Tensor:
    """Zeros per tensor as stored, an int64 tensor (no host sync)."""
    if not tensors:
        return torch.zeros((0,), dtype=torch.int64)
    return torch.stack([(t == 0).sum() for t in tensors])


def _step_grads(grads, xs, params, kind: int, a: float, b: float, maximize: bool) -> list[Tensor]:
    """The gradient an update uses: ``g``, or (kind 3) ``g + (a sign(w) + b w)`` added in
    float64 and rounded once to the param's dtype, exactly as ``penalty.add_grad_`` on this
    reference stores it; negated for ``maximize``."""
    if kind == 3:
        d = []
        for g, w, x in zip(grads, params, xs):
            v = _acc(w)
            sign = torch.where(torch.isnan(v), v, torch.sign(v))
            t = a * sign + b * v if b != 0 else a * sign  # b * w left out for b = 0 (0 * inf)
            d.append((_acc(g) + t).to(g.dtype).to(x.dtype))
    else:
        d = _to_compute(grads)
    if maximize:
        d = torch._foreach_neg(d)
    return d


def _soft_list(ys, t):
    """sign(y) max(|y| - t, 0) as ``y - clamp(y, -t, t)`` (t a float or one tensor per y;
    NaN stays NaN)."""
    if isinstance(t, (list, tuple)):
        lo = torch._foreach_maximum(ys, torch._foreach_neg(t))
        return torch._foreach_sub(ys, torch._foreach_minimum(lo, t))
    return torch._foreach_sub(ys, torch._foreach_clamp_max(torch._foreach_clamp_min(ys, -t), t))


def _prox_list(ys: list[Tensor], kind: int, a: float, b: float, den: list[Tensor] | None) -> list[Tensor]:
    """The elementwise prox fused into a step: 1 elastic-net shrink, 2 exact L0; with ``den``
    (Adam's sqrt(v_hat) + eps) in the preconditioned metric. As the kernels: the update is in
    the compute type, the prox (which entries become zero, and the shrunk values) in float64,
    rounded once when stored; below float64, the preconditioned tests are made on products
    (|y| den <= a, y^2 den <= 2a), exact or rounded once, never on a rounded quotient."""
    if kind not in (1, 2):
        return ys
    out = []
    for k, y in enumerate(ys):
        low = y.dtype != torch.float64
        x = y.double()
        d = None if den is None else den[k].double()
        if kind == 1:
            if d is None:
                r = soft(x, a) / (1.0 + b) if b else soft(x, a)
            elif low:
                m = x.abs() * d - a  # |y| den: exact in float64 for float32 factors
                r = torch.where(m <= 0, 0.0, torch.sign(x) * m / (d + b)) + torch.where(torch.isnan(x), x, 0.0)
            else:
                r = soft(x, a / d) * (d / (d + b)) if b else soft(x, a / d)
        else:
            # |y| <= sqrt(2a) (exact for a stored y), or y^2 den <= 2a (y^2 exact below float64)
            r = torch.where(x.abs() <= math.sqrt(2.0 * a) if d is None else x * x * d <= 2.0 * a, 0.0, x)
        out.append(r)
    return out


def sgd_step_(params, grads, bufs, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
              maximize=False, prox_kind=0, prox_a=0.0, prox_b=0.0, init=None) -> Tensor:
    """torch.optim.SGD's update then the elementwise prox (kind 3: the affine penalty's
    gradient added first); returns the zeros per param (int64 tensor). With momentum,
    ``bufs[i]`` is the buffer, updated in place; ``init[i]`` (default: ``bufs[i] is None``)
    says it is new and takes the gradient as is (a None entry is replaced by a new buffer)."""
    with torch.no_grad():
        xs = _to_compute(params)
        d = _step_grads(grads, xs, params, prox_kind, prox_a, prox_b, maximize)
        if weight_decay:
            d = torch._foreach_add(d, xs, alpha=weight_decay)
        if momentum:
            if init is None:
                init = [b is None for b in bufs]
            for i, buf in enumerate(bufs):
                if buf is None:
                    bufs[i] = torch.zeros_like(params[i])
            old = [i for i, fresh in enumerate(init) if not fresh]
            bm = list(d)
            if old:
                upd = torch._foreach_add(
                    torch._foreach_mul(_to_compute([bufs[i] for i in old]), momentum),
                    [d[i] for i in old],
                    alpha=1.0 - dampening,
                )
                for i, u in zip(old, upd):
                    bm[i] = u
            torch._foreach_copy_(list(bufs), bm)
            d = torch._foreach_add(d, bm, alpha=momentum) if nesterov else bm
        ys = torch._foreach_add(xs, d, alpha=-lr)
        torch._foreach_copy_(list(params), _prox_list(ys, prox_kind, prox_a, prox_b, None))
    return _zero_counts(params)


def adam_scalars(steps: Sequence[float], lr: float, beta1: float, beta2: float) -> tuple[list[float], list[float]]:
    """Per param ``(lr / (1 - beta1^t), sqrt(1 - beta2^t))`` for the step counts ``t`` after
    this step, in Python doubles (the kernels and this reference take the same values)."""
    cache: dict[float, tuple[float, float]] = {}
    step_size, bc2s = [], []
    for s in steps:
        c = cache.get(s)
        if c is None:
            c = cache[s] = (lr / (1 - beta1**s), (1 - beta2**s) ** 0.5)
        step_size.append(c[0])
        bc2s.append(c[1])
    return step_size, bc2s


def adam_step_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *, lr, beta1, beta2, eps,
               weight_decay=0.0, decoupled=False, maximize=False, amsgrad=False, prox_kind=0, prox_a=0.0,
               prox_b=0.0, preconditioned=False) -> Tensor:
    """torch.optim.Adam / AdamW's update (``steps``: each param's step count after this
    step, floats or a tensor) then the (optionally Adam-preconditioned) elementwise prox
    (kind 3: the affine penalty's gradient added first); returns the zeros per param."""
    if isinstance(steps, Tensor):
        steps = steps.tolist()
    step_size, bc2s = adam_scalars([float(s) for s in steps], lr, beta1, beta2)
    with torch.no_grad():
        xs = _to_compute(params)
        d = _step_grads(grads, xs, params, prox_kind, prox_a, prox_b, maximize)
        if weight_decay:
            if decoupled:
                xs = torch._foreach_mul(xs, 1.0 - lr * weight_decay)
            else:
                d = torch._foreach_add(d, xs, alpha=weight_decay)
        m = torch._foreach_lerp(_to_compute(exp_avgs), d, 1.0 - beta1)
        v = torch._foreach_addcmul(torch._foreach_mul(_to_compute(exp_avg_sqs), beta2), d, d, value=1.0 - beta2)
        torch._foreach_copy_(list(exp_avgs), m)
        torch._foreach_copy_(list(exp_avg_sqs), v)
        if amsgrad:
            v = torch._foreach_maximum(_to_compute(max_exp_avg_sqs), v)
            torch._foreach_copy_(list(max_exp_avg_sqs), v)
        den = torch._foreach_add(torch._foreach_div(torch._foreach_sqrt(v), bc2s), eps)
        ys = torch._foreach_addcdiv(xs, m, den, [-s for s in step_size])
        out = _prox_list(ys, prox_kind, prox_a, prox_b, den if preconditioned else None)
        torch._foreach_copy_(list(params), out)
    return _zero_counts(params)
