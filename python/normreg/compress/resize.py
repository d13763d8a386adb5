"""A model of the pruned widths from its state dict, and the statistics of zeroed channels.

* :func:`fit_to_state_dict`: give the layers of a freshly built (dense) model the channel
  counts of a pruned model's state dict, so that ``load_state_dict`` loads it: how a pruned
  checkpoint is loaded without torch-pruning and without pickling modules.
* :func:`settle_zero_channels`: set the running mean of every channel whose weights, bias and
  shift are exactly zero to 0, which is what re-estimating the statistics gives for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ._layers import _CHANNEL_NORMS, _leaves, channel_is_zero, check_model, prunable_layers

__all__ = ["fit_to_state_dict", "settle_zero_channels"]


def _resize(module: nn.Module, name: str, new: Mapping[str, Tensor], prefix: str) -> None:
    for pname, old in list(module.named_parameters(recurse=False)) + list(
        module.named_buffers(recurse=False)
    ):
        key = f"{prefix}{pname}"
        if key not in new or old is None or new[key].shape == old.shape:
            continue
        t = torch.empty(new[key].shape, dtype=old.dtype, device=old.device)
        if isinstance(old, nn.Parameter):
            setattr(module, pname, nn.Parameter(t, requires_grad=old.requires_grad))
        else:
            setattr(module, pname, t)


def fit_to_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> nn.Module:
    """Resize ``model``'s layers in place to the channel counts of ``state_dict``.

    For a model built with the dense widths and the state dict of a pruned copy (what
    :func:`normreg.compress.prune_zero_channels` returns): every ``Conv*d`` / ``ConvTranspose*d``
    / ``Linear`` / ``BatchNorm*d`` / ``InstanceNorm*d`` whose tensors have other shapes in
    ``state_dict`` gets new (uninitialized) tensors of those shapes and its
    ``in_channels`` / ``out_channels`` / ``in_features`` / ``out_features`` / ``num_features``
    set to match; an ``nn.Unflatten`` after a resized ``Linear`` gets its leading size from the
    layer's outputs. Then ``state_dict`` is loaded (strict). Returns ``model``.

    Raises ``ValueError`` when a shape differs in something other than a channel count
    (kernel sizes, a grouped conv) or ``state_dict`` does not load into the result.
    """
    check_model(model)
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"'state_dict' must be a mapping of names to tensors, got {type(state_dict).__name__}"
        )
    prev_linear: nn.Linear | None = None
    for name, m in _leaves(model):
        prefix = f"{name}." if name else ""
        if isinstance(m, nn.modules.conv._ConvNd):
            key = f"{prefix}weight"
            if key in state_dict and state_dict[key].shape != m.weight.shape:
                w = state_dict[key]
                if m.groups != 1 or tuple(w.shape[2:]) != tuple(m.weight.shape[2:]):
                    raise ValueError(
                        f"fit_to_state_dict: {name!r} ({type(m).__name__}) has weight {tuple(m.weight.shape)}, the "
                        f"state dict {tuple(w.shape)}: only channel counts of ungrouped convs can differ"
                    )
                _resize(m, name, state_dict, prefix)
                a, b = int(w.shape[0]), int(w.shape[1])
                if isinstance(m, nn.modules.conv._ConvTransposeNd):  # (in, out, ...)
                    m.in_channels, m.out_channels = a, b
                else:
                    m.out_channels, m.in_channels = a, b
        elif isinstance(m, nn.Linear):
            key = f"{prefix}weight"
            if key in state_dict and state_dict[key].shape != m.weight.shape:
                _resize(m, name, state_dict, prefix)
                m.out_features, m.in_features = (int(s) for s in state_dict[key].shape)
        elif isinstance(m, _CHANNEL_NORMS):
            shapes = [
                state_dict[f"{prefix}{k}"].shape
                for k in ("weight", "running_mean")
                if f"{prefix}{k}" in state_dict
            ]
            if shapes and shapes[0][0] != m.num_features:
                _resize(m, name, state_dict, prefix)
                m.num_features = int(shapes[0][0])
        elif isinstance(m, nn.Unflatten) and prev_linear is not None:
            size = tuple(m.unflattened_size)
            rest = math.prod(size[1:])
            if prev_linear.out_features != math.prod(size) and prev_linear.out_features % rest == 0:
                m.unflattened_size = (prev_linear.out_features // rest, *size[1:])
        if isinstance(m, nn.Linear):
            prev_linear = m
        elif not isinstance(m, (nn.Unflatten, nn.Identity)):
            prev_linear = None
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise ValueError(
            f"fit_to_state_dict: the state dict does not load into the resized model: {e}"
        ) from e
    return model


@torch.no_grad()
def settle_zero_channels(model: nn.Module) -> int:
    """Set to 0 the running mean of every prunable channel whose weights, bias and norm shift
    are exactly zero; returns how many channels changed.

    Such a channel's batch mean is exactly 0 at every step (its layer outputs exact zeros), so
    0 is what ``torch.optim.swa_utils.update_bn`` would estimate for it; only the running mean's
    slow decay (``(1 - momentum)^n``, which in float32 stalls at a subnormal) keeps it from 0.
    Afterwards the channel is zero by the eval-mode removal rule and
    :func:`normreg.compress.prune_zero_channels` removes it. Other channels are not touched.
    """
    check_model(model)
    changed = 0
    for p in prunable_layers(model):
        norm = p.norm
        rm = getattr(norm, "running_mean", None) if norm is not None else None
        if rm is None:
            continue
        z = channel_is_zero(p.module, norm, p.units, 0.0, running_stats=False)
        # only channels whose layer itself is zero (slimming's zero scale needs no statistics)
        prod_zero = channel_is_zero(p.module, None, p.units, 0.0)
        sel = z & prod_zero & (rm != 0)
        changed += int(sel.sum())
        rm[sel] = 0.0
    return changed
