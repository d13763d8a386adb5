"""DTensor arguments and the distributed layer.

Penalties and optimizers detect DTensor arguments (FSDP2 ``fully_shard``,
``distribute_tensor``) and sharded calls (``process_group=``) here and hand them to
:mod:`normreg.distributed`, which sits above the penalties and the prox: it registers itself
when imported (``import normreg`` imports it), so the layers below never import it. Beside
:mod:`normreg._bridge` (which turns plain tensors into kernel arguments), at the bottom of the
package.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor

__all__ = ["dtensor_args", "groups_have_dtensor", "register_distributed", "distributed_impl"]


_DT_MODULE = "torch.distributed.tensor"
_MODULES = sys.modules  # no DTensor can exist before torch.distributed.tensor is imported
_dt_types: dict[type, bool] = {}  # type -> is it a DTensor subclass (cached)


def _is_dt_type(tp: type) -> bool:
    hit = _dt_types.get(tp)
    if hit is None:
        from torch.distributed.tensor import DTensor

        hit = _dt_types[tp] = issubclass(tp, DTensor)
    return hit


def dtensor_args(params):
    """``(params, has_dtensor)``: cheap when torch.distributed.tensor was never imported
    (then no DTensor can exist and ``params`` come back as they are). Otherwise an iterable
    is materialized as a list (returned, so that a generator is not lost) and scanned."""
    if _DT_MODULE not in _MODULES:
        return params, False
    if isinstance(params, Tensor):
        return params, _is_dt_type(type(params))
    if isinstance(params, torch.nn.Module):
        params = list(params.parameters())
    elif isinstance(params, (list, tuple)):
        pass
    elif isinstance(params, (str, bytes, dict)) or not hasattr(params, "__iter__"):
        return params, False  # the regular path raises its TypeError
    else:
        params = list(params)
    return params, any(_is_dt_type(tp) for tp in set(map(type, params)) if isinstance(tp, type))


def groups_have_dtensor(param_groups) -> bool:
    """True when any param of the optimizer's groups is a DTensor (cheap otherwise)."""
    if _DT_MODULE not in _MODULES:
        return False
    return any(_is_dt_type(type(p)) for g in param_groups for p in g["params"])


_distributed = None


def register_distributed(module) -> None:
    """Called once by :mod:`normreg.distributed` when it is imported."""
    global _distributed
    _distributed = module


def distributed_impl():
    """:mod:`normreg.distributed` (registered by its import, which ``import normreg`` makes)."""
    if _distributed is None:
        raise RuntimeError("normreg.distributed is not loaded: import normreg (it imports it)")
    return _distributed
