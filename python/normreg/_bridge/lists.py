"""The checked list of tensors: :class:`TensorList` and :func:`tensor_list`, which checks
type, dtype, device, layout and sizes (through the C scan where it can) and builds the kernel
arguments. Paired lists and ``.grad`` are in :mod:`.grads`, the dtype codes in :mod:`.pointers`."""

from __future__ import annotations

import inspect
import operator
from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch import Tensor

from .._loader import _C
from .checks import check_overlap
from .pointers import _PLAIN_TYPES, _SUPPORTED, DTYPE_CODES

_dtype_of = operator.attrgetter("dtype")
_is_cpu = operator.attrgetter("is_cpu")


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
