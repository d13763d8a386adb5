"""The base of the penalty objects: :class:`Penalty` (value, gradient and prox through the
kernels, the operators or the distributed layer), the autograd function of its value, and
:class:`Sum`, which ``Penalty.__add__`` builds. The concrete penalties are in
:mod:`.elementwise` and :mod:`.norms`."""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from .. import _ops, prox
from .. import _reference as ref
from .._bridge import (
    DTYPE_CODES,
    TensorList,
    check_strength,
    check_writable,
    checked_grads,
    paired,
    tensor_list,
    trainable,
)
from .._dtensors import distributed_impl, dtensor_args

_requires_grad = operator.attrgetter("requires_grad")

Params = Tensor | Iterable[Tensor] | torch.nn.Module


def _list_value_dtype(tl: TensorList) -> torch.dtype:
    return torch.float64 if DTYPE_CODES[torch.float64] in tl.dtypes else torch.float32


class _PenaltyValue(torch.autograd.Function):
    """Value of a penalty through the fused kernel; backward through the gradient kernel.

    Double backward (``create_graph=True``) goes through the differentiable reference.
    """

    @staticmethod
    def forward(penalty: Penalty, tl: TensorList, *params: Tensor) -> Tensor:  # type: ignore[override]
        return _ops.value_tensor(penalty._value(tl), _list_value_dtype(tl), params[0].device)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        penalty, _tl, *params = inputs
        ctx.penalty = penalty
        ctx.save_for_backward(*params)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        params = ctx.saved_tensors
        penalty: Penalty = ctx.penalty
        needs = ctx.needs_input_grad[2:]
        if torch.is_grad_enabled():  # create_graph=True: stay differentiable
            grads = penalty._reference_grad(list(params))
            return (None, None, *[g * grad_out.to(g.dtype) if n else None for g, n in zip(grads, needs)])
        tl = tensor_list(list(params))
        outs = [torch.empty(p.shape, dtype=p.dtype, device=p.device) for p in tl.tensors]
        penalty._grad(tl, paired(tl, outs, "grads"), float(grad_out), accumulate=False)
        return (None, None, *[o if n else None for o, n in zip(outs, needs)])


class Penalty:
    """Base class of the penalty objects. Subclasses set ``kind`` and the strengths.

    A penalty's strength λ is its ``strength`` (``ElasticNet``: ``l1`` and ``l2``), the name
    the prox functions (:mod:`normreg.prox`) and :mod:`normreg.functional` use too."""

    kind: str = ""
    #: True for penalties whose gradient is a * sign(w) + b * w (one fused pass composes them).
    affine: bool = False
    #: False for penalties without a gradient (L0, sums holding it): only their prox applies.
    has_grad: bool = True

    # -- strengths -------------------------------------------------------------------
    def _s1(self) -> float:
        return 0.0

    def _s2(self) -> float:
        return 0.0

    def _prox_terms(self) -> list[tuple]:
        """The penalty's proximal operator as the terms :mod:`normreg.prox` composes.

        ``("affine", s1, s2)`` (``s1 |w| + s2 w²/2``: soft threshold, then shrink),
        ``("l0", λ)``, ``("l2_norm", λ)``, ``("group", λ, dim)``, ``("linf", λ)``; a penalty
        without a known prox raises ``TypeError``. ``prox_`` and the optimizers ask this,
        never the class."""
        if self.affine:
            return [("affine", self._s1(), self._s2())]
        raise TypeError(f"prox_: no proximal operator is known for {self!r}")

    def scaled(self, factor: float) -> Penalty:
        """A copy with every strength multiplied by ``factor`` (used by λ schedules)."""
        factor = check_strength(factor, "factor")
        out = copy.copy(self)
        out._scale_(factor)
        return out

    def _scale_(self, factor: float) -> None:
        raise NotImplementedError

    def for_module(self, module: torch.nn.Module, name: str = "weight") -> Penalty:
        """This penalty for parameter ``name`` of ``module`` (:func:`normreg.param_groups` asks).

        Most penalties do not depend on the layer and return ``self``; a layout recipe such
        as ``GroupLasso(strength, dim="out")`` returns the concrete penalty for that layer's weight.
        """
        return self

    # -- what the operators are told ---------------------------------------------------
    def _spec(self) -> tuple[str, float, float, int]:
        """(kind, s1, s2, dim) of the ``normreg::penalty_*`` operators."""
        return (self.kind, self._s1(), self._s2(), 0)

    def _specs(self) -> list[tuple[str, float, float, int]]:
        """One spec per fused pass (a Sum has several)."""
        return [self._spec()]

    # -- the direct path: checked CPU lists straight to the kernels (see normreg._ops) ----
    def _value(self, tl: TensorList) -> float:
        if tl.on_cpu:
            return sum(_ops.kernel_value(tl, *sp) for sp in self._specs())
        return float(self._op_value(tl.tensors))

    def _grad(self, tl: TensorList, grads: TensorList, scale: float, accumulate: bool) -> float:
        if tl.on_cpu:
            total = 0.0
            for i, sp in enumerate(self._specs()):
                total += _ops.kernel_grad(tl, grads, *sp, scale, accumulate or i > 0)
            _ops.bump(grads.tensors)
            return total
        gs = self._op_grad(tl.tensors)
        with torch.no_grad():
            for out, g in zip(grads.tensors, gs):
                if accumulate:
                    out.add_(g, alpha=scale)
                else:
                    out.copy_(g).mul_(scale)
        return float(self._op_value(tl.tensors))

    # -- the operators (compile, torch.func, meta, other devices, forced reference) --------
    def _op_value(self, tensors: list[Tensor]) -> Tensor:
        out = None
        for sp in self._specs():
            v = torch.ops.normreg.penalty_value(tensors, *sp)
            out = v if out is None else out + v
        return out

    def _op_grad(self, tensors: list[Tensor]) -> list[Tensor]:
        one = torch.ones((), dtype=torch.float64, device=tensors[0].device)
        first, *rest = self._specs()
        out = torch.ops.normreg.penalty_grad(tensors, *first, one)
        for sp in rest:  # accumulated into the same tensors, rounded as the direct path rounds
            torch.ops.normreg.penalty_add_grad_(tensors, out, *sp)
        return out

    def _op_add_grad_(self, tensors: list[Tensor], grads: list[Tensor]) -> Tensor:
        out = None
        for sp in self._specs():
            v = torch.ops.normreg.penalty_add_grad_(tensors, grads, *sp)
            out = v if out is None else out + v
        return out

    def _reference_grad(self, params: list[Tensor]) -> list[Tensor]:
        return ref.penalty_grad(self.kind, params, self._s1(), self._s2())

    def _check_params(self, tl: TensorList) -> None:
        """Per-penalty checks of the tensors (shapes); raise before anything is modified."""

    # -- public API --------------------------------------------------------------------
    def value(self, params: Params, *, process_group=None) -> Tensor:
        """The penalty ``R(params)`` as a 0-dim tensor that autograd can differentiate.

        Parameters
        ----------
        params : tensor, nn.Module or iterable of tensors
            Float tensors (float32, float64, bfloat16, float16), all on one device.
        process_group : torch.distributed.ProcessGroup, optional
            ``params`` are this rank's shards of tensors split across the group's ranks:
            the value of the whole (all-reduced) is returned on every rank, and backward
            gives each rank the gradient for its shards. See :mod:`normreg.distributed`.

        Returns
        -------
        Tensor
            0-dim, float64 if any param is float64 else float32.
        """
        params, dt = dtensor_args(params)
        if dt:  # DTensor params (FSDP2, distribute_tensor): normreg.distributed
            return distributed_impl().dtensor_value(self, params, process_group)
        if process_group is not None:  # sharded params: normreg.distributed
            return distributed_impl().sharded_value(self, params, process_group)
        tl = tensor_list(params, direct=_ops.direct_ok())
        self._check_params(tl)
        if not tl.on_cpu:
            if _ops.functorch_active():  # torch.func: the differentiable reference (see _ops)
                return _ops.reference_value(tl.tensors, self._specs())
            return self._op_value(tl.tensors)  # the operator: autograd through the dispatcher
        rg = tl.any_requires_grad
        if torch.is_grad_enabled() and (rg if rg is not None else any(map(_requires_grad, tl.tensors))):
            return _PenaltyValue.apply(self, tl, *tl.tensors)
        return _ops.value_tensor(self._value(tl), _list_value_dtype(tl), tl.tensors[0].device)

    def __call__(self, params: Params) -> Tensor:
        return self.value(params)

    def grad(self, params: Params) -> list[Tensor]:
        """The gradient of the penalty at ``params`` as new tensors (no autograd graph), each in
        its param's layout."""
        params, dt = dtensor_args(params)
        if dt:  # DTensor params (FSDP2, distribute_tensor): normreg.distributed
            return distributed_impl().dtensor_grad(self, params)
        tl = tensor_list(params, direct=_ops.direct_ok())
        self._check_params(tl)
        if not tl.on_cpu:
            if _ops.functorch_active():
                return [g.detach() for g in self._reference_grad(list(tl.tensors))]
            with torch.no_grad():
                return self._op_grad(tl.tensors)
        outs = [torch.empty_like(p) for p in tl.tensors]
        self._grad(tl, paired(tl, outs, "grads"), 1.0, accumulate=False)
        return outs

    def add_grad_(self, params: Params, *, process_group=None) -> float:
        """Add the penalty's gradient into each param's ``.grad`` in one pass.

        Tensors with ``requires_grad=False`` (frozen) are skipped. Where ``.grad`` is
        ``None`` a zero gradient is allocated first. Returns the penalty value of the
        params that received a gradient, as a Python float. With ``process_group``, the
        params are this rank's shards and the value is global (:mod:`normreg.distributed`).
        """
        params, dt = dtensor_args(params)
        if dt:  # DTensor params (FSDP2, distribute_tensor): normreg.distributed
            return distributed_impl().dtensor_add_grad_(self, params, process_group)
        if process_group is not None:  # sharded params: normreg.distributed
            return distributed_impl().sharded_add_grad_(self, params, process_group)
        tl = trainable(tensor_list(params, requires_grad="all", direct=_ops.direct_ok()))
        if tl is None:
            return 0.0
        self._check_params(tl)
        gl = checked_grads(tl)
        check_writable(gl.tensors, "grads")
        if not tl.on_cpu:
            with torch.no_grad():
                return _ops.as_float(self._op_add_grad_(tl.tensors, gl.tensors))
        return self._grad(tl, gl, 1.0, accumulate=True)

    def prox_(self, params: Params, step: float, *, process_group=None):
        """Proximal step ``w <- prox_{step * R}(w)`` in place; see :mod:`normreg.prox`.

        With ``process_group``, the params are this rank's shards and the step is that of the
        whole tensors (:mod:`normreg.distributed`)."""
        params, dt = dtensor_args(params)
        if dt:  # DTensor params (FSDP2, distribute_tensor): normreg.distributed
            return distributed_impl().dtensor_prox_(self, params, step, process_group)
        if process_group is not None:  # sharded params: normreg.distributed
            return distributed_impl().sharded_prox_(self, params, step, process_group)
        return prox.penalty_prox_(self, params, step)

    def __add__(self, other: Penalty) -> Sum:
        if not isinstance(other, Penalty):
            return NotImplemented
        return Sum([self, other])

    def __radd__(self, other):
        if other == 0:  # sum([...]) starts from 0
            return self
        return NotImplemented


class _OneStrength(Penalty):
    """A penalty with one strength λ, ``strength`` (L1, SquaredL2, L2Norm, GroupLasso, Linf,
    L0): checked once here, scaled by λ schedules, shown in the repr. It is the term's ``s1``
    (the coefficient of |w| or of the norm); SquaredL2 makes it ``s2`` instead."""

    def __init__(self, strength: float = 1e-4) -> None:
        self.strength = check_strength(strength, "strength")

    def _s1(self) -> float:
        return self.strength

    def _scale_(self, f: float) -> None:
        self.strength *= f

    def __repr__(self) -> str:
        return f"{type(self).__name__}(strength={self.strength:g})"


class Sum(Penalty):
    """A sum of penalties: values and gradients add.

    L1, SquaredL2 and ElasticNet terms merge into one fused pass. ``prox_`` exists where the
    prox of the sum is exact (see :mod:`normreg.prox`), and raises otherwise.
    """

    kind = "sum"

    def __init__(self, terms: Sequence[Penalty]) -> None:
        flat: list[Penalty] = []
        for t in terms:
            if not isinstance(t, Penalty):
                raise TypeError(f"'terms' must hold Penalty objects, got {type(t).__name__}")
            flat.extend(t.terms if isinstance(t, Sum) else [t])
        if not flat:
            raise ValueError("'terms' is empty: a Sum needs at least one penalty")
        self.terms = flat
        self.affine = all(t.affine for t in flat)
        self.has_grad = all(t.has_grad for t in flat)

    def _s1(self) -> float:
        return sum(t._s1() for t in self.terms if t.affine)

    def _s2(self) -> float:
        return sum(t._s2() for t in self.terms if t.affine)

    def _scale_(self, f: float) -> None:
        self.terms = [t.scaled(f) for t in self.terms]

    def _prox_terms(self) -> list[tuple]:
        return [term for t in self.terms for term in t._prox_terms()]

    def for_module(self, module: torch.nn.Module, name: str = "weight") -> Penalty:
        terms = [t.for_module(module, name) for t in self.terms]
        return self if all(a is b for a, b in zip(terms, self.terms)) else Sum(terms)

    def _parts(self) -> tuple[tuple[str, float, float, int] | None, list[Penalty]]:
        """``(merged, rest)``: the affine terms merged into the spec of one fused elastic-net
        pass, and the other terms as they are. ``merged`` is what
        ``ElasticNet(l1, l2)._spec()`` gives for the summed strengths (``"elastic_net"`` is
        ElasticNet's kind; the sums checked as ElasticNet checks its strengths), None
        without affine terms."""
        aff = [t for t in self.terms if t.affine]
        rest = [t for t in self.terms if not t.affine]
        if not aff:
            return None, rest
        l1 = check_strength(sum(t._s1() for t in aff), "l1")
        l2 = check_strength(sum(t._s2() for t in aff), "l2")
        return ("elastic_net", l1, l2, 0), rest

    def _check_params(self, tl: TensorList) -> None:
        for t in self.terms:
            t._check_params(tl)

    def _specs(self) -> list[tuple[str, float, float, int]]:
        merged, rest = self._parts()
        return ([merged] if merged is not None else []) + [t._spec() for t in rest]

    def _reference_grad(self, params: list[Tensor]) -> list[Tensor]:
        out = None
        for t in self.terms:
            g = t._reference_grad(params)
            out = g if out is None else [a + b for a, b in zip(out, g)]
        return out

    def __repr__(self) -> str:
        return " + ".join(map(repr, self.terms))
