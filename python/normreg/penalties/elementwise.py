"""The penalties that are sums over elements: L1, SquaredL2, ElasticNet (the affine ones,
whose gradients compose in one fused pass) and L0 (a count: value and prox only). The base
class is in :mod:`._base`, the norms in :mod:`.norms`."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _ops
from .._bridge import check_strength, tensor_list
from .._dtensors import distributed_impl, dtensor_args
from ._base import Params, Penalty, _list_value_dtype, _OneStrength


class L1(_OneStrength):
    """``λ * sum |w|``; gradient ``λ * sign(w)`` (0 at 0); prox: soft threshold at ``step*λ``."""

    kind = "l1"
    affine = True

    @classmethod
    def from_sklearn(cls, alpha: float) -> L1:
        """scikit-learn's ``Lasso(alpha)`` objective ``1/(2n)||y - Xw||^2 + alpha ||w||_1``:
        the penalty is ``L1(alpha)`` when the data loss is ``0.5 * mean squared error``."""
        return cls(alpha)


class SquaredL2(_OneStrength):
    """``(λ/2) * sum w^2``; gradient ``λ * w`` (= ``SGD(weight_decay=λ)``); prox ``w/(1+step*λ)``."""

    kind = "squared_l2"
    affine = True

    def _s1(self) -> float:
        return 0.0  # the strength is the coefficient of w²/2

    def _s2(self) -> float:
        return self.strength

    @classmethod
    def from_weight_decay(cls, weight_decay: float) -> SquaredL2:
        """The penalty whose gradient is torch.optim's coupled ``weight_decay`` term."""
        return cls(weight_decay)


class ElasticNet(Penalty):
    """``l1 * sum |w| + (l2/2) * sum w^2``; prox ``soft(w, step*l1) / (1 + step*l2)``."""

    kind = "elastic_net"
    affine = True

    def __init__(self, l1: float = 1e-4, l2: float = 1e-4) -> None:
        self.l1 = check_strength(l1, "l1")
        self.l2 = check_strength(l2, "l2")

    def _s1(self) -> float:
        return self.l1

    def _s2(self) -> float:
        return self.l2

    def _scale_(self, f: float) -> None:
        self.l1 *= f
        self.l2 *= f

    @classmethod
    def from_sklearn(cls, alpha: float, l1_ratio: float = 0.5) -> ElasticNet:
        """scikit-learn's ``ElasticNet(alpha, l1_ratio)``: its objective
        ``1/(2n)||y-Xw||^2 + alpha*l1_ratio*||w||_1 + 0.5*alpha*(1-l1_ratio)*||w||^2`` is ours
        with ``l1 = alpha*l1_ratio``, ``l2 = alpha*(1-l1_ratio)`` and a data loss of
        ``0.5 * mean squared error``."""
        alpha = check_strength(alpha, "alpha")
        l1_ratio = check_strength(l1_ratio, "l1_ratio")
        if l1_ratio > 1:
            raise ValueError(f"'l1_ratio' must be in [0, 1], got {l1_ratio}")
        return cls(alpha * l1_ratio, alpha * (1.0 - l1_ratio))

    @classmethod
    def from_glmnet(cls, lambda_: float, alpha: float = 1.0) -> ElasticNet:
        """glmnet's ``lambda * ((1-alpha)/2 ||b||^2 + alpha ||b||_1)``: ``l1 = lambda*alpha``,
        ``l2 = lambda*(1-alpha)`` (data loss ``1/(2n) RSS``)."""
        lambda_ = check_strength(lambda_, "lambda_")
        alpha = check_strength(alpha, "alpha")
        if alpha > 1:
            raise ValueError(f"'alpha' must be in [0, 1], got {alpha}")
        return cls(lambda_ * alpha, lambda_ * (1.0 - alpha))

    @classmethod
    def from_sources(cls, lam: float, alpha: float, beta: float, m: int) -> ElasticNet:
        """The source documents' ``lam/(2m) * (alpha sum|w| + beta sum w^2)``:
        ``l1 = lam*alpha/(2m)``, ``l2 = lam*beta/m``."""
        lam = check_strength(lam, "lam")
        alpha = check_strength(alpha, "alpha")
        beta = check_strength(beta, "beta")
        if isinstance(m, bool) or not isinstance(m, int) or m <= 0:
            raise ValueError(f"'m' must be a positive integer (the number of samples), got {m!r}")
        return cls(lam * alpha / (2 * m), lam * beta / m)

    def __repr__(self) -> str:
        return f"ElasticNet(l1={self.l1:g}, l2={self.l2:g})"


class L0(_OneStrength):
    """``λ * #{w != 0}``: value and proximal step only (hard threshold at ``sqrt(2*step*λ)``).

    It has no useful gradient: ``value`` is not differentiable and ``add_grad_`` raises.
    Note ``torch.nn.functional.hardshrink(x, t)`` thresholds at ``t`` itself; the exact L0
    prox of ``step * λ`` thresholds at ``sqrt(2 * step * λ)``.
    """

    kind = "l0"
    has_grad = False

    def _prox_terms(self) -> list[tuple]:
        return [("l0", self.strength)]

    def value(self, params: Params, *, process_group=None) -> Tensor:
        params, dt = dtensor_args(params)
        if dt:  # DTensor params (FSDP2, distribute_tensor): normreg.distributed
            return distributed_impl().dtensor_value(self, params, process_group)
        if process_group is not None:  # sharded params: normreg.distributed
            return distributed_impl().sharded_value(self, params, process_group)
        tl = tensor_list(params, direct=_ops.direct_ok())
        if not tl.on_cpu:
            with torch.no_grad():  # a count: not differentiable
                return self._op_value(tl.tensors)
        return _ops.value_tensor(self._value(tl), _list_value_dtype(tl), tl.tensors[0].device)

    def _grad(self, tl, grads, scale, accumulate):
        raise ValueError("L0 has no gradient; use its proximal step (L0.prox_ or normreg.optim) instead")

    def grad(self, params: Params) -> list[Tensor]:
        raise ValueError("L0 has no gradient; use its proximal step (L0.prox_ or normreg.optim) instead")

    def add_grad_(self, params: Params, *, process_group=None) -> float:
        raise ValueError("L0 has no gradient; use its proximal step (L0.prox_ or normreg.optim) instead")
