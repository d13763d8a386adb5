"""Proximal optimizers: ProxSGD, ProxAdam, ProxAdamW, λ schedules and the penalty scheduler.

Laid out like :mod:`torch.optim`: :mod:`.sgd`, :mod:`.adam`, :mod:`.penalty_scheduler`,
and :mod:`._base` (what the optimizers share: the step loop, ``state_dict``), with a group's
penalty in :mod:`._group_penalty` and the hyperparameters' checks in :mod:`._args`.

Each is a :class:`torch.optim.Optimizer` whose ``step`` runs one fused C++ pass per param
group: moment updates, the parameter update and the proximal step of the group's
penalty with threshold ``lr * l``, counting the zeros it writes. With no penalty (or every
strength 0) a step is bitwise torch.optim.SGD / Adam / AdamW's (see "Like torch.optim").

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
A :class:`PenaltyScheduler` (``normreg.optim.PenaltyScheduler(opt, schedule)``, stepped
after ``opt.step()`` like an lr scheduler) writes ``schedule(k)`` into every group's
``"penalty_factor"``, by which the group's penalty is multiplied; it composes with lr
schedulers. Schedules: :class:`Constant`, :class:`LinearWarmup`, :class:`Cosine`, any
callable, or a :class:`SparsityController` that adjusts the factor after each step to reach
a target fraction of zeros. The older ``penalty_schedule=`` argument (the optimizer calls
the schedule at its k-th ``step()``) still works; its step count and the schedule's state
are part of ``state_dict()``.

Like torch.optim
----------------
Without a penalty (or at strength 0) a step is bitwise torch.optim.SGD / Adam / AdamW's
with the same arguments, in float32 and float64. ``state_dict()`` holds only tensors and
plain data (penalties as specs such as ``{"kind": "l1", "strength": 1e-4}``) and loads with
``torch.load(weights_only=True)``; torch.optim's SGD / Adam / AdamW state_dicts load into the
matching normreg optimizer (penalties kept from the constructor's groups) and the reverse.
torch's ``foreach``, ``fused``, ``capturable`` and ``differentiable`` arguments are accepted
(see each class). Every tensor a step writes has its version counter bumped.

Penalty as a proximal step or as a gradient
-------------------------------------------
``penalty_mode="prox"`` (the default) takes the proximal step above. ``penalty_mode="grad"``
adds the penalty's (sub)gradient to each gradient instead, in the same fused pass:
``opt.step()`` then equals ``penalty.add_grad_(params); opt.step()`` of the unpenalized
optimizer (bitwise for ProxSGD in every dtype with L1 / SquaredL2 / ElasticNet and their
sums; for ProxAdam / ProxAdamW to within rounding, their unpenalized step being torch's) but
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

from ._group_penalty import penalty_from_spec, penalty_spec
from .adam import ProxAdam, ProxAdamW
from .penalty_scheduler import Constant, Cosine, LinearWarmup, PenaltyScheduler, SparsityController
from .sgd import ProxSGD

__all__ = [
    "ProxSGD",
    "ProxAdam",
    "ProxAdamW",
    "PenaltyScheduler",
    "Constant",
    "LinearWarmup",
    "Cosine",
    "SparsityController",
    "penalty_spec",
    "penalty_from_spec",
]
