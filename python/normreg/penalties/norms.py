"""The penalties that are norms of whole tensors or of groups: L2Norm (one group per
tensor), GroupLasso (slices along a dim) and Linf (the max per tensor). Their prox is a
non-separable term of :mod:`normreg.prox`; the base class is in :mod:`._base`, the sums
over elements in :mod:`.elementwise`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .. import _reference as ref
from .._bridge import TensorList, group_layout
from ._base import Penalty, _OneStrength


class L2Norm(_OneStrength):
    """``λ * sum_tensors ||w||_2`` (not squared); gradient ``λ * w/||w||``, 0 at ``w = 0``."""

    kind = "l2_norm"

    def _prox_terms(self) -> list[tuple]:
        return [("l2_norm", self.strength)]


class GroupLasso(_OneStrength):
    """``λ * sum_groups ||w_g||_2`` with groups the slices along ``dim``.

    By default (``dim="out"``) the groups are **output channels** (structured sparsity: whole
    filters / units go to zero under the prox): made concrete per layer by
    :func:`normreg.param_groups` and :meth:`for_module`, that is ``dim=0`` for ``Conv*d`` and
    ``Linear`` weights (laid out ``(out, in, ...)``) and ``dim=1`` for ``ConvTranspose*d``
    weights (laid out ``(in, out, ...)``). A bare tensor carries no layout: ``"out"`` reads it
    as ``(out, in, ...)``, i.e. ``dim=0``, so a transposed conv's weight given bare (e.g.
    ``ProxAdam(model.parameters(), penalty=GroupLasso(...))``) is grouped by its *input*
    channels; build the groups with :func:`normreg.param_groups` (or give ``dim=1``) to group
    its outputs. An int ``dim`` is used as it is on every tensor. A tensor with fewer dims than
    ``dim + 1`` is refused; keep biases out with :func:`normreg.param_groups`.
    """

    kind = "group_lasso"

    def __init__(self, strength: float = 1e-4, dim: int | str = "out") -> None:
        super().__init__(strength)
        if isinstance(dim, str):
            if dim != "out":
                raise ValueError(
                    f"'dim' must be an int or 'out' (output channels of each layer), got {dim!r}"
                )
        elif isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"'dim' must be an int or 'out', got {type(dim).__name__}")
        self._dim = dim

    @property
    def dim(self) -> int:
        """The dim the groups are slices along on a bare tensor (``"out"``: 0, the output
        channels of ``(out, in, ...)`` weights; :meth:`for_module` knows the layer)."""
        return 0 if self._dim == "out" else self._dim

    def for_module(self, module: torch.nn.Module, name: str = "weight") -> Penalty:
        if self._dim != "out":
            return self
        transposed = isinstance(module, torch.nn.modules.conv._ConvTransposeNd)
        return GroupLasso(self.strength, dim=1 if transposed and name == "weight" else 0)

    def _prox_terms(self) -> list[tuple]:
        return [("group", self.strength, self.dim)]

    def shapes(self, tensors: Sequence[Tensor]) -> tuple[list[int], list[int], list[int]]:
        """(outer, groups, inner) per tensor in memory order (see normreg._bridge.group_layout);
        raises if ``dim`` is out of range for a tensor."""
        for i, t in enumerate(tensors):
            nd = t.dim()
            if not -max(nd, 1) <= self.dim < max(nd, 1):
                raise ValueError(
                    f"GroupLasso: 'dim'={self.dim} is out of range for 'params'[{i}] with shape "
                    f"{tuple(t.shape)}; pick a dim every tensor has, or exclude such tensors "
                    "(e.g. biases) with normreg.param_groups"
                )
        return group_layout(tensors, self.dim)

    def _spec(self) -> tuple[str, float, float, int]:
        return ("group_lasso", self.strength, 0.0, self.dim)

    def _check_params(self, tl: TensorList) -> None:
        self.shapes(tl.tensors)

    def _reference_grad(self, params: list[Tensor]) -> list[Tensor]:
        return ref.group_grad(params, self.dim, self.strength)

    def __repr__(self) -> str:
        return f"GroupLasso(strength={self.strength:g}, dim={self._dim!r})"


class Linf(_OneStrength):
    """``λ * sum_tensors max |w|``; gradient ``λ * sign(w)`` at the first arg max."""

    kind = "linf"

    def _prox_terms(self) -> list[tuple]:
        return [("linf", self.strength)]
