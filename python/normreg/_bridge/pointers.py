"""The kernels' dtype codes and the pointer fast path of the losses: :func:`plain_pair`
says when two tensors go to the kernels as they are, :func:`pair_ptrs` / :func:`plain_ptrs`
give their data pointers. :mod:`.lists` builds the general (checked) lists on these codes."""

from __future__ import annotations

import torch
from torch import Tensor

DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
_SUPPORTED = "float32, float64, bfloat16 or float16"

_PLAIN_TYPES = {Tensor, torch.nn.Parameter}

_WIDE = (torch.float32, torch.float64)


def plain_pair(a, b) -> bool:
    """Are ``a`` and ``b`` plain tensors (Tensor or Parameter, no subclass) of one dtype,
    float32 or float64, and one shape, dense, contiguous and on the CPU? The losses' fast
    path: then the two need no conversion and their data pointers are the kernel arguments
    as they are (:func:`plain_ptrs`)."""
    return (
        type(a) in _PLAIN_TYPES
        and type(b) in _PLAIN_TYPES
        and a.dtype is b.dtype
        and a.dtype in _WIDE
        and a.is_cpu
        and b.is_cpu
        and a.layout is torch.strided
        and b.layout is torch.strided
        and a.shape == b.shape
        and a.is_contiguous()
        and b.is_contiguous()
    )


def pair_ptrs(a: Tensor, b: Tensor, out: Tensor | None) -> tuple[int, int, int]:
    """Kernel pointers of a pair :func:`plain_pair` accepted and of a new output made
    contiguous like ``a`` (0 when absent): their data pointers as they are."""
    return a.data_ptr(), b.data_ptr(), 0 if out is None else out.data_ptr()


def plain_ptrs(like: Tensor, *tensors: Tensor | None) -> list[int]:
    """Kernel pointers of contiguous CPU tensors of ``like``'s numel, in its dtype or its
    compute type (float32; float64 for float64), that the
    caller made itself (its inputs made contiguous, its outputs new), 0 for an absent one.
    What :func:`tensor_list` would check is asserted cheaply, so a caller's mistake is a
    RuntimeError and never a kernel reading past a buffer."""
    n, dt = like.numel(), like.dtype
    compute = torch.float64 if dt is torch.float64 else torch.float32  # a gradient buffer's type
    ptrs = []
    for t in tensors:
        if t is None:
            ptrs.append(0)
            continue
        if (
            t.numel() != n
            or not (t.is_cpu and t.is_contiguous())
            or (t.dtype is not dt and t.dtype is not compute)
        ):
            raise RuntimeError(
                f"normreg internal error: a kernel argument of shape {tuple(t.shape)}, {t.dtype}, "
                f"contiguous={t.is_contiguous()}, on {t.device}, where {n} contiguous CPU elements were expected"
            )
        ptrs.append(t.data_ptr())
    return ptrs
