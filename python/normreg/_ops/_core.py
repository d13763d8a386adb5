"""The switches (reference backend, dispatcher only), the direct-path test and version bump,
and the helpers every op family shares."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import torch
from torch import Tensor

from .._bridge import check_overlap

_env = os.environ.get("NORMREG_BACKEND", "").strip().lower()
if _env not in ("", "kernels", "reference", "dispatcher"):
    raise ValueError(f"NORMREG_BACKEND must be 'kernels', 'reference' or 'dispatcher', got {_env!r}")


class _Switches:
    reference = _env == "reference"
    dispatcher = _env in ("reference", "dispatcher")


_sw = _Switches()

_is_compiling = torch.compiler.is_compiling
_functorch_active = torch._C._are_functorch_transforms_active
_dispatch_modes = torch._C._len_torch_dispatch_stack
_increment_version = torch._C._increment_version  # takes a list: one call for all tensors


def direct_ok() -> bool:
    """May an eager call skip the dispatcher? (Not compiling, no functorch transform, no
    dispatch mode, not switched off.) The caller must also have plain CPU tensors."""
    return not (_sw.dispatcher or _is_compiling() or _functorch_active() or _dispatch_modes())


def functorch_active() -> bool:
    """Inside torch.func.grad / vjp / vmap / jacrev ... ?

    torch 2.13's ``custom_op`` autograd is an ``autograd.Function`` without
    ``setup_context``, which functorch refuses; under a transform the public layer therefore
    computes values and gradients with the differentiable pure-torch implementation
    (:func:`reference_value`), whose torch ops functorch differentiates and batches.
    """
    return bool(_functorch_active())


def bump(tensors: Sequence[Tensor]) -> None:
    """Bump the version counter of every tensor the direct path wrote, as the op would."""
    _increment_version(tensors)


def as_float(value: Tensor):
    """A 0-dim result as a Python float; under torch.compile and for meta tensors, the tensor."""
    if _is_compiling() or value.device.type == "meta":
        return value
    return float(value)


def reference_forced() -> bool:
    return _sw.reference


@contextlib.contextmanager
def force_reference(on: bool = True):
    """Run every op on ``_reference`` (CPU tensors included), through the dispatcher."""
    old = (_sw.reference, _sw.dispatcher)
    _sw.reference, _sw.dispatcher = on, on or old[1]
    try:
        yield
    finally:
        _sw.reference, _sw.dispatcher = old


@contextlib.contextmanager
def dispatcher_only(on: bool = True):
    """Take the registered operators for every call (no direct path)."""
    old = _sw.dispatcher
    _sw.dispatcher = on or _sw.reference
    try:
        yield
    finally:
        _sw.dispatcher = old


def _kernels(tensors: Sequence[Tensor]) -> bool:
    """Inside an op: do these (real) tensors go to the C++ kernels?"""
    return not _sw.reference and tensors[0].device.type == "cpu"


def value_dtype(tensors: Sequence[Tensor]) -> torch.dtype:
    """A penalty value's dtype: float64 if any tensor is float64, else float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


_F32_MAX = torch.finfo(torch.float32).max


def value_tensor(v: float, dtype: torch.dtype, device=None) -> Tensor:
    """The kernels' float64 value as a 0-dim tensor of the value dtype, rounded as torch rounds
    float64 to a narrower type (``Tensor.to``, the reference's path): a value past the dtype's
    range is inf, as ``torch.sum`` in that dtype gives (``scalar_tensor`` alone would raise)."""
    if dtype != torch.float64 and abs(v) > (_F32_MAX if dtype == torch.float32 else torch.finfo(dtype).max):
        return torch.scalar_tensor(v, dtype=torch.float64, device=device).to(dtype)
    return torch.scalar_tensor(v, dtype=dtype, device=device)


def _no_overlap(tensors: Sequence[Tensor], arg: str = "params") -> None:
    """The reference path refuses overlapping memory as the kernels' path does."""
    check_overlap(list(tensors), [t.data_ptr() for t in tensors], [t.numel() for t in tensors], arg)


def _counts(zeros, params: Sequence[Tensor]) -> Tensor:
    return torch.tensor(list(zeros), dtype=torch.int64, device=params[0].device)


def _counts_fake(params: Sequence[Tensor]) -> Tensor:
    return params[0].new_empty((len(params),), dtype=torch.int64)
