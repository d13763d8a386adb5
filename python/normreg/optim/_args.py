"""Argument checks of the proximal optimizers' hyperparameters (``lr``, ``momentum``, ``eps``,
the flags, torch.optim's implementation switches), shared by :mod:`.sgd` and :mod:`.adam`.
Messages name the argument and say how to fix the call. A group's penalty is checked in
:mod:`._group_penalty`; what the optimizers share is :mod:`._base`.
"""

from __future__ import annotations

import math

from torch import Tensor


def _real(v, arg: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        if isinstance(v, Tensor):
            raise TypeError(
                f"'{arg}' must be a Python float (tensor hyperparameters are not supported), got a Tensor"
            )
        raise TypeError(f"'{arg}' must be a real number, got {type(v).__name__} {v!r}")
    return float(v)


def _nonneg_finite(v, arg: str) -> float:
    v = _real(v, arg)
    if not (0.0 <= v < math.inf):
        raise ValueError(f"Invalid {arg} value: '{arg}' must be finite and >= 0, got {v}")
    return v


def _flag(v, arg: str) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"'{arg}' must be True or False, got {type(v).__name__} {v!r}")
    return v


def _opt_flag(v, arg: str) -> bool | None:
    if v is not None and not isinstance(v, bool):
        raise TypeError(f"'{arg}' must be None, True or False, got {type(v).__name__} {v!r}")
    return v


def _torch_flags(foreach, fused, capturable, differentiable) -> dict:
    """torch.optim's implementation switches. ``foreach`` / ``fused`` choose torch's
    implementation for the steps that run torch's own update (groups without a penalty);
    the fused normreg pass is used for penalized groups either way. ``capturable`` and
    ``differentiable`` have no normreg counterpart and are refused when True."""
    foreach, fused = _opt_flag(foreach, "foreach"), _opt_flag(fused, "fused")
    capturable, differentiable = _flag(capturable, "capturable"), _flag(differentiable, "differentiable")
    if foreach and fused:
        raise ValueError("'foreach' and 'fused' cannot both be True; pick one of torch's implementations")
    if capturable:
        raise ValueError(
            "'capturable=True' (CUDA-graph capture, step counts kept on the device) is not supported by normreg's "
            "optimizers; use capturable=False (or torch.optim with capturable=True)"
        )
    if differentiable:
        raise ValueError(
            "'differentiable=True' (autograd through the optimizer step) is not supported by normreg's optimizers: "
            "the step writes in place under no_grad; use differentiable=False"
        )
    return dict(foreach=foreach, fused=fused, capturable=False, differentiable=False)


def _check_lr(lr) -> float:
    return _nonneg_finite(lr, "lr")
