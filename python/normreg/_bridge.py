"""The one place where torch tensors become kernel arguments.

Every public op hands its tensors to :func:`tensor_list` (and :func:`paired` for a second
list that pairs with the first, such as grads). The bridge checks type, dtype, device,
contiguity and sizes, raising ``TypeError`` / ``ValueError`` that name the argument,
before anything is modified. CPU tensors become ``(pointers, numels, dtype codes)`` for
``_C``; the tensors themselves stay referenced by the caller for the duration of the call.
Tensors on other devices are routed to :mod:`normreg._reference` by the callers.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch import Tensor

from ._loader import _C

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

DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
_SUPPORTED = "float32, float64, bfloat16 or float16"

_dtype_of = operator.attrgetter("dtype")
_PLAIN_TYPES = {Tensor, torch.nn.Parameter}
_is_cpu = operator.attrgetter("is_cpu")
_grad_of = operator.attrgetter("grad")
_is_sparse = operator.attrgetter("is_sparse")


class TensorList(NamedTuple):
    """A checked list of tensors and the kernel arguments that describe it."""

    tensors: list[Tensor]
    ptrs: list[int]
    numels: list[int]
    dtypes: list[int]
    on_cpu: bool  # True: plain CPU tensors for a direct kernel call; False: route through the operators
    #: any / all of the tensors' requires_grad, when the fast scan read it on its way
    #: (``tensor_list(requires_grad="any" | "all")``); None when unknown
    any_requires_grad: bool | None = None
    all_requires_grad: bool | None = None
    #: every tensor contiguous (then a paired list needs only the same numels, not strides)
    contiguous: bool = False

    def __len__(self) -> int:  # noqa: D105
        return len(self.tensors)


def _init_scan() -> bool:
    """Hand torch's tensor accessors to the C scan (see csrc/bindings/bind_scan.cpp).

    The fast path takes exact ``Tensor`` and ``Parameter`` objects, and ``Parameter`` only
    if it reads its metadata through the very same accessors as ``Tensor`` (a subclass
    that overrides one of them always takes the slow path).
    """

    names = ("dtype", "is_cpu", "requires_grad", "grad", "layout", "data_ptr", "numel", "is_contiguous")
    types = [Tensor]
    param = torch.nn.Parameter
    if all(inspect.getattr_static(param, n) is inspect.getattr_static(Tensor, n) for n in names):
        types.append(param)
    try:
        _C.scan_init(
            types, (torch.float32, torch.float64, torch.bfloat16, torch.float16), torch.strided, Tensor
        )
    except (TypeError, ValueError, AttributeError):  # pragma: no cover - another torch's accessors
        return False
    return True


_SCAN = _init_scan()


def as_tensors(
    params: Tensor | Iterable[Tensor] | torch.nn.Module, arg: str = "params", *, check: bool = True
) -> list[Tensor]:
    """Materialize ``params`` (a tensor, a module, or an iterable of tensors) as a list.

    ``check=False`` leaves the element types to the caller (:func:`_check_types`).
    """
    if isinstance(params, Tensor):
        tensors = [params]
    elif isinstance(params, torch.nn.Module):
        tensors = list(params.parameters())
    elif isinstance(params, (str, bytes, dict)) or not isinstance(params, Iterable):
        raise TypeError(
            f"'{arg}' must be a tensor, an nn.Module or an iterable of tensors "
            f"(e.g. model.parameters()), got {type(params).__name__}"
        )
    else:
        tensors = list(params)
    if not tensors:
        raise ValueError(f"'{arg}' is empty: pass at least one tensor (an exhausted generator is empty too)")
    if check:
        _check_types(tensors, arg)
    return tensors


def _check_types(tensors: list, arg: str) -> None:
    if not set(map(type, tensors)) <= _PLAIN_TYPES:  # fast path: plain tensors and Parameters
        for i, t in enumerate(tensors):
            if not isinstance(t, Tensor):
                raise TypeError(f"'{arg}'[{i}] must be a torch.Tensor, got {type(t).__name__}")


def _check_dtypes(tensors: list[Tensor], arg: str) -> list[int]:
    try:
        return list(map(DTYPE_CODES.__getitem__, map(_dtype_of, tensors)))
    except KeyError:
        for i, t in enumerate(tensors):
            if t.dtype not in DTYPE_CODES:
                raise TypeError(
                    f"'{arg}'[{i}] has dtype {t.dtype}; normreg ops take {_SUPPORTED} tensors "
                    f"(convert with .float())"
                ) from None
        raise


def _check_device(tensors: list[Tensor], arg: str) -> bool:
    if all(map(_is_cpu, tensors)):
        return True
    dev = tensors[0].device
    for i, t in enumerate(tensors):
        if t.device != dev:
            raise ValueError(
                f"'{arg}'[{i}] is on {t.device} but '{arg}'[0] is on {dev}: "
                "all tensors of one call must be on the same device"
            )
    return False


_RG_MODES = {None: 0, "any": 1, "all": 2}


def tensor_list(
    params,
    arg: str = "params",
    *,
    inplace: bool = False,
    requires_grad: str | None = "any",
    direct: bool = True,
) -> TensorList:
    """Check ``params`` and build the kernel arguments.

    Any dense tensor (every element once, no gaps: contiguous, channels_last, transposed,
    permuted) is taken as it is: the kernels walk its memory as one span. With
    ``inplace=True`` the op writes into these tensors: a tensor with gaps or overlapping
    elements is refused (a copy would silently lose the update), and so are tensors whose
    memory ranges overlap each other. Read-only tensors with gaps are copied (read only).
    ``requires_grad`` ("any", "all" or None) is what the fast scan reads on its way through
    the list, into :attr:`TensorList.any_requires_grad` or ``all_requires_grad``.
    ``direct=False`` (see :func:`normreg._ops.direct_ok`): the caller goes through the
    registered operators, so only the checks that need no data pointer are made here (the
    operator's CPU implementation makes the rest) and ``on_cpu`` is False.
    """
    tensors = as_tensors(params, arg, check=False)
    if _SCAN and direct:
        fast = _C.scan(tensors, inplace, _RG_MODES[requires_grad])
        if fast is not None:  # every tensor plain, supported, on the CPU and contiguous
            if requires_grad == "all":
                return TensorList(tensors, fast[0], fast[1], fast[2], True, None, fast[3], True)
            return TensorList(tensors, fast[0], fast[1], fast[2], True, fast[3], None, True)
    if direct:
        _check_types(tensors, arg)
        dtypes = _check_dtypes(tensors, arg)
        on_cpu = _check_device(tensors, arg)
    else:  # plain loops that torch.compile traces (no map / attrgetter)
        dtypes, on_cpu = _check_traceable(tensors, arg), False
    for i, t in enumerate(tensors):
        if t.layout != torch.strided:
            raise TypeError(
                f"'{arg}'[{i}] has layout {t.layout}; normreg ops take dense (strided) tensors (use .to_dense())"
            )
    if not all(map(_dense, tensors)):
        if inplace:
            i = next(i for i, t in enumerate(tensors) if not _dense(t))
            raise ValueError(
                f"'{arg}'[{i}] (shape {tuple(tensors[i].shape)}, strides {tensors[i].stride()}) has gaps or "
                "overlapping elements in memory and this op writes in place; a copy would lose the "
                "update. Pass a dense tensor (any order of dims: contiguous, channels_last, transposed "
                "and permuted tensors are fine), e.g. the parameter itself rather than a strided slice"
            )
        tensors = [t if _dense(t) else t.contiguous() for t in tensors]
    if not (on_cpu and direct):  # the caller goes through the operators (normreg._ops)
        return TensorList(tensors, [], [], dtypes, False)
    ptrs = list(map(Tensor.data_ptr, tensors))
    numels = list(map(Tensor.numel, tensors))
    if inplace:
        check_overlap(tensors, ptrs, numels, arg)
    return TensorList(tensors, ptrs, numels, dtypes, True, contiguous=all(map(Tensor.is_contiguous, tensors)))


def _check_traceable(tensors: list, arg: str) -> list[int]:
    """Type, dtype and device checks as plain loops (torch.compile traces them)."""
    dtypes = []
    dev = None
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"'{arg}'[{i}] must be a torch.Tensor, got {type(t).__name__}")
        code = DTYPE_CODES.get(t.dtype)
        if code is None:
            raise TypeError(
                f"'{arg}'[{i}] has dtype {t.dtype}; normreg ops take {_SUPPORTED} tensors (convert with .float())"
            )
        dtypes.append(code)
        if dev is None:
            dev = t.device
        elif t.device != dev:
            raise ValueError(
                f"'{arg}'[{i}] is on {t.device} but '{arg}'[0] is on {dev}: all tensors of one call must be on the same device"
            )
    return dtypes


def _dense(t: Tensor) -> bool:
    """Every element once, no gaps: the tensor's memory is one span of numel elements."""
    if t.is_contiguous():
        return True
    expect = 1
    dims = sorted(((st, n) for n, st in zip(t.shape, t.stride()) if n > 1))
    for stride, size in dims:  # innermost first: each stride is the product of the sizes inside
        if stride != expect:
            return False
        expect *= size
    return True


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


def check_overlap(tensors: list[Tensor], ptrs: list[int], numels: list[int], arg: str) -> None:
    """Refuse tensors whose memory ranges overlap (an in-place op would update them twice)."""
    spans = sorted(
        (p, p + n * t.element_size(), i) for i, (t, p, n) in enumerate(zip(tensors, ptrs, numels)) if n
    )
    for (_, end_a, a), (start_b, _, b) in zip(spans, spans[1:]):
        if start_b < end_a:
            a, b = min(a, b), max(a, b)
            raise ValueError(
                f"'{arg}'[{b}] shares memory with '{arg}'[{a}]; an in-place op would update the "
                "shared elements twice. Pass each tensor once, and no overlapping views of one tensor"
            )


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


def check_writable(tensors, arg: str = "params") -> None:
    """Refuse in-place writes autograd cannot see through, as torch refuses them.

    With grad mode on, a tensor that requires grad may not be written in place by normreg
    (torch raises for an in-place op on such a leaf); wrap the call in ``torch.no_grad()``
    as optimizers do.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        for i, t in enumerate(tensors):
            if t.requires_grad:
                kind = "a leaf Variable" if t.is_leaf else "a tensor"
                raise RuntimeError(
                    f"'{arg}'[{i}] is {kind} that requires grad and is being used in an in-place "
                    "operation; call this under `with torch.no_grad():` (as optimizers do)"
                )


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


_requires_grad = operator.attrgetter("requires_grad")


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


def check_strength(value, arg: str) -> float:
    """A strength (penalty weight, step): a real number, finite and >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, Tensor) and value.numel() == 1 and not value.requires_grad:
            if value.dtype.is_complex or value.dtype == torch.bool:
                raise TypeError(
                    f"'{arg}' must be a real number, got a {value.dtype} tensor; "
                    "pass a float or a one-element floating or integer tensor"
                )
            value = value.item()
        else:
            raise TypeError(f"'{arg}' must be a real number, got {type(value).__name__}")
    value = float(value)
    if value != value or value < 0 or value == float("inf"):
        raise ValueError(f"'{arg}' must be finite and >= 0, got {value}")
    return value
