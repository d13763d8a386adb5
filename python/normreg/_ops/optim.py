"""The optimizer update passes (ProxSGD, ProxAdam, ProxAdamW) as in-place operators."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _reference as ref
from .._bridge import check_overlap, paired, tensor_list
from .._loader import _C
from ._core import _counts, _kernels, bump
from .prox import _fake_counts

# ---- optimizer update passes (normreg.optim: ProxSGD, ProxAdam, ProxAdamW) -------------------
#
# One fused pass per param group: the torch.optim update (momentum / moments written in place)
# then the elementwise prox (prox_kind 1: elastic-net shrink at prox_a, ridge prox_b; 2: exact
# L0 at prox_a; 3: no prox, the affine penalty's gradient prox_a sign(w) + prox_b w added to
# the gradient first; 0: none). Each returns the zeros per param after the step. The state
# tensors (momentum buffers, moments) pair element by element with their params (same shape,
# dtype, device, memory order). The optimizers call `k_sgd_step` / `k_adam_step` on the direct
# path (then bump what they wrote) and the operators otherwise.


def _state_list(tl, tensors: list[Tensor], arg: str):
    """A state list checked against its params (shape, dtype, device, layout), written in place."""
    return paired(tl, tensors, arg, inplace=True)


def _no_state_overlap(*lists) -> None:
    """Params and state written by one step must not share memory with each other."""
    ts = [t for lst in lists for t in lst]
    check_overlap(ts, [t.data_ptr() for t in ts], [t.numel() for t in ts], "params and optimizer state")


def k_sgd_step(
    tl,
    gl,
    bufs: list[Tensor],
    init: list[bool],
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    kind: int,
    a: float,
    b: float,
) -> list[int]:
    """One fused SGD pass of the kernels over checked CPU lists (bufs: [] without momentum)."""
    return _C.sgd_step(
        tl.ptrs, tl.numels, tl.dtypes, gl.ptrs, list(map(Tensor.data_ptr, bufs)), init,
        lr, momentum, dampening, weight_decay, nesterov, maximize, kind, a, b,
    )  # fmt: skip


@torch.library.custom_op("normreg::sgd_step_", mutates_args=("params", "momentum_buffers"))
def _sgd_step_op(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor],
    init: list[bool],
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    prox_kind: int,
    prox_a: float,
    prox_b: float,
) -> Tensor:
    """torch.optim.SGD's step then the fused prox. ``momentum_buffers``: one per param with
    momentum (``init[i]``: the buffer is new and takes the gradient), ``[]`` without."""
    if momentum and len(momentum_buffers) != len(params):
        raise ValueError(
            f"'momentum_buffers' must have one tensor per param with momentum, got {len(momentum_buffers)}"
        )
    kern = _kernels(params)
    tl = tensor_list(params, inplace=True, direct=kern)  # the reference: the checks without pointers
    gl = paired(tl, grads, "grads", inplace=False)
    bufs = _state_list(tl, momentum_buffers, "momentum_buffers").tensors if momentum else []
    _no_state_overlap(params, bufs)
    if kern:
        z = k_sgd_step(tl, gl, bufs, list(init) if momentum else [], lr, momentum, dampening, weight_decay,
                       nesterov, maximize, prox_kind, prox_a, prox_b)  # fmt: skip
        return _counts(z, params)
    return ref.sgd_step_(
        params, gl.tensors, list(bufs), lr=lr, momentum=momentum, dampening=dampening,
        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize, prox_kind=prox_kind,
        prox_a=prox_a, prox_b=prox_b, init=list(init) if momentum else None,
    ).to(params[0].device)  # fmt: skip


def k_adam_step(
    tl,
    gl,
    ms: list[Tensor],
    vs: list[Tensor],
    vmax: list[Tensor],
    steps: list[float],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
    maximize: bool,
    amsgrad: bool,
    kind: int,
    a: float,
    b: float,
    pre: bool,
) -> list[int]:
    """One fused Adam / AdamW pass of the kernels (``steps``: the counts after this step)."""
    step_size, bc2s = ref.adam_scalars(steps, lr, beta1, beta2)
    return _C.adam_step(
        tl.ptrs, tl.numels, tl.dtypes, gl.ptrs, list(map(Tensor.data_ptr, ms)), list(map(Tensor.data_ptr, vs)),
        list(map(Tensor.data_ptr, vmax)), step_size, bc2s, lr, beta1, beta2, eps, weight_decay, decoupled,
        maximize, amsgrad, kind, a, b, pre,
    )  # fmt: skip


@torch.library.custom_op(
    "normreg::adam_step_", mutates_args=("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs")
)
def _adam_step_op(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    steps: Tensor,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
    maximize: bool,
    amsgrad: bool,
    prox_kind: int,
    prox_a: float,
    prox_b: float,
    preconditioned: bool,
) -> Tensor:
    """torch.optim.Adam / AdamW's step then the fused (optionally preconditioned) prox.
    ``steps``: each param's step count after this step (1-D, any float dtype; a tensor so
    that torch.compile does not specialize on it); ``max_exp_avg_sqs``: ``[]`` without amsgrad."""
    if steps.numel() != len(params) or (amsgrad and len(max_exp_avg_sqs) != len(params)):
        raise ValueError(
            "normreg::adam_step_: 'steps' (and with amsgrad 'max_exp_avg_sqs') need one entry per param"
        )
    counts = [float(s) for s in steps.tolist()]
    vmax = list(max_exp_avg_sqs) if amsgrad else []
    kern = _kernels(params)
    tl = tensor_list(params, inplace=True, direct=kern)  # the reference: the checks without pointers
    gl = paired(tl, grads, "grads", inplace=False)
    ms = _state_list(tl, exp_avgs, "exp_avgs").tensors
    vs = _state_list(tl, exp_avg_sqs, "exp_avg_sqs").tensors
    vm = _state_list(tl, vmax, "max_exp_avg_sqs").tensors if amsgrad else []
    _no_state_overlap(params, ms, vs, vm)
    if kern:
        z = k_adam_step(tl, gl, ms, vs, vm, counts, lr, beta1, beta2, eps, weight_decay, decoupled, maximize,
                        amsgrad, prox_kind, prox_a, prox_b, preconditioned)  # fmt: skip
        return _counts(z, params)
    return ref.adam_step_(
        params, gl.tensors, ms, vs, vm, counts, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
        weight_decay=weight_decay, decoupled=decoupled, maximize=maximize, amsgrad=amsgrad,
        prox_kind=prox_kind, prox_a=prox_a, prox_b=prox_b, preconditioned=preconditioned,
    ).to(params[0].device)  # fmt: skip


_sgd_step_op.register_fake(_fake_counts)
_adam_step_op.register_fake(_fake_counts)


def sgd_step(
    tl,
    gl,
    bufs: list[Tensor],
    init: list[bool],
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    kind: int,
    a: float,
    b: float,
):
    """Zeros per param after one SGD pass: the direct path (kernels, then every tensor written
    bumped; a list of ints) or the operator (an int64 tensor)."""
    if tl.on_cpu:
        z = k_sgd_step(
            tl, gl, bufs, init, lr, momentum, dampening, weight_decay, nesterov, maximize, kind, a, b
        )
        bump(list(tl.tensors) + bufs)
        return z
    return _sgd_step_op(tl.tensors, gl.tensors, bufs, init, lr, momentum, dampening, weight_decay, nesterov,
                        maximize, kind, a, b)  # fmt: skip


def adam_step(
    tl,
    gl,
    ms: list[Tensor],
    vs: list[Tensor],
    vmax: list[Tensor],
    steps,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
    maximize: bool,
    amsgrad: bool,
    kind: int,
    a: float,
    b: float,
    pre: bool,
):
    """Zeros per param after one Adam pass (``steps``: floats on the direct path, else a 1-D
    tensor); direct path or operator as :func:`sgd_step`."""
    if tl.on_cpu:
        z = k_adam_step(tl, gl, ms, vs, vmax, steps, lr, beta1, beta2, eps, weight_decay, decoupled, maximize,
                        amsgrad, kind, a, b, pre)  # fmt: skip
        bump(list(tl.tensors) + ms + vs + vmax)
        return z
    if not isinstance(steps, Tensor):
        steps = torch.tensor(steps, dtype=torch.float64)
    return _adam_step_op(tl.tensors, gl.tensors, ms, vs, vmax, steps, lr, beta1, beta2, eps, weight_decay,
                         decoupled, maximize, amsgrad, kind, a, b, pre)  # fmt: skip
