"""Pure-torch implementation of every normreg op, with the kernels' semantics.

Two jobs: the fallback for tensors the kernels do not take (CUDA and other devices), and
the oracle of the tests. It is written for clarity, not speed: float64 arithmetic, plain
torch expressions, autograd-differentiable (so double backward works through it).

One module per family, as the kernels (csrc/kernels): ``penalty`` (values and gradients),
``loss`` (image losses), ``prox`` (proximal operators and projections), ``optim`` (SGD and
Adam steps); ``_common`` holds the shared edge-value arithmetic.
"""

from .loss import (
    pointwise_loss,
    total_variation,
    total_variation_grad,
)
from .optim import (
    adam_scalars,
    adam_step_,
    sgd_step_,
    zero_counts,
)
from .penalty import (
    group_grad,
    group_norms,
    group_shape,
    group_value,
    penalty_grad,
    penalty_value,
)
from .prox import (
    l1_ball_threshold,
    project_box_,
    project_l1_ball_,
    project_l2_ball_,
    prox_group_,
    prox_hard_,
    prox_l2_norm_,
    prox_linf_,
    prox_shrink_,
    soft,
)

__all__ = [
    "group_shape",
    "penalty_value",
    "penalty_grad",
    "group_norms",
    "group_value",
    "group_grad",
    "pointwise_loss",
    "total_variation",
    "total_variation_grad",
    "soft",
    "prox_shrink_",
    "prox_hard_",
    "project_box_",
    "prox_l2_norm_",
    "prox_group_",
    "project_l2_ball_",
    "l1_ball_threshold",
    "project_l1_ball_",
    "prox_linf_",
    "sgd_step_",
    "adam_step_",
    "adam_scalars",
    "zero_counts",
]
