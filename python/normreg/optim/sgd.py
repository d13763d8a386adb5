"""ProxSGD: torch.optim.SGD with a fused proximal step."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim.sgd import sgd as _torch_sgd

from .. import _ops
from ._args import _check_lr, _flag, _nonneg_finite, _real, _torch_flags
from ._base import _fma_like_torch, _ProxOptimizer

__all__ = ["ProxSGD"]


class ProxSGD(_ProxOptimizer):
    """SGD (torch.optim.SGD's momentum, dampening, nesterov, weight_decay, maximize) with a
    fused proximal step of each group's penalty at threshold ``lr * l``.

    ``weight_decay`` is torch's coupled decay; ``SquaredL2(l)`` as the penalty is its
    proximal (implicit) counterpart ``w / (1 + lr*l)``.

    Without a penalty a step is bitwise torch.optim.SGD's with the same arguments: on x86-64
    CPUs where torch runs its AVX2/AVX512 kernels the fused pass computes exactly torch's
    single-tensor formulas; elsewhere, and with ``foreach=True`` or ``fused=True``, the step
    is torch's own functional SGD. ``foreach`` / ``fused`` otherwise change nothing (penalized
    groups always take normreg's fused pass); ``capturable`` / ``differentiable`` are refused.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        penalty=None,
        penalty_mode: str = "prox",
        penalty_schedule=None,
    ) -> None:
        lr = _check_lr(lr)
        momentum = _nonneg_finite(momentum, "momentum")
        weight_decay = _nonneg_finite(weight_decay, "weight_decay")
        dampening = _real(dampening, "dampening")
        if not abs(dampening) < float("inf"):
            raise ValueError(f"'dampening' must be finite, got {dampening}")
        nesterov, maximize = _flag(nesterov, "nesterov"), _flag(maximize, "maximize")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("'nesterov' momentum requires a momentum and zero dampening")
        flags = _torch_flags(foreach, fused, False, differentiable)
        flags.pop("capturable")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            **flags,
            penalty_mode=penalty_mode,
        )
        super().__init__(params, defaults, penalty, penalty_schedule)

    def _hyper(self, group) -> dict:
        return dict(
            lr=float(group["lr"]),
            momentum=float(group["momentum"]),
            dampening=float(group["dampening"]),
            weight_decay=float(group["weight_decay"]),
            nesterov=bool(group["nesterov"]),
            maximize=bool(group["maximize"]),
        )

    def _plain_is_torch(self, group, params) -> bool:
        return not (
            params[0].device.type == "cpu"
            and _fma_like_torch()
            and not group.get("foreach")
            and not group.get("fused")
        )

    def _torch_update(self, group, params, grads) -> None:
        kw = self._hyper(group)
        state = self.state
        bufs = (
            [state[p].get("momentum_buffer") for p in params] if kw["momentum"] != 0 else [None] * len(params)
        )
        _torch_sgd(
            params,
            grads,
            bufs,
            has_sparse_grad=False,
            foreach=group.get("foreach"),
            fused=group.get("fused"),
            **kw,
        )
        if kw["momentum"] != 0:
            for p, buf in zip(params, bufs):
                state[p]["momentum_buffer"] = buf

    def _update(self, group, tl, gl, kind, a, b):
        kw = self._hyper(group)
        momentum = kw["momentum"]
        bufs: list[Tensor] = []
        init: list[bool] = []
        if momentum != 0:
            state = self.state
            for p in tl.tensors:
                buf = state[p].get("momentum_buffer")
                init.append(buf is None)
                if buf is None:  # in the param's memory order, as torch.optim.SGD's
                    buf = state[p]["momentum_buffer"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format
                    )
                bufs.append(buf)
            if self._state_loaded:
                self._check_state(tl, bufs)
        return _ops.sgd_step(
            tl, gl, bufs, init, kw["lr"], momentum, kw["dampening"], kw["weight_decay"], kw["nesterov"],
            kw["maximize"], kind, a, b,
        )  # fmt: skip
