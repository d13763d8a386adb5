"""What the proximal optimizers share: the λ factor, the step loop, ``state_dict`` (each
group's penalty as its plain spec) and loading torch.optim state. The hyperparameters' checks
are in :mod:`._args`; a group's penalty (its checks, its spec, the fused pass's arguments for
it) in :mod:`._group_penalty`.

Subclasses (:mod:`.sgd`, :mod:`.adam`) implement ``_update(group, tl, gl, kind, a, b)`` (the
fused pass) and ``_torch_update(group, params, grads)`` (torch's own functional step, taken
for groups without a penalty where the fused pass would not be bitwise torch's).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .. import _ops
from .. import _reference as ref
from .._bridge import _same_layout, paired, tensor_list
from .._dtensors import groups_have_dtensor as _groups_have_dtensor
from ..distributed import dtensor_step
from ..prox import ProxStats, _check_plan_params, _plan, _run_plan
from ._args import _nonneg_finite
from ._group_penalty import (
    _NORMREG_KEYS,
    _check_group,
    _check_has_grad,
    _fused_args,
    _grad_args,
    _is_zero,
    penalty_from_spec,
    penalty_spec,
)


class _ProxOptimizer(torch.optim.Optimizer):
    """Bookkeeping shared by the proximal optimizers: penalties per group, the λ schedule,
    stats, state_dict. Subclasses implement ``_update`` and ``_torch_update``."""

    def __init__(self, params, defaults: dict, penalty, penalty_schedule) -> None:
        if penalty is not None:
            penalty_spec(penalty)  # TypeError for a non-penalty
        defaults = dict(defaults, penalty=penalty, penalty_factor=1.0)
        if penalty_schedule is not None and not callable(penalty_schedule):
            raise TypeError(
                f"'penalty_schedule' must be callable (step -> factor), e.g. normreg.optim.Cosine(1000), "
                f"got {type(penalty_schedule).__name__}"
            )
        self.penalty_schedule = penalty_schedule
        self._prox_step = 0
        self._state_loaded = False  # True after load_state_dict: check the state tensors once
        #: ProxStats of the last step over the params of penalized groups (None before).
        self.last_stats: ProxStats | None = None
        #: Per param group: ProxStats of the last step (None for unpenalized/skipped groups).
        self.group_stats: list[ProxStats | None] = []
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        _check_group(param_group, self.defaults)
        super().add_param_group(param_group)

    def __getstate__(self) -> dict:  # pickling / deepcopy keep the schedule and step count
        state = super().__getstate__()
        state.update(
            penalty_schedule=self.penalty_schedule,
            _prox_step=self._prox_step,
            last_stats=self.last_stats,
            group_stats=list(self.group_stats),
            _state_loaded=True,
        )
        return state

    # -- schedule -------------------------------------------------------------------------
    def penalty_factor(self) -> float:
        """The factor the next ``step()`` applies to every penalty through ``penalty_schedule``
        (a group's ``"penalty_factor"``, set by a :class:`PenaltyScheduler`, multiplies it)."""
        if self.penalty_schedule is None:
            return 1.0
        f = self.penalty_schedule(self._prox_step)
        f = float(f)
        if not (f >= 0) or f == math.inf:
            raise ValueError(
                f"'penalty_schedule' returned {f} at step {self._prox_step}; factors must be finite and >= 0"
            )
        return f

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """torch.optim's state_dict with plain data only: each group's penalty as a plain
        spec (:func:`penalty_spec`), the λ schedule's step and state under ``"prox"``. It
        loads with ``torch.load(..., weights_only=True)`` and into torch.optim's optimizer."""
        sd = super().state_dict()
        groups = []
        for g in sd["param_groups"]:
            g = dict(g)
            g["penalty"] = penalty_spec(g.get("penalty"))
            groups.append(g)
        sd["param_groups"] = groups
        sched = self.penalty_schedule
        sd["prox"] = {
            "step": self._prox_step,
            "schedule": sched.state_dict() if hasattr(sched, "state_dict") else None,
        }
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state_dict of this optimizer (or of torch.optim's SGD / Adam / AdamW).

        Hyperparameters come from the state_dict as in torch.optim; keys it lacks (a torch
        state_dict has no penalty) keep the values of the current groups, i.e. those the
        optimizer was constructed with. A saved penalty spec is rebuilt when it differs from
        the current group's penalty (the current object is kept when they agree)."""
        if not isinstance(state_dict, dict) or "param_groups" not in state_dict or "state" not in state_dict:
            raise ValueError(
                "load_state_dict: expected a dict with 'state' and 'param_groups' (an optimizer state_dict)"
            )
        state_dict = dict(state_dict)
        extra = state_dict.pop("prox", None)
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"load_state_dict: the state_dict has {len(saved_groups)} param groups, this optimizer "
                f"{len(self.param_groups)}; load a state_dict saved for the same param groups"
            )
        current = [{k: g.get(k) for k in _NORMREG_KEYS if k in g} for g in self.param_groups]
        new_groups = []
        for saved, cur in zip(saved_groups, current):
            saved = dict(saved)
            if "penalty" in saved:
                spec = saved["penalty"]
                if spec is not None and not isinstance(spec, (dict,)) and not hasattr(spec, "kind"):
                    raise ValueError(
                        f"load_state_dict: a group's 'penalty' must be a penalty spec dict, got {spec!r}"
                    )
                same = penalty_spec(cur.get("penalty")) == (
                    spec if isinstance(spec, dict) or spec is None else penalty_spec(spec)
                )
                saved["penalty"] = cur.get("penalty") if same else penalty_from_spec(spec)
            for k, v in cur.items():
                saved.setdefault(k, v)
            for k, v in self.defaults.items():
                saved.setdefault(k, v)
            new_groups.append(saved)
        state_dict["param_groups"] = new_groups
        penalties = [g.get("penalty") for g in new_groups]
        super().load_state_dict(state_dict)
        for group, p in zip(self.param_groups, penalties):  # torch deep-copies the groups: keep the objects
            group["penalty"] = p
        for group in self.param_groups:  # a rebuilt penalty must suit its group
            p = group["penalty"]
            if p is not None and group.get("penalty_mode", "prox") == "grad":
                _check_has_grad(p)
            elif p is not None:
                _plan(p)
        self._state_loaded = True
        if extra is not None:
            self._prox_step = int(extra["step"])
            if extra.get("schedule") is not None and hasattr(self.penalty_schedule, "load_state_dict"):
                self.penalty_schedule.load_state_dict(extra["schedule"])

    # -- the step ---------------------------------------------------------------------------
    def _collect(self, group: dict) -> tuple[list[Tensor], list[Tensor]]:
        params, grads = [], []
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            if g.is_sparse:
                raise TypeError(f"{type(self).__name__} does not support sparse gradients")
            params.append(p)
            grads.append(g if g.is_contiguous() else g.contiguous())
        return params, grads

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        """One step over every param group (params whose ``.grad`` is None are skipped).

        Returns the closure's loss (like torch.optim). The zeros after the step are in
        ``self.last_stats`` (all penalized groups) and ``self.group_stats``. Every tensor
        the step writes (params, optimizer state) has its version counter bumped, so a graph
        built before the step refuses to backpropagate, as after torch.optim's step.
        """
        if _groups_have_dtensor(self.param_groups):  # DTensor params (FSDP2): normreg.distributed
            return dtensor_step(self, closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        factor = self.penalty_factor()
        todo = []
        for group in self.param_groups:  # check every group before touching any tensor
            penalty = group["penalty"]
            params, grads = self._collect(group)
            if not params:
                todo.append(None)
                continue
            if self._state_loaded:
                self._check_loaded_state(params)
            f = factor * _nonneg_finite(group.get("penalty_factor", 1.0), "penalty_factor")
            if penalty is not None and f != 1.0:
                penalty = penalty.scaled(f)
            if _is_zero(penalty):
                todo.append((group, group["penalty"] is not None, params, grads))
                continue
            as_grad = group.get("penalty_mode", "prox") == "grad"
            plan = _plan(penalty) if not as_grad else None
            tl = tensor_list(params, "params", inplace=True, direct=_ops.direct_ok())
            gl = paired(tl, grads, "grads", inplace=False)
            if as_grad:
                penalty._check_params(tl)
            shapes = _check_plan_params(plan, tl) if plan is not None else None
            todo.append((group, (penalty, as_grad, plan, tl, gl, shapes), params, grads))
        group_stats: list[ProxStats | None] = []
        for item in todo:
            if item is None:
                group_stats.append(None)
                continue
            group, pen, params, grads = item
            if isinstance(pen, bool):  # no penalty (or strength 0): torch's own update, bitwise
                if self._plain_is_torch(group, params):
                    self._torch_update(group, params, grads)
                    zeros = None
                    if pen:  # counted on the device (an int64 tensor) where a host sync would end a graph
                        zeros = (
                            [p.numel() - int(p.count_nonzero()) for p in params]
                            if _ops.direct_ok()
                            else (ref.zero_counts(params))
                        )
                else:
                    tl = tensor_list(params, "params", inplace=True, direct=_ops.direct_ok())
                    zeros = self._run_fused(group, tl, paired(tl, grads, "grads", inplace=False), 0, 0.0, 0.0)
                group_stats.append(ProxStats.from_counts(zeros, params) if pen else None)
                continue
            penalty, as_grad, plan, tl, gl, shapes = pen
            lr = float(group["lr"])
            if as_grad:
                kind, a, b, gl = _grad_args(penalty, tl, gl)
                group_stats.append(
                    ProxStats.from_counts(self._run_fused(group, tl, gl, kind, a, b), tl.tensors)
                )
                continue
            kind, a, b = _fused_args(plan, lr)
            zeros = self._run_fused(group, tl, gl, kind, a, b)
            if plan.elementwise:
                group_stats.append(ProxStats.from_counts(zeros, tl.tensors))
            else:
                group_stats.append(_run_plan(plan, tl, lr, shapes))
        self.group_stats = group_stats
        penalized = [s for s in group_stats if s is not None]
        self.last_stats = ProxStats.combine(penalized) if penalized else None
        if self.last_stats is not None and hasattr(self.penalty_schedule, "update"):
            self.penalty_schedule.update(self.last_stats)
        self._prox_step += 1
        self._state_loaded = False
        return loss

    def _run_fused(self, group, tl, gl, kind: int, a: float, b: float):
        # the operator declares what it writes (the dispatcher bumps those versions); the
        # direct path bumps the same tensors itself (normreg._ops.sgd_step / adam_step)
        return self._update(group, tl, gl, kind, a, b)

    def _plain_is_torch(self, group, params) -> bool:  # pragma: no cover
        """True: a step without penalty runs torch's functional update (``_torch_update``)."""
        raise NotImplementedError

    def _update(self, group, tl, gl, kind: int, a: float, b: float):  # pragma: no cover
        """The fused pass (a ``normreg::*_step_`` operator or its direct path); returns the
        zeros per tensor (ints, or an int64 tensor from the operator)."""
        raise NotImplementedError

    def _torch_update(self, group, params, grads) -> None:  # pragma: no cover
        raise NotImplementedError

    def _check_loaded_state(self, params) -> None:
        """The state tensors of each param (after load_state_dict) must match it; a state
        tensor in another memory order (e.g. contiguous for a channels_last param) is copied
        into the param's, as the fused pass pairs them element by element in memory."""
        for i, p in enumerate(params):
            st = self.state.get(p, {})
            for k, t in list(st.items()):
                if k == "step" or not isinstance(t, Tensor):
                    continue
                if t.shape != p.shape or t.dtype != p.dtype or t.device != p.device:
                    raise ValueError(
                        f"{type(self).__name__}: the optimizer state of param {i} ({k!r}) does not match it (shape, "
                        "dtype or device); load a state_dict saved for the same params"
                    )
                if not _same_layout(t, p):
                    st[k] = torch.empty_like(p).copy_(t)

    def _check_state(self, tl, *lists) -> None:
        """State tensors that came from load_state_dict must fit their params (checked once)."""
        for lst in lists:
            for i, t in enumerate(lst):
                if t is None:
                    continue
                p = tl.tensors[i]
                if t.shape != p.shape or t.dtype != p.dtype or t.device != p.device or not _same_layout(t, p):
                    raise ValueError(
                        f"{type(self).__name__}: the optimizer state of param {i} does not match it (shape, "
                        "dtype, device or layout); load a state_dict saved for the same params"
                    )


def _fma_like_torch() -> bool:
    """Do torch's CPU kernels use fused multiply-adds (as normreg's optimizer kernels do)?
    True for its AVX2 / AVX512 kernels on x86-64; elsewhere the plain steps run torch's."""
    try:
        cap = torch.backends.cpu.get_cpu_capability()
    except Exception:  # pragma: no cover - very old torch
        return False
    return cap in ("AVX2", "AVX512")
