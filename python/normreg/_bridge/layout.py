"""Where a dense tensor's dims lie in memory (:func:`memory_order`) and the (outer, groups,
inner) walk of its slices along a dim that the group kernels take (:func:`group_layout`)."""

from __future__ import annotations

from torch import Tensor


def memory_order(t: Tensor) -> list[int]:
    """The dims of a dense tensor from outermost to innermost in memory (stable for ties)."""
    st = t.stride()
    return (
        sorted(range(t.dim()), key=lambda d: (-st[d] if t.shape[d] > 1 else 0, d))
        if not t.is_contiguous()
        else list(range(t.dim()))
    )


def group_layout(tensors, dim: int) -> tuple[list[int], list[int], list[int]]:
    """(outer, groups, inner) per tensor for groups = slices along ``dim``, in memory order.

    A dense tensor is contiguous in some order of its dims (channels_last, transposed,
    permuted): ``outer`` is the product of the sizes of the dims stored outside ``dim``,
    ``inner`` of those stored inside it, so the kernels' (outer, groups, inner) walk finds
    the right groups for any such layout. ``dim`` must be valid for every tensor.
    """
    outer, groups, inner = [], [], []
    for t in tensors:
        shape = t.shape
        nd = len(shape)
        if nd == 0:
            outer.append(1), groups.append(1), inner.append(1)
            continue
        d = dim + nd if dim < 0 else dim
        order = memory_order(t)
        k = order.index(d)
        o = n = 1
        for e in order[:k]:
            o *= shape[e]
        for e in order[k + 1 :]:
            n *= shape[e]
        outer.append(o)
        groups.append(shape[d])
        inner.append(n)
    return outer, groups, inner
