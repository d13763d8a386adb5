"""ProxAdam and ProxAdamW: torch.optim.Adam / AdamW with a fused proximal step."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim.adam import adam as _torch_adam

from .. import _ops
from ._args import _check_lr, _flag, _nonneg_finite, _real, _torch_flags
from ._base import _ProxOptimizer

__all__ = ["ProxAdam", "ProxAdamW"]


def _check_betas(betas) -> tuple[float, float]:
    if isinstance(betas, Tensor) or not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"'betas' must be a pair of floats (beta1, beta2), got {betas!r}")
    b1, b2 = _real(betas[0], "betas[0]"), _real(betas[1], "betas[1]")
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise ValueError(f"Invalid beta parameters: 'betas' must be two values in [0, 1), got {tuple(betas)}")
    return b1, b2


def _scalar_dtype() -> torch.dtype:
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class ProxAdam(_ProxOptimizer):
    """Adam (torch.optim.Adam's formulas, amsgrad, maximize, coupled weight_decay or
    ``decoupled_weight_decay``) with a fused proximal step of each group's penalty at
    threshold ``lr * l``, or the Adam-preconditioned threshold ``lr * l / (sqrt(v_hat) + eps)``
    with ``precondition_prox``.

    A group without a penalty (or with strength 0) takes torch's own functional Adam
    (``torch.optim.adam.adam`` with the group's ``foreach`` / ``fused``), so its step is
    bitwise torch.optim.Adam's: torch's CPU ``sqrt`` is MKL's, which the fused pass cannot
    reproduce bit for bit (it differs from the correctly rounded root in ~20% of float32
    elements). Penalized groups take the fused pass; ``capturable`` / ``differentiable``
    are refused.
    """

    _decoupled = False

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool | None = None,
        precondition_prox: bool = False,
        penalty=None,
        penalty_mode: str = "prox",
        penalty_schedule=None,
    ) -> None:
        lr = _check_lr(lr)
        betas = _check_betas(betas)
        eps = _nonneg_finite(eps, "eps")
        weight_decay = _nonneg_finite(weight_decay, "weight_decay")
        amsgrad, maximize = _flag(amsgrad, "amsgrad"), _flag(maximize, "maximize")
        precondition_prox = _flag(precondition_prox, "precondition_prox")
        if decoupled_weight_decay is None:
            decoupled_weight_decay = self._decoupled
        decoupled_weight_decay = _flag(decoupled_weight_decay, "decoupled_weight_decay")
        if self._decoupled and not decoupled_weight_decay:
            raise ValueError("ProxAdamW has decoupled weight decay; use ProxAdam for coupled weight decay")
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            **_torch_flags(foreach, fused, capturable, differentiable),
            decoupled_weight_decay=decoupled_weight_decay,
            precondition_prox=precondition_prox,
            penalty_mode=penalty_mode,
        )
        super().__init__(params, defaults, penalty, penalty_schedule)

    def _state_lists(self, group, params, tensor_steps: bool):
        """The moments (in each param's memory order, as torch.optim.Adam's) and the step
        counts: Python floats (the eager direct path), or with ``tensor_steps`` 0-dim tensors
        kept in the state (as torch.optim keeps them), so that torch.compile reads them as
        graph inputs instead of recompiling for every new count."""
        amsgrad = bool(group["amsgrad"])
        fmt = torch.preserve_format
        state = self.state
        ms, vs, vmax, steps = [], [], [], []
        for p in params:
            st = state[p]
            if not st:
                st["step"] = torch.zeros((), dtype=_scalar_dtype()) if tensor_steps else 0.0
                st["exp_avg"] = torch.zeros_like(p, memory_format=fmt)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=fmt)
            if amsgrad and "max_exp_avg_sq" not in st:
                st["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=fmt)
            ms.append(st["exp_avg"])
            vs.append(st["exp_avg_sq"])
            if amsgrad:
                vmax.append(st["max_exp_avg_sq"])
            s = st["step"]
            if tensor_steps:
                if not isinstance(s, Tensor):
                    s = st["step"] = torch.tensor(float(s), dtype=_scalar_dtype())
                steps.append(s)
            else:
                steps.append(float(s) if isinstance(s, Tensor) else s)
        return ms, vs, vmax, steps

    def _plain_is_torch(self, group, params) -> bool:
        return True

    def _torch_update(self, group, params, grads) -> None:
        # off the direct path (torch.compile, the operators) the state keeps its step counts
        # as tensors, incremented in place by torch's adam, as torch.optim.Adam keeps them
        tensor_steps = not _ops.direct_ok()
        ms, vs, vmax, steps = self._state_lists(group, params, tensor_steps=tensor_steps)
        fused = group.get("fused")
        if tensor_steps:
            step_t = steps
        else:
            dt = torch.float32 if fused else _scalar_dtype()
            step_t = [
                torch.tensor(s, dtype=dt, device=p.device if fused else None) for s, p in zip(steps, params)
            ]
        beta1, beta2 = group["betas"]
        _torch_adam(
            params,
            grads,
            ms,
            vs,
            vmax,
            step_t,
            foreach=group.get("foreach"),
            capturable=False,
            differentiable=False,
            fused=fused,
            grad_scale=None,
            found_inf=None,
            has_complex=False,
            decoupled_weight_decay=bool(group.get("decoupled_weight_decay", self._decoupled)),
            amsgrad=bool(group["amsgrad"]),
            beta1=float(beta1),
            beta2=float(beta2),
            lr=float(group["lr"]),
            weight_decay=float(group["weight_decay"]),
            eps=float(group["eps"]),
            maximize=bool(group["maximize"]),
        )
        if not tensor_steps:
            state = self.state
            for p, s in zip(params, steps):
                state[p]["step"] = s + 1.0

    def _update(self, group, tl, gl, kind, a, b):
        beta1, beta2 = group["betas"]
        lr, eps, wd = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        amsgrad = bool(group["amsgrad"])
        decoupled = bool(group.get("decoupled_weight_decay", self._decoupled))
        direct = tl.on_cpu
        ms, vs, vmax, steps = self._state_lists(group, tl.tensors, tensor_steps=not direct)
        if self._state_loaded:
            self._check_state(tl, ms, vs, vmax)
        state = self.state
        if direct:
            steps = [s + 1.0 for s in steps]
            for p, s in zip(tl.tensors, steps):
                state[p]["step"] = s
        else:  # the operator: the counts as a tensor (torch.compile reads them as graph inputs)
            steps = torch._foreach_add(steps, 1.0)
            for p, s in zip(tl.tensors, steps):
                state[p]["step"] = s
            steps = torch.stack(steps).to(torch.float64)
        return _ops.adam_step(
            tl, gl, ms, vs, vmax, steps, lr, float(beta1), float(beta2), eps, wd, decoupled,
            bool(group["maximize"]), amsgrad, kind, a, b, bool(group.get("precondition_prox", False)),
        )  # fmt: skip


class ProxAdamW(ProxAdam):
    """AdamW (decoupled weight decay, default 1e-2, as torch.optim.AdamW) with the fused prox."""

    _decoupled = True

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        precondition_prox: bool = False,
        penalty=None,
        penalty_mode: str = "prox",
        penalty_schedule=None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
            precondition_prox=precondition_prox,
            penalty=penalty,
            penalty_mode=penalty_mode,
            penalty_schedule=penalty_schedule,
        )
