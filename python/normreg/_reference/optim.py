"""The optimizer steps (SGD, Adam), multi-tensor."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._common import _acc
from .prox import soft

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


def zero_counts(tensors: Sequence[Tensor]) -> Tensor:
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
                r = torch.where(m <= 0, 0.0, torch.sign(x) * m / (d + b)) + torch.where(
                    torch.isnan(x), x, 0.0
                )
            else:
                r = soft(x, a / d) * (d / (d + b)) if b else soft(x, a / d)
        else:
            # |y| <= sqrt(2a) (exact for a stored y), or y^2 den <= 2a (y^2 exact below float64)
            r = torch.where(x.abs() <= math.sqrt(2.0 * a) if d is None else x * x * d <= 2.0 * a, 0.0, x)
        out.append(r)
    return out


def sgd_step_(
    params,
    grads,
    bufs,
    *,
    lr,
    momentum=0.0,
    dampening=0.0,
    weight_decay=0.0,
    nesterov=False,
    maximize=False,
    prox_kind=0,
    prox_a=0.0,
    prox_b=0.0,
    init=None,
) -> Tensor:
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
    return zero_counts(params)


def adam_scalars(
    steps: Sequence[float], lr: float, beta1: float, beta2: float
) -> tuple[list[float], list[float]]:
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


def adam_step_(
    params,
    grads,
    exp_avgs,
    exp_avg_sqs,
    max_exp_avg_sqs,
    steps,
    *,
    lr,
    beta1,
    beta2,
    eps,
    weight_decay=0.0,
    decoupled=False,
    maximize=False,
    amsgrad=False,
    prox_kind=0,
    prox_a=0.0,
    prox_b=0.0,
    preconditioned=False,
) -> Tensor:
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
        v = torch._foreach_addcmul(
            torch._foreach_mul(_to_compute(exp_avg_sqs), beta2), d, d, value=1.0 - beta2
        )
        torch._foreach_copy_(list(exp_avgs), m)
        torch._foreach_copy_(list(exp_avg_sqs), v)
        if amsgrad:
            v = torch._foreach_maximum(_to_compute(max_exp_avg_sqs), v)
            torch._foreach_copy_(list(max_exp_avg_sqs), v)
        den = torch._foreach_add(torch._foreach_div(torch._foreach_sqrt(v), bc2s), eps)
        ys = torch._foreach_addcdiv(xs, m, den, [-s for s in step_size])
        out = _prox_list(ys, prox_kind, prox_a, prox_b, den if preconditioned else None)
        torch._foreach_copy_(list(params), out)
    return zero_counts(params)
