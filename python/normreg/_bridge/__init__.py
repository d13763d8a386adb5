"""The one place where torch tensors become kernel arguments.

Every public op hands its tensors to :func:`tensor_list` (and :func:`paired` for a second
list that pairs with the first, such as grads). The bridge checks type, dtype, device,
contiguity and sizes, raising ``TypeError`` / ``ValueError`` that name the argument,
before anything is modified. CPU tensors become ``(pointers, numels, dtype codes)`` for
``_C``; the tensors themselves stay referenced by the caller for the duration of the call.
Tensors on other devices are routed to :mod:`normreg._reference` by the callers.

The package, by job: :mod:`.checks` (strengths, in-place writes, overlapping memory),
:mod:`.pointers` (dtype codes, the losses' pointer fast path), :mod:`.lists` (the checked
:class:`TensorList` and :func:`tensor_list`), :mod:`.grads` (paired lists, ``.grad``,
trainable params) and :mod:`.layout` (memory order and the groups of a dense tensor).
"""

from __future__ import annotations

from .checks import check_overlap, check_strength, check_writable
from .grads import _same_layout, checked_grads, paired, present_grads, trainable  # noqa: F401
from .layout import group_layout, memory_order
from .lists import _SCAN, TensorList, as_tensors, tensor_list  # noqa: F401
from .pointers import DTYPE_CODES, pair_ptrs, plain_pair, plain_ptrs  # noqa: F401

__all__ = [
    "DTYPE_CODES",
    "TensorList",
    "tensor_list",
    "paired",
    "present_grads",
    "trainable",
    "checked_grads",
    "check_strength",
    "check_writable",
    "check_overlap",
    "as_tensors",
    "group_layout",
    "memory_order",
]
