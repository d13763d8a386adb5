"""normreg's operators: every op defined once with ``torch.library``, namespace ``normreg::``.

Each operator's body is the one place that chooses between the kernels and the reference:
CPU tensors go through :mod:`normreg._bridge` to ``_C``; tensors on any other device (CUDA,
MPS, ...), and every tensor while :func:`force_reference` is on, run the pure-torch
implementation in :mod:`normreg._reference`. Every op has a fake implementation (shapes and
dtypes, so ``torch.compile(fullgraph=True)`` traces it and meta tensors work), value ops
register their autograd formula through the dispatcher (so ``torch.func.grad`` / ``vjp``
work), and in-place ops declare what they write (``mutates_args``), so the dispatcher bumps
those tensors' version counters and autograd refuses a graph that saw the old values.

The direct path
---------------
Going through the dispatcher costs tens of microseconds per call, more than a whole fused
pass over a small model. Plain eager calls on plain CPU tensors therefore call the same
kernels directly (the public layer does, see :func:`direct_ok`) and then bump the version
counter of every tensor written (:func:`bump`), exactly as the registered op does. Tests
run both paths and compare them bitwise (:func:`dispatcher_only`).

Switches
--------
``NORMREG_BACKEND=reference`` (environment, read at import) or :func:`force_reference`:
every op runs ``_reference``, CPU tensors included, through the dispatcher (the test suite
runs once this way, so the non-CPU implementation is exercised without a GPU).
``NORMREG_BACKEND=dispatcher`` or :func:`dispatcher_only`: no direct path.
"""

from __future__ import annotations

from ._core import (  # noqa: F401  (the op families; importing them registers the ops)
    as_float,
    bump,
    direct_ok,
    dispatcher_only,
    force_reference,
    functorch_active,
    reference_forced,
    value_dtype,
    value_tensor,
)
from .loss import (  # noqa: F401  (the op families; importing them registers the ops)
    check_loss_factor,
    k_pointwise_grad,
    k_pointwise_grad_scale,
    k_pointwise_plain,
    k_pointwise_value,
    k_tv_grad,
    k_tv_value,
    loss_compute_dtype,
    loss_dir_scale,
    loss_divide,
    loss_scale,
    pointwise_loss,
    pointwise_loss_backward,
    total_variation,
    total_variation_backward,
)
from .optim import (  # noqa: F401  (the op families; importing them registers the ops)
    adam_step,
    k_adam_step,
    k_sgd_step,
    sgd_step,
)
from .penalty import (  # noqa: F401  (the op families; importing them registers the ops)
    kernel_grad,
    kernel_value,
    penalty_add_grad_,
    penalty_grad,
    penalty_value,
    reference_value,
)
from .prox import (  # noqa: F401  (the op families; importing them registers the ops)
    project_box,
    project_l1_ball,
    project_l2_ball,
    prox_group,
    prox_hard,
    prox_l2_norm,
    prox_linf,
    prox_shrink,
)

__all__ = [
    "direct_ok",
    "bump",
    "force_reference",
    "dispatcher_only",
    "reference_forced",
    "value_dtype",
    "value_tensor",
    "as_float",
    "functorch_active",
    "reference_value",
    "kernel_value",
    "kernel_grad",
]
