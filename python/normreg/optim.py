"""Proximal optimizers: ProxSGD, ProxAdam, ProxAdamW, and λ schedules.

Each is a :class:`torch.optim.Optimizer` whose ``step`` runs one fused C++ pass per param
group: moment updates, the parameter update and the proximal step of the group's
penalty with threshold ``lr * l``, counting the zeros it writes. With no penalty (or every
strength 0) they follow torch.optim.SGD / Adam / AdamW operation by operation.

>>> import torch, normreg
>>> model = torch.nn.Linear(20, 1)
>>> opt = normreg.optim.ProxAdam(normreg.param_groups(model, normreg.L1(1e-3)), lr=1e-2)
>>> # loss.backward(); opt.step(); opt.last_stats.fraction  -> fraction of exact zeros

Penalties
---------
Each param group may carry its own ``"penalty"`` (``None``: no prox); groups without the
key use the optimizer's ``penalty=`` argument. :func:`normreg.param_groups` builds such
groups. Elementwise penalties (L1, SquaredL2, ElasticNet, L0 and their sums) are fused
into the update pass; GroupLasso, L2Norm, Linf (and sparse group lasso) need the norm of
the updated weights, so their prox runs as a second pass (:func:`normreg.prox.penalty_prox_`).

λ schedules
-----------
``penalty_schedule`` scales every group's penalty by ``factor = schedule(k)`` at the k-th
call of ``step()`` (k = 0, 1, ...): any callable, or :class:`Constant`,
:class:`LinearWarmup`, :class:`Cosine`, or a :class:`SparsityController` that adjusts the
factor after each step to reach a target fraction of zeros. The step count and the
schedule's state are part of ``state_dict()``.

Penalty as a proximal step or as a gradient
-------------------------------------------
``penalty_mode="prox"`` (the default) takes the proximal step above. ``penalty_mode="grad"``
adds the penalty's (sub)gradient to each gradient instead, in the same fused pass:
``opt.step()`` then equals ``penalty.add_grad_(params); opt.step()`` of the unpenalized
optimizer (bitwise, for every dtype, with L1 / SquaredL2 / ElasticNet and their sums) but
reads the weights and gradients once, and leaves ``.grad`` untouched. Other penalties with
a gradient (GroupLasso, L2Norm, Linf) work too, through a separate gradient pass into a
copy of the gradients; L0 has no gradient and is refused. A group may set its own
``"penalty_mode"``.

Adam-preconditioned prox
------------------------
``precondition_prox=True`` (ProxAdam / ProxAdamW) takes the prox in Adam's metric: the
per-element threshold is ``lr * l / (sqrt(v_hat) + eps)`` (and the ridge and L0 terms
likewise). Only elementwise penalties have this form.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from . import _reference as ref
from ._bridge import paired, tensor_list
from ._loader import _C
from .distributed import groups_have_dtensor as _groups_have_dtensor
from .prox import ProxStats, _check_plan_params, _Plan, _plan, _run_plan

__all__ = [
    "ProxSGD",
    "ProxAdam",
    "ProxAdamW",
    "Constant",
    "LinearWarmup",
    "Cosine",
    "SparsityController",
]

# ---- λ schedules ---------------------------------------------------------------------------


class Constant:
    """``factor`` at every step."""

    def __init__(self, factor: float = 1.0) -> None:
        self.factor = _nonneg(factor, "factor")

    def __call__(self, step: int) -> float:
        return self.factor

    def state_dict(self) -> dict:
        return {"factor": self.factor}

    def load_state_dict(self, state: dict) -> None:
        self.factor = float(state["factor"])

    def __repr__(self) -> str:
        return f"Constant({self.factor:g})"


class LinearWarmup:
    """From ``start`` to 1 linearly over ``warmup_steps`` steps, then 1."""

    def __init__(self, warmup_steps: int, start: float = 0.0) -> None:
        self.warmup_steps = _posint(warmup_steps, "warmup_steps")
        self.start = _nonneg(start, "start")

    def __call__(self, step: int) -> float:
        t = min(step / self.warmup_steps, 1.0)
        return self.start + (1.0 - self.start) * t

    def state_dict(self) -> dict:
        return {"warmup_steps": self.warmup_steps, "start": self.start}

    def load_state_dict(self, state: dict) -> None:
        self.warmup_steps, self.start = int(state["warmup_steps"]), float(state["start"])

    def __repr__(self) -> str:
        return f"LinearWarmup({self.warmup_steps}, start={self.start:g})"


class Cosine:
    """From ``start`` to ``end`` along half a cosine over ``total_steps`` steps, then ``end``.

    The default (0 -> 1) ramps the penalty in gently; ``Cosine(n, start=1, end=0)`` anneals it.
    """

    def __init__(self, total_steps: int, start: float = 0.0, end: float = 1.0) -> None:
        self.total_steps = _posint(total_steps, "total_steps")
        self.start = _nonneg(start, "start")
        self.end = _nonneg(end, "end")

    def __call__(self, step: int) -> float:
        t = min(step / self.total_steps, 1.0)
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * t))

    def state_dict(self) -> dict:
        return {"total_steps": self.total_steps, "start": self.start, "end": self.end}

    def load_state_dict(self, state: dict) -> None:
        self.total_steps, self.start, self.end = (
            int(state["total_steps"]),
            float(state["start"]),
            float(state["end"]),
        )

    def __repr__(self) -> str:
        return f"Cosine({self.total_steps}, start={self.start:g}, end={self.end:g})"


class SparsityController:
    """Adjusts λ toward a target fraction of exact zeros.

    After every step the optimizer calls ``update(stats)`` with the zeros of the penalized
    groups; the factor is multiplied by ``exp(gain * (target - fraction))`` (more penalty
    while too few entries are zero, less when too many), clipped to ``[min_factor,
    max_factor]``. ``schedule`` (optional) multiplies the factor, e.g. a warm-up.

    Parameters
    ----------
    target : float in [0, 1]
    gain : float > 0
        Log-step per unit of error; larger reacts faster and oscillates more.
    initial : float > 0
    """

    def __init__(
        self,
        target: float,
        gain: float = 1.0,
        initial: float = 1.0,
        min_factor: float = 1e-6,
        max_factor: float = 1e6,
        schedule: Callable[[int], float] | None = None,
    ) -> None:
        target = _nonneg(target, "target")
        if target > 1:
            raise ValueError(f"'target' is a fraction of zeros in [0, 1], got {target}")
        self.target = target
        self.gain = _nonneg(gain, "gain")
        if self.gain == 0:
            raise ValueError("'gain' must be > 0")
        self.min_factor = _nonneg(min_factor, "min_factor")
        self.max_factor = _nonneg(max_factor, "max_factor")
        if not 0 < self.min_factor <= self.max_factor:
            raise ValueError(
                f"need 0 < 'min_factor' <= 'max_factor', got {self.min_factor}, {self.max_factor}"
            )
        self.factor = min(max(_nonneg(initial, "initial"), self.min_factor), self.max_factor)
        if schedule is not None and not callable(schedule):
            raise TypeError(f"'schedule' must be callable (step -> factor), got {type(schedule).__name__}")
        self.schedule = schedule
        self.last_fraction: float | None = None

    def __call__(self, step: int) -> float:
        base = self.schedule(step) if self.schedule is not None else 1.0
        return base * self.factor

    def update(self, stats: ProxStats) -> None:
        self.last_fraction = stats.fraction
        f = self.factor * math.exp(self.gain * (self.target - stats.fraction))
        self.factor = min(max(f, self.min_factor), self.max_factor)

    def state_dict(self) -> dict:
        out = {
            "factor": self.factor,
            "target": self.target,
            "gain": self.gain,
            "last_fraction": self.last_fraction,
        }
        if hasattr(self.schedule, "state_dict"):
            out["schedule"] = self.schedule.state_dict()
        return out

    def load_state_dict(self, state: dict) -> None:
        self.factor = float(state["factor"])
        self.target = float(state["target"])
        self.gain = float(state["gain"])
        self.last_fraction = state.get("last_fraction")
        if "schedule" in state and hasattr(self.schedule, "load_state_dict"):
            self.schedule.load_state_dict(state["schedule"])

    def __repr__(self) -> str:
        return f"SparsityController(target={self.target:g}, gain={self.gain:g}, factor={self.factor:g})"


def _nonneg(v, arg: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"'{arg}' must be a real number, got {type(v).__name__}")
    v = float(v)
    if not (v >= 0) or v == math.inf:
        raise ValueError(f"'{arg}' must be finite and >= 0, got {v}")
    return v


def _posint(v, arg: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"'{arg}' must be a positive int, got {v!r}")
    return v


# ---- the optimizers ------------------------------------------------------------------------


def _fused_args(plan: _Plan | None, lr: float) -> tuple[int, float, float]:
    """(prox_kind, a, b) of the kernel: 0 none, 1 elastic-net shrink, 2 exact L0."""
    if plan is None or not plan.elementwise:
        return 0, 0.0, 0.0
    if plan.l0 > 0:
        return 2, lr * plan.l0, 0.0
    if plan.l1 > 0 or plan.l2 > 0:
        return 1, lr * plan.l1, lr * plan.l2
    return 0, 0.0, 0.0


_PENALTY_MODES = ("prox", "grad")
_GRAD = 3  # the kernels' fused-gradient penalty kind (kernels::ProxKind::Grad)


def _check_has_grad(penalty) -> None:
    from .penalties import L0, Penalty, Sum

    if not isinstance(penalty, Penalty):
        raise TypeError(f"'penalty' must be a normreg penalty (e.g. normreg.L1(1e-4)), got {type(penalty).__name__}")
    terms = penalty.terms if isinstance(penalty, Sum) else [penalty]
    if any(isinstance(t, L0) for t in terms):
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
    if penalty.affine and tl.on_cpu:
        a, b = penalty._s1(), penalty._s2()
        return (_GRAD, a, b, gl) if a > 0 or b > 0 else (0, 0.0, 0.0, gl)
    copies = [g.clone(memory_format=torch.contiguous_format) for g in gl.tensors]
    cl = paired(tl, copies, "grads", inplace=True)
    penalty._grad(tl, cl, 1.0, accumulate=True)
    return 0, 0.0, 0.0, cl


class _ProxOptimizer(torch.optim.Optimizer):
    """Bookkeeping shared by the proximal optimizers: penalties per group, the λ schedule,
    stats, state_dict. Subclasses implement ``_update(group, params, grads, kind, a, b)``."""

    def __init__(self, params, defaults: dict, penalty, penalty_schedule) -> None:
        defaults = dict(defaults, penalty=penalty)
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
        penalty = param_group.get("penalty", self.defaults.get("penalty"))
        mode = param_group.get("penalty_mode", self.defaults.get("penalty_mode", "prox"))
        if mode not in _PENALTY_MODES:
            raise ValueError(f"'penalty_mode' must be 'prox' or 'grad', got {mode!r}")
        pre = param_group.get("precondition_prox", self.defaults.get("precondition_prox", False))
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
        """The factor the next ``step()`` applies to every penalty."""
        if self.penalty_schedule is None:
            return 1.0
        f = self.penalty_schedule(self._prox_step)
        f = float(f)
        if not (f >= 0) or f == math.inf:
            raise ValueError(
                f"'penalty_schedule' returned {f} at step {self._prox_step}; factors must be finite and >= 0"
            )
        return f

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sched = self.penalty_schedule
        sd["prox"] = {
            "step": self._prox_step,
            "schedule": sched.state_dict() if hasattr(sched, "state_dict") else None,
        }
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("prox", None)
        super().load_state_dict(state_dict)
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
        ``self.last_stats`` (all penalized groups) and ``self.group_stats``.
        """
        if _groups_have_dtensor(self.param_groups):  # DTensor params (FSDP2): normreg.distributed
            from .distributed import dtensor_step

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
            if penalty is not None and factor != 1.0:
                penalty = penalty.scaled(factor)
            as_grad = penalty is not None and group.get("penalty_mode", "prox") == "grad"
            plan = _plan(penalty) if penalty is not None and not as_grad else None
            tl = tensor_list(params, "params", inplace=True)
            gl = paired(tl, grads, "grads", inplace=False)
            if as_grad:
                penalty._check_params(tl)
            shapes = _check_plan_params(plan, tl) if plan is not None else None
            todo.append((group, penalty, as_grad, plan, tl, gl, shapes))
        group_stats: list[ProxStats | None] = []
        for item in todo:
            if item is None:
                group_stats.append(None)
                continue
            group, penalty, as_grad, plan, tl, gl, shapes = item
            lr = float(group["lr"])
            if as_grad:
                kind, a, b, gl = _grad_args(penalty, tl, gl)
                group_stats.append(ProxStats.from_counts(self._update(group, tl, gl, kind, a, b), tl.tensors))
                continue
            kind, a, b = _fused_args(plan, lr)
            zeros = self._update(group, tl, gl, kind, a, b)
            if plan is None:
                group_stats.append(None)
                continue
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

    def _update(self, group, tl, gl, kind: int, a: float, b: float) -> list[int]:  # pragma: no cover
        raise NotImplementedError

    def _check_state(self, tl, *lists) -> None:
        """State tensors that came from load_state_dict must fit their params (checked once)."""
        for lst in lists:
            for i, t in enumerate(lst):
                if t is None:
                    continue
                p = tl.tensors[i]
                if t.shape != p.shape or t.dtype != p.dtype or t.device != p.device or not t.is_contiguous():
                    raise ValueError(
                        f"{type(self).__name__}: the optimizer state of param {i} does not match it (shape, "
                        "dtype, device or layout); load a state_dict saved for the same params"
                    )


def _check_lr(lr) -> None:
    if isinstance(lr, Tensor):
        raise TypeError("'lr' must be a float (tensor learning rates are not supported)")
    if not 0.0 <= lr < math.inf:
        raise ValueError(f"Invalid learning rate: 'lr' must be finite and >= 0, got {lr}")


class ProxSGD(_ProxOptimizer):
    """SGD (torch.optim.SGD's momentum, dampening, nesterov, weight_decay, maximize) with a
    fused proximal step of each group's penalty at threshold ``lr * l``.

    ``weight_decay`` is torch's coupled decay; ``SquaredL2(l)`` as the penalty is its
    proximal (implicit) counterpart ``w / (1 + lr*l)``.
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
        penalty=None,
        penalty_mode: str = "prox",
        penalty_schedule=None,
    ) -> None:
        _check_lr(lr)
        if not 0.0 <= momentum < math.inf:
            raise ValueError(f"Invalid momentum value: 'momentum' must be >= 0, got {momentum}")
        if not 0.0 <= weight_decay < math.inf:
            raise ValueError(f"Invalid weight_decay value: 'weight_decay' must be >= 0, got {weight_decay}")
        if not math.isfinite(dampening):
            raise ValueError(f"'dampening' must be finite, got {dampening}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("'nesterov' momentum requires a momentum and zero dampening")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            penalty_mode=penalty_mode,
        )
        super().__init__(params, defaults, penalty, penalty_schedule)

    def _update(self, group, tl, gl, kind, a, b):
        momentum = float(group["momentum"])
        bufs: list[Tensor | None] = []
        init: list[bool] = []
        state = self.state
        if momentum != 0:
            for p in tl.tensors:
                buf = state[p].get("momentum_buffer")
                bufs.append(buf)
                init.append(buf is None)
        kw = dict(
            lr=float(group["lr"]),
            momentum=momentum,
            dampening=float(group["dampening"]),
            weight_decay=float(group["weight_decay"]),
            nesterov=bool(group["nesterov"]),
            maximize=bool(group["maximize"]),
        )
        if not tl.on_cpu:
            zeros = ref.sgd_step_(tl.tensors, gl.tensors, bufs, prox_kind=kind, prox_a=a, prox_b=b, **kw)
            if momentum != 0:
                for p, buf in zip(tl.tensors, bufs):
                    state[p]["momentum_buffer"] = buf
            return zeros
        bptrs: list[int] = []
        if momentum != 0 and self._state_loaded:
            self._check_state(tl, bufs)
        if momentum != 0:
            for i, p in enumerate(tl.tensors):
                if bufs[i] is None:
                    bufs[i] = state[p]["momentum_buffer"] = torch.zeros_like(
                        p, memory_format=torch.contiguous_format
                    )
            bptrs = [t.data_ptr() for t in bufs]  # type: ignore[union-attr]
        return _C.sgd_step(
            tl.ptrs,
            tl.numels,
            tl.dtypes,
            gl.ptrs,
            bptrs,
            init,
            kw["lr"],
            momentum,
            kw["dampening"],
            kw["weight_decay"],
            kw["nesterov"],
            kw["maximize"],
            kind,
            a,
            b,
        )


class ProxAdam(_ProxOptimizer):
    """Adam (torch.optim.Adam's formulas, amsgrad, maximize, coupled weight_decay) with a
    fused proximal step of each group's penalty at threshold ``lr * l``, or the
    Adam-preconditioned threshold ``lr * l / (sqrt(v_hat) + eps)`` with ``precondition_prox``.
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
        maximize: bool = False,
        precondition_prox: bool = False,
        penalty=None,
        penalty_mode: str = "prox",
        penalty_schedule=None,
    ) -> None:
        _check_lr(lr)
        if not 0.0 <= eps < math.inf:
            raise ValueError(f"Invalid epsilon value: 'eps' must be >= 0, got {eps}")
        if len(betas) != 2 or not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameters: 'betas' must be two values in [0, 1), got {betas}")
        if not 0.0 <= weight_decay < math.inf:
            raise ValueError(f"Invalid weight_decay value: 'weight_decay' must be >= 0, got {weight_decay}")
        defaults = dict(
            lr=lr,
            betas=tuple(float(b) for b in betas),
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            precondition_prox=precondition_prox,
            penalty_mode=penalty_mode,
        )
        super().__init__(params, defaults, penalty, penalty_schedule)

    def _update(self, group, tl, gl, kind, a, b):
        beta1, beta2 = group["betas"]
        lr, eps, wd = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        amsgrad = bool(group["amsgrad"])
        state = self.state
        ms, vs, vmax, steps = [], [], [], []
        for p in tl.tensors:
            st = state[p]
            if not st:
                st["step"] = 0.0
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
            if amsgrad and "max_exp_avg_sq" not in st:
                st["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
            ms.append(st["exp_avg"])
            vs.append(st["exp_avg_sq"])
            if amsgrad:
                vmax.append(st["max_exp_avg_sq"])
            s = st["step"]
            steps.append((float(s) if isinstance(s, Tensor) else s) + 1.0)
        if self._state_loaded:
            self._check_state(tl, ms, vs, vmax)
        for p, s in zip(tl.tensors, steps):
            state[p]["step"] = s
        pre = bool(group.get("precondition_prox", False))
        if not tl.on_cpu:
            return ref.adam_step_(
                tl.tensors,
                gl.tensors,
                ms,
                vs,
                vmax,
                steps,
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                eps=eps,
                weight_decay=wd,
                decoupled=self._decoupled,
                maximize=bool(group["maximize"]),
                amsgrad=amsgrad,
                prox_kind=kind,
                prox_a=a,
                prox_b=b,
                preconditioned=pre,
            )
        cache: dict[float, tuple[float, float]] = {}
        step_size, bc2s = [], []
        for s in steps:
            c = cache.get(s)
            if c is None:
                c = cache[s] = (lr / (1 - beta1**s), (1 - beta2**s) ** 0.5)
            step_size.append(c[0])
            bc2s.append(c[1])
        mp = list(map(Tensor.data_ptr, ms))
        vp = list(map(Tensor.data_ptr, vs))
        xp = list(map(Tensor.data_ptr, vmax))
        return _C.adam_step(
            tl.ptrs,
            tl.numels,
            tl.dtypes,
            gl.ptrs,
            mp,
            vp,
            xp,
            step_size,
            bc2s,
            lr,
            float(beta1),
            float(beta2),
            eps,
            wd,
            self._decoupled,
            bool(group["maximize"]),
            amsgrad,
            kind,
            a,
            b,
            pre,
        )


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
            maximize=maximize,
            precondition_prox=precondition_prox,
            penalty=penalty,
            penalty_mode=penalty_mode,
            penalty_schedule=penalty_schedule,
        )
