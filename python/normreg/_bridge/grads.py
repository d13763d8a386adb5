"""Lists that pair with a checked list (:func:`paired`: grads, weights, outputs) and the
params' gradients: :func:`present_grads` (the fast path), :func:`checked_grads` (``.grad``
checked, zeros allocated), :func:`trainable`. On top of :mod:`.lists`."""

from __future__ import annotations

import operator

import torch
from torch import Tensor

from .._loader import _C
from .lists import _SCAN, TensorList, _dense, _dtype_of, _is_cpu, tensor_list
from .pointers import _PLAIN_TYPES, DTYPE_CODES

_grad_of = operator.attrgetter("grad")
_is_sparse = operator.attrgetter("is_sparse")


def paired(first: TensorList, others: list[Tensor], arg: str, *, inplace: bool = True) -> TensorList:
    """A list that pairs element by element with ``first`` (e.g. grads with params)."""
    if len(others) != len(first.tensors):
        raise ValueError(
            f"'{arg}' must have one tensor per param: got {len(others)} for {len(first.tensors)}"
        )
    for i, (p, o) in enumerate(zip(first.tensors, others)):
        if not isinstance(o, Tensor):
            raise TypeError(f"'{arg}'[{i}] must be a torch.Tensor, got {type(o).__name__}")
        if o.shape != p.shape:
            raise ValueError(
                f"'{arg}'[{i}] has shape {tuple(o.shape)} but its param has shape {tuple(p.shape)}; "
                "they must match"
            )
        if o.dtype != p.dtype:
            raise TypeError(f"'{arg}'[{i}] has dtype {o.dtype} but its param has {p.dtype}; they must match")
        if o.device != p.device:
            raise ValueError(f"'{arg}'[{i}] is on {o.device} but its param is on {p.device}")
    if not inplace:  # read only: a copy in the param's layout pairs element by element
        others = [
            o if _same_layout(o, p) else torch.empty_like(p).copy_(o) for o, p in zip(others, first.tensors)
        ]
    out = tensor_list(others, arg, inplace=inplace, direct=first.on_cpu)
    for i, (p, o) in enumerate(zip(first.tensors, out.tensors)):
        if not _same_layout(o, p):
            raise ValueError(
                f"'{arg}'[{i}] has strides {o.stride()} but its param has {p.stride()}; this op pairs "
                "them element by element in memory, so both need the same layout. Give it the param's "
                "layout first, e.g. p.grad = torch.empty_like(p).copy_(p.grad)"
            )
    return out


def _same_layout(a: Tensor, b: Tensor) -> bool:
    """Do a and b store their elements in the same memory order (sizes equal)?"""
    if a.is_contiguous() and b.is_contiguous():
        return True
    return all(x == y for x, y, n in zip(a.stride(), b.stride(), a.shape) if n > 1)


def present_grads(first: TensorList) -> TensorList | None:
    """The ``.grad`` of every tensor of ``first`` as kernel arguments, on the fast path.

    The common case of a training loop: every param on the CPU already has a dense,
    contiguous ``.grad`` of its dtype and size, in memory of its own (torch checks shape,
    dtype and device when a ``.grad`` is assigned). Each check is one pass over the list;
    ``None`` means "something is missing or odd": the caller then takes the slow path, which
    allocates missing grads and raises the precise error.
    """
    if not (first.on_cpu and first.contiguous):  # other layouts: the slow path checks strides
        return None
    if _SCAN:
        fast = _C.scan_grads(first.tensors, first.numels, first.dtypes)
        if fast is None:
            return None
        return TensorList(fast[0], fast[1], first.numels, first.dtypes, True)
    grads = list(map(_grad_of, first.tensors))
    if not set(map(type, grads)) <= _PLAIN_TYPES:  # a None (missing grad) or a subclass
        return None
    if (
        any(map(_is_sparse, grads))
        or not all(map(Tensor.is_contiguous, grads))
        or not all(map(_is_cpu, grads))
    ):
        return None
    try:
        dtypes = list(map(DTYPE_CODES.__getitem__, map(_dtype_of, grads)))
    except KeyError:
        return None
    numels = list(map(Tensor.numel, grads))
    if dtypes != first.dtypes or numels != first.numels:
        return None
    ptrs = list(map(Tensor.data_ptr, grads))
    if len(set(ptrs)) != len(ptrs):
        return None
    return TensorList(grads, ptrs, numels, dtypes, True)


def trainable(tl: TensorList) -> TensorList | None:
    """The tensors of ``tl`` that receive a gradient (``requires_grad``); ``None`` if none.

    Build ``tl`` with ``tensor_list(..., requires_grad="all")`` and the common case (every
    tensor trainable) costs nothing more here.
    """
    every = tl.all_requires_grad
    if every if every is not None else all(t.requires_grad for t in tl.tensors):
        return tl
    tensors = [t for t in tl.tensors if t.requires_grad]
    return tensor_list(tensors, direct=tl.on_cpu) if tensors else None


def checked_grads(tl: TensorList) -> TensorList:
    """Every ``.grad`` of ``tl`` as an in-place kernel argument, zeros allocated where missing.

    The fast path (:func:`present_grads`) first; otherwise each existing grad is checked
    (dense, contiguous, same shape, dtype and device as its param) and only then are the
    missing ones allocated, so a bad grad raises before any tensor is touched.
    """
    gl = present_grads(tl)
    if gl is not None:
        return gl
    for i, p in enumerate(tl.tensors):
        g = p.grad
        if g is not None:
            if g.is_sparse:
                raise TypeError(f"add_grad_: 'params'[{i}].grad is sparse; dense gradients are required")
            if not _dense(g):
                raise ValueError(
                    f"add_grad_: 'params'[{i}].grad has gaps or overlapping elements in memory; "
                    "replace it with p.grad = torch.empty_like(p).copy_(p.grad) first"
                )
    paired(tl, [(p.grad if p.grad is not None else p) for p in tl.tensors], "grads")
    for p in tl.tensors:
        if p.grad is None:
            p.grad = torch.zeros_like(p, memory_format=torch.preserve_format)
    return paired(tl, [p.grad for p in tl.tensors], "grads", inplace=True)
