"""Shared helpers of the references: accumulation copies and the edge-value arithmetic
(scaled norms, infinities, rounding on store; docs/conventions.md, "Edge values")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


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
