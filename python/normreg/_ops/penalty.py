"""``normreg::penalty_value`` / ``penalty_grad`` / ``penalty_add_grad_``: penalty values and
gradients, with their autograd formula and fake implementations."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .. import _reference as ref
from .._bridge import group_layout, paired, tensor_list
from .._loader import _C
from ._core import _kernels, _no_overlap, value_dtype, value_tensor

# ---- penalty values and gradients -----------------------------------------------------------
#
# kind: "l1", "squared_l2", "elastic_net", "l2_norm", "linf", "l0" (s1, s2 the strengths) or
# "group_lasso" (s1 the strength, groups the slices along `dim`); `dim` is ignored otherwise.


def kernel_value(tl, kind: str, s1: float, s2: float, dim: int) -> float:
    """One value pass of the kernels over a checked CPU TensorList."""
    if kind == "group_lasso":
        return _C.group_value(tl.ptrs, tl.numels, tl.dtypes, *group_layout(tl.tensors, dim), [s1])
    return _C.penalty_value(kind, tl.ptrs, tl.numels, tl.dtypes, [s1], [s2])


def kernel_grad(tl, gl, kind: str, s1: float, s2: float, dim: int, scale: float, accumulate: bool) -> float:
    """One gradient pass of the kernels: ``grads (+)= scale * dR/dw``; returns the value."""
    if kind == "l0":
        raise ValueError("L0 has no gradient; use its proximal step (L0.prox_ or normreg.optim) instead")
    if kind == "group_lasso":
        return _C.group_grad(
            tl.ptrs, tl.numels, tl.dtypes, gl.ptrs, *group_layout(tl.tensors, dim), [s1], scale, accumulate
        )
    return _C.penalty_grad(kind, tl.ptrs, tl.numels, tl.dtypes, gl.ptrs, [s1], [s2], scale, accumulate)


def _ref_value(params, kind, s1, s2, dim) -> Tensor:
    if kind == "group_lasso":
        return ref.group_value(params, dim, s1)
    return ref.penalty_value(kind, params, s1, s2)


def _ref_grad(params, kind, s1, s2, dim, dtype=None) -> list[Tensor]:
    if kind == "l0":
        raise ValueError("L0 has no gradient; use its proximal step (L0.prox_ or normreg.optim) instead")
    if kind == "group_lasso":
        return ref.group_grad(params, dim, s1, dtype=dtype)
    return ref.penalty_grad(kind, params, s1, s2, dtype=dtype)


@torch.library.custom_op("normreg::penalty_value", mutates_args=())
def penalty_value(params: list[Tensor], kind: str, s1: float, s2: float, dim: int) -> Tensor:
    """R(params) as a 0-dim tensor (float64 if any param is float64, else float32)."""
    dt = value_dtype(params)
    if _kernels(params):
        tl = tensor_list(params)
        return value_tensor(kernel_value(tl, kind, s1, s2, dim), dt)
    return _ref_value(params, kind, s1, s2, dim).to(dt)


@penalty_value.register_fake
def _(params, kind, s1, s2, dim):
    return params[0].new_empty((), dtype=value_dtype(params))


def _value_setup(ctx, inputs, output) -> None:
    params, kind, s1, s2, dim = inputs
    ctx.spec = (kind, s1, s2, dim)
    ctx.save_for_backward(*params)


def _value_backward(ctx, grad_out: Tensor):
    params = list(ctx.saved_tensors)
    kind, s1, s2, dim = ctx.spec
    if kind == "l0":  # a count: constant almost everywhere, no useful gradient
        return None, None, None, None, None
    if torch.is_grad_enabled():  # create_graph / torch.func: stay differentiable
        grads = [g * grad_out.to(g.dtype) for g in _ref_grad(params, kind, s1, s2, dim)]
    else:
        grads = torch.ops.normreg.penalty_grad(params, kind, s1, s2, dim, grad_out)
    return grads, None, None, None, None


penalty_value.register_autograd(_value_backward, setup_context=_value_setup)


@torch.library.custom_op("normreg::penalty_grad", mutates_args=())
def penalty_grad(
    params: list[Tensor], kind: str, s1: float, s2: float, dim: int, scale: Tensor
) -> list[Tensor]:
    """``scale * dR/dw`` for every param, as new tensors (the params' layouts)."""
    outs = [torch.empty_like(p) for p in params]
    if _kernels(params):
        tl = tensor_list(params)
        kernel_grad(tl, paired(tl, outs, "grads"), kind, s1, s2, dim, float(scale), False)
        return outs
    acc = _acc_dtype(params)
    for o, g in zip(outs, _ref_grad(params, kind, s1, s2, dim, dtype=acc)):
        o.copy_(g * scale.detach().to(acc))  # scaled in the accumulation precision, rounded once
    return outs


@penalty_grad.register_fake
def _(params, kind, s1, s2, dim, scale):
    return [torch.empty_like(p) for p in params]


@torch.library.custom_op("normreg::penalty_add_grad_", mutates_args=("grads",))
def penalty_add_grad_(
    params: list[Tensor], grads: list[Tensor], kind: str, s1: float, s2: float, dim: int
) -> Tensor:
    """``grads += dR/dw`` in one pass; returns R(params) as a 0-dim float64 tensor (the
    accumulator, as ``add_grad_`` returns it as a Python float)."""
    dt = _acc_dtype(params)
    if _kernels(params):
        tl = tensor_list(params)
        gl = paired(tl, grads, "grads", inplace=True)
        return value_tensor(kernel_grad(tl, gl, kind, s1, s2, dim, 1.0, True), dt)
    _no_overlap(grads, "grads")
    acc = _acc_dtype(params)
    for g, d in zip(grads, _ref_grad(params, kind, s1, s2, dim, dtype=acc)):
        g.copy_(g.to(acc) + d)  # added in the accumulation precision, rounded once as the kernels do
    return _ref_value(params, kind, s1, s2, dim).to(dt)


@penalty_add_grad_.register_fake
def _(params, grads, kind, s1, s2, dim):
    return params[0].new_empty((), dtype=_acc_dtype(params))


def _acc_dtype(params) -> torch.dtype:
    return torch.float32 if params[0].device.type == "mps" else torch.float64


def reference_value(tensors: Sequence[Tensor], specs) -> Tensor:
    """The sum of the penalties ``specs`` on the differentiable reference, in the value dtype."""
    dt = value_dtype(tensors)
    out = None
    for kind, s1, s2, dim in specs:
        v = _ref_value(list(tensors), kind, s1, s2, dim).to(dt)
        out = v if out is None else out + v
    return out
