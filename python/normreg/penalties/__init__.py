"""Penalty objects: L1, SquaredL2, ElasticNet, L2Norm, GroupLasso, Linf, L0.

Every penalty takes any iterable of tensors (``model.parameters()``, a list, a module) and
offers

* ``value(params)``: a 0-dim tensor that autograd differentiates through the fused kernel;
* ``add_grad_(params)``: one pass that adds the gradient into each ``.grad`` (allocating
  zeros where it is ``None``) and returns the value as a float, with no autograd graph;
* ``grad(params)``: the gradient as new tensors;
* ``prox_(params, step)``: the proximal step in place (see :mod:`normreg.prox`);
* ``+`` to compose penalties (values and gradients add).

Conventions (see docs/conventions.md): ``SquaredL2(λ)`` is ``(λ/2) sum w^2`` so its
gradient equals ``torch.optim.SGD(weight_decay=λ)``; ``L1(λ)`` has subgradient 0 at 0;
NaN in a weight propagates to values and gradients.

The package: :mod:`._base` (the :class:`Penalty` base class, its autograd value and the
:class:`Sum` that ``+`` builds), :mod:`.elementwise` (L1, SquaredL2, ElasticNet, L0: sums
over elements) and :mod:`.norms` (L2Norm, GroupLasso, Linf: norms of whole tensors or groups).
"""

from __future__ import annotations

from ._base import Penalty, Sum
from .elementwise import L0, L1, ElasticNet, SquaredL2
from .norms import GroupLasso, L2Norm, Linf

__all__ = [
    "Penalty",
    "L1",
    "SquaredL2",
    "ElasticNet",
    "L2Norm",
    "GroupLasso",
    "Linf",
    "L0",
    "Sum",
]
