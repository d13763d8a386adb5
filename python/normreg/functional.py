"""Penalty values as functions: ``normreg.functional.l1(model.parameters(), 1e-4)``.

Each returns a 0-dim tensor that autograd differentiates through the fused kernels; it is
the same as ``normreg.<Penalty>(...).value(params)``.
"""

from __future__ import annotations

from torch import Tensor

from . import penalties as P

__all__ = ["l1", "squared_l2", "elastic_net", "l2_norm", "group_lasso", "linf", "l0"]


def l1(params, strength: float = 1.0) -> Tensor:
    """``strength * sum |w|`` over all tensors in ``params``."""
    return P.L1(strength).value(params)


def squared_l2(params, strength: float = 1.0) -> Tensor:
    """``(strength / 2) * sum w^2`` over all tensors in ``params``."""
    return P.SquaredL2(strength).value(params)


def elastic_net(params, l1: float = 1.0, l2: float = 1.0) -> Tensor:
    """``l1 * sum |w| + (l2 / 2) * sum w^2``."""
    return P.ElasticNet(l1, l2).value(params)


def l2_norm(params, strength: float = 1.0) -> Tensor:
    """``strength * sum_tensors ||w||_2``."""
    return P.L2Norm(strength).value(params)


def group_lasso(params, strength: float = 1.0, dim: int = 0) -> Tensor:
    """``strength * sum_groups ||w_g||_2``, groups = slices along ``dim``."""
    return P.GroupLasso(strength, dim).value(params)


def linf(params, strength: float = 1.0) -> Tensor:
    """``strength * sum_tensors max |w|``."""
    return P.Linf(strength).value(params)


def l0(params, strength: float = 1.0) -> Tensor:
    """``strength * #{w != 0}`` (not differentiable)."""
    return P.L0(strength).value(params)
