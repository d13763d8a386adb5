"""A param group's penalty in the proximal optimizers: its plain data for ``state_dict``
(:func:`penalty_spec` / :func:`penalty_from_spec`), the checks of a group's ``penalty``,
``penalty_mode`` and ``precondition_prox`` when it is added, and the fused pass's arguments
for it (a proximal step, or a gradient). :mod:`._base` runs the step; :mod:`._args` checks the
hyperparameters.
"""

from __future__ import annotations

import inspect

import torch

from .. import penalties as P
from .._bridge import paired
from ..penalties import Penalty, Sum
from ..prox import _Plan, _plan
from ._args import _nonneg_finite

# ---- penalties as plain data ------------------------------------------------------------------


def penalty_spec(penalty) -> dict | None:
    """A penalty as plain data (``{"kind": "l1", "strength": 1e-4}``; sums as
    ``{"kind": "sum", "terms": [...]}``), for ``state_dict``; ``None`` stays ``None``."""
    if penalty is None:
        return None
    if not isinstance(penalty, Penalty):
        raise TypeError(
            f"'penalty' must be a normreg penalty (e.g. normreg.L1(1e-4)), got {type(penalty).__name__}"
        )
    if isinstance(penalty, Sum):
        return {"kind": "sum", "terms": [penalty_spec(t) for t in penalty.terms]}
    spec = {"kind": penalty.kind}
    for name in inspect.signature(type(penalty).__init__).parameters:
        if name != "self" and hasattr(penalty, name):
            spec[name] = getattr(penalty, name)
    return spec


def penalty_from_spec(spec):
    """The penalty described by :func:`penalty_spec`'s plain data (a penalty object passes)."""
    if spec is None or isinstance(spec, P.Penalty):
        return spec
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValueError(
            f"a penalty spec is a dict with a 'kind' (e.g. {{'kind': 'l1', 'strength': 1e-4}}), got {spec!r}"
        )
    kinds = {
        c.kind: c for c in vars(P).values() if isinstance(c, type) and issubclass(c, P.Penalty) and c.kind
    }
    kind = spec["kind"]
    if kind == "sum":
        return P.Sum([penalty_from_spec(t) for t in spec.get("terms", [])])
    cls = kinds.get(kind)
    if cls is None:
        raise ValueError(f"unknown penalty kind {kind!r} in a penalty spec; known: {sorted(kinds) + ['sum']}")
    args = {k: v for k, v in spec.items() if k != "kind"}
    if "l" in args and "strength" not in args:  # a spec saved before the strength was named 'strength'
        args["strength"] = args.pop("l")
    return cls(**args)


# ---- a group's penalty: its checks, and the fused pass's arguments for it ----------------------

_PENALTY_MODES = ("prox", "grad")
_GRAD = 3  # the kernels' fused-gradient penalty kind (kernels::ProxKind::Grad)
#: group keys that only normreg's optimizers have (kept on load from the current groups
#: when a state_dict, e.g. torch.optim's, lacks them)
_NORMREG_KEYS = ("penalty", "penalty_mode", "precondition_prox", "penalty_factor")


def _fused_args(plan: _Plan | None, lr: float) -> tuple[int, float, float]:
    """(prox_kind, a, b) of the kernel: 0 none, 1 elastic-net shrink, 2 exact L0."""
    if plan is None or not plan.elementwise:
        return 0, 0.0, 0.0
    if plan.l0 > 0:
        return 2, lr * plan.l0, 0.0
    if plan.l1 > 0 or plan.l2 > 0:
        return 1, lr * plan.l1, lr * plan.l2
    return 0, 0.0, 0.0


def _check_has_grad(penalty) -> None:
    if not isinstance(penalty, Penalty):
        raise TypeError(
            f"'penalty' must be a normreg penalty (e.g. normreg.L1(1e-4)), got {type(penalty).__name__}"
        )
    if not penalty.has_grad:
        raise ValueError(
            f"penalty_mode='grad': {penalty!r} has an L0 term, which has no gradient; use penalty_mode='prox' "
            "(its hard threshold)"
        )


def _grad_args(penalty, tl, gl):
    """(kind, a, b, grads) of the kernel for a penalty applied as a gradient.

    L1 / SquaredL2 / ElasticNet (and sums of them) on the CPU go into the fused pass as
    ``g + l1*sign(w) + l2*w``; any other penalty with a gradient (or tensors the kernels do
    not take) adds its gradient into a copy of the gradients first, as ``add_grad_`` would.
    """
    if penalty.affine:  # the kernels and the reference both fuse it (kind 3)
        a, b = penalty._s1(), penalty._s2()
        return (_GRAD, a, b, gl) if a > 0 or b > 0 else (0, 0.0, 0.0, gl)
    copies = [g.clone(memory_format=torch.contiguous_format) for g in gl.tensors]
    cl = paired(tl, copies, "grads", inplace=True)
    penalty._grad(tl, cl, 1.0, accumulate=True)
    return 0, 0.0, 0.0, cl


def _is_zero(penalty) -> bool:
    return penalty is None or (penalty.affine and penalty._s1() == 0 and penalty._s2() == 0)


def _check_group(param_group: dict, defaults: dict) -> None:
    """The checks of a group's penalty as ``add_param_group`` receives it (a plain spec is
    rebuilt into its penalty in place); keys the group lacks come from ``defaults``."""
    penalty = param_group.get("penalty", defaults.get("penalty"))
    if isinstance(penalty, dict):  # a plain spec
        penalty = param_group["penalty"] = penalty_from_spec(penalty)
    mode = param_group.get("penalty_mode", defaults.get("penalty_mode", "prox"))
    if mode not in _PENALTY_MODES:
        raise ValueError(f"'penalty_mode' must be 'prox' or 'grad', got {mode!r}")
    pre = param_group.get("precondition_prox", defaults.get("precondition_prox", False))
    if "penalty_factor" in param_group:
        _nonneg_finite(param_group["penalty_factor"], "penalty_factor")
    if penalty is not None and mode == "grad":
        _check_has_grad(penalty)
        if pre:
            raise ValueError(
                "'precondition_prox' applies to penalty_mode='prox'; with penalty_mode='grad' the "
                "penalty's gradient goes through Adam's preconditioner like the loss's"
            )
    elif penalty is not None:
        plan = _plan(penalty)  # TypeError / ValueError for penalties without an exact prox
        if pre and not plan.elementwise:
            raise ValueError(
                f"'precondition_prox' needs an elementwise penalty (L1, SquaredL2, ElasticNet, L0), "
                f"got {penalty!r}; use precondition_prox=False for it"
            )
