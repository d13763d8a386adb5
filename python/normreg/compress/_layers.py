"""Layers, channels and multiply-adds of a model: the measurements compression rests on.

* :func:`channel_norms`: the L2 norm of every output channel of each conv / transposed conv /
  linear layer, and the ``|scale|`` of each channel of each affine normalization layer.
* :func:`prunable_layers`: the layers whose output channels can be removed, each with the
  normalization layer that follows it (read from the module registration order).
* :func:`zero_channels` / :func:`count_zero_channels`: the channels the removal rule
  (docs/compress.md) calls exactly zero.
* :func:`count_macs`: multiply-adds of one forward pass, by forward hooks.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "PrunableLayer",
    "channel_norms",
    "prunable_layers",
    "zero_channels",
    "count_zero_channels",
    "count_macs",
]

_PRODUCERS = (nn.modules.conv._ConvNd, nn.Linear)
#: normalization layers whose channels are independent (a channel can be removed alone)
_CHANNEL_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
#: modules that only reshape: a norm registered after one still follows the layer before it
_SHAPE_ONLY = (nn.Unflatten, nn.Identity)


def check_model(model, arg: str = "model") -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"'{arg}' must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_threshold(threshold, arg: str = "threshold") -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"'{arg}' must be a real number >= 0, got {type(threshold).__name__}")
    t = float(threshold)
    if not (0.0 <= t < math.inf):
        raise ValueError(f"'{arg}' must be finite and >= 0, got {threshold}")
    return t


def out_dim(module: nn.Module) -> int:
    """The dim of ``module.weight`` that indexes output channels (1 for transposed convs)."""
    return 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0


def out_channels(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]


def channel_norms(model: nn.Module) -> OrderedDict[str, Tensor]:
    """Per layer, one number per output channel, in ``model.named_modules()`` order.

    * ``Conv*d`` and ``Linear``: the L2 norm of each output channel's weights
      (``weight[c]``; for ``ConvTranspose*d``, whose weight is laid out ``(in, out/groups,
      ...)``, the slice ``weight[:, c]``, and with ``groups=g`` the input rows of ``c``'s
      group only). The bias is not included.
    * ``BatchNorm*d`` / ``InstanceNorm*d`` with ``affine=True`` and ``GroupNorm``: ``|scale|``
      of each channel (Network Slimming's scaling factors). Norm layers without a scale
      are left out.

    Returns an ordered mapping ``layer name -> float64 tensor of shape (channels,)``
    (detached; computed in float64).
    """
    check_model(model)
    out: OrderedDict[str, Tensor] = OrderedDict()
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if not isinstance(w, Tensor):
            continue
        if isinstance(m, _PRODUCERS):
            w = _weight_rows(m).to(torch.float64)
            out[name] = torch.linalg.vector_norm(w, dim=1)
        elif isinstance(m, (*_CHANNEL_NORMS, nn.GroupNorm)):
            out[name] = w.detach().to(torch.float64).abs()
    return out


@dataclass(frozen=True)
class PrunableLayer:
    """A layer whose output channels can be removed.

    ``norm`` is the normalization layer applied to its output (``None`` if none);
    ``units`` the number of output units per channel (1, except a ``Linear`` whose output is
    unflattened into ``norm``'s channels, e.g. DCGAN's ``Linear(z, C*16) -> (C, 4, 4)``)."""

    name: str
    module: nn.Module
    norm_name: str | None
    norm: nn.Module | None
    units: int = 1

    @property
    def channels(self) -> int:
        return out_channels(self.module) // self.units


def prunable_layers(model: nn.Module) -> list[PrunableLayer]:
    """The conv / transposed-conv / linear layers whose output channels can be removed.

    Read from the registration order of the leaf modules (that of ``named_modules()``):
    a ``BatchNorm*d`` / ``InstanceNorm*d`` registered right after a layer (with only
    ``Unflatten`` / ``Identity`` between) and with a matching channel count is that layer's
    norm; a layer followed so by a ``GroupNorm`` is not prunable (a channel's removal
    changes its group's statistics). The last such layer registered is the output layer
    (its channels are the model's outputs, e.g. an image's) and is left out. Models built
    otherwise may be described wrongly; :func:`normreg.compress.prune_zero_channels` traces
    the real graph and checks its result.
    """
    check_model(model)
    leaves = _leaves(model)
    found: list[PrunableLayer] = []
    last = max((i for i, (_, m) in enumerate(leaves) if isinstance(m, _PRODUCERS)), default=None)
    for i, (name, m) in enumerate(leaves):
        if not isinstance(m, _PRODUCERS) or i == last:
            continue
        norm_name, norm, units, ok = None, None, 1, True
        for nname, nm in leaves[i + 1 :]:
            if isinstance(nm, _SHAPE_ONLY):
                continue
            if isinstance(nm, nn.GroupNorm):
                ok = False
            elif isinstance(nm, _CHANNEL_NORMS):
                c = out_channels(m)
                if nm.num_features == c or (isinstance(m, nn.Linear) and c % nm.num_features == 0):
                    norm_name, norm, units = nname, nm, c // nm.num_features
            break
        if ok:
            found.append(PrunableLayer(name, m, norm_name, norm, units))
    return found


def _weight_rows(layer: nn.Module, units: int = 1) -> Tensor:
    """The layer's weights as ``(channels, -1)``: row ``c`` holds output channel ``c``'s."""
    w = layer.weight.detach()
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):  # (in, out/groups, ...)
        g = layer.groups
        w = w.reshape(g, w.shape[0] // g, *w.shape[1:]).transpose(1, 2)  # (g, out/g, in/g, ...)
    return w.reshape(out_channels(layer) // units, -1)


def _channel_rows(layer: nn.Module, units: int) -> Tensor:
    """(channels, -1): the producer's weights (and bias) that decide each channel."""
    w = _weight_rows(layer, units)
    if layer.bias is not None:
        w = torch.cat([w, layer.bias.detach().reshape(w.shape[0], -1)], 1)
    return w


def channel_is_zero(
    layer: nn.Module,
    norm: nn.Module | None,
    units: int = 1,
    threshold: float = 0.0,
    running_stats: bool = True,
) -> Tensor:
    """Bool per channel: its output after ``norm`` is identically zero (the removal rule).

    Without a norm: every weight and the bias of the channel are zero. With a
    ``BatchNorm`` / ``InstanceNorm``: the shift ``beta`` is zero, and either the scale
    ``gamma`` is zero (whatever the layer computes) or the layer's channel is zero and the
    running mean (if tracked, and ``running_stats``) is zero. ``|v| <= threshold`` counts as
    zero. ``running_stats=False`` ignores the running mean: the rule of train mode, and of eval
    mode once the statistics are re-estimated.
    """
    prod_zero = (_channel_rows(layer, units).abs() <= threshold).all(1)
    if norm is None:
        return prod_zero
    n = norm.num_features
    ones = torch.ones(n, dtype=torch.bool, device=prod_zero.device)
    beta0 = norm.bias.detach().abs() <= threshold if norm.affine else ones
    gamma0 = norm.weight.detach().abs() <= threshold if norm.affine else ~ones
    rm = getattr(norm, "running_mean", None)
    tracked = running_stats and norm.track_running_stats and rm is not None
    mean0 = rm.detach().abs() <= threshold if tracked else ones
    return beta0 & (gamma0 | (prod_zero & mean0))


def zero_channels(
    model: nn.Module, threshold: float = 0.0, running_stats: bool = True
) -> OrderedDict[str, Tensor]:
    """Per prunable layer (:func:`prunable_layers`), a bool tensor: which output channels
    are exactly zero after their normalization layer (the rule of docs/compress.md), so that
    :func:`normreg.compress.prune_zero_channels` removes them.

    ``running_stats=False`` ignores the norm layers' running means (a channel whose weights
    and shift are zero counts even if its running mean has not decayed to 0 yet: it will be
    removable once the statistics are re-estimated, e.g. by ``torch.optim.swa_utils.update_bn``).
    """
    threshold = check_threshold(threshold)
    if not isinstance(running_stats, bool):
        raise TypeError(f"'running_stats' must be True or False, got {type(running_stats).__name__}")
    return OrderedDict(
        (p.name, channel_is_zero(p.module, p.norm, p.units, threshold, running_stats))
        for p in prunable_layers(model)
    )


def count_zero_channels(
    model: nn.Module, threshold: float = 0.0, running_stats: bool = True
) -> tuple[int, int]:
    """``(zero, total)`` output channels over the prunable layers (see :func:`zero_channels`)."""
    masks = zero_channels(model, threshold, running_stats)
    return sum(int(m.sum()) for m in masks.values()), sum(m.numel() for m in masks.values())


def count_macs(model: nn.Module, input_shape: Sequence[int] | torch.Size) -> int:
    """Multiply-adds of one forward pass of ``model`` on an input of ``input_shape``.

    Counted by forward hooks on every ``Conv*d`` (``N * Cout * Cin/groups * prod(k) *
    prod(out spatial)``), ``ConvTranspose*d`` (``N * Cin * Cout/groups * prod(k) * prod(in
    spatial)``: each input pixel scatters a kernel into every output channel of its group) and
    ``Linear`` (``in * out`` per input row). ``input_shape`` includes the batch
    dimension (``(1, C, H, W)`` for one image); biases, norms and activations are not counted.
    The model runs once in eval mode under ``no_grad`` on zeros of its parameters' dtype and
    device; its train/eval mode is restored.
    """
    check_model(model)
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise TypeError(
            f"'input_shape' must be a sequence of ints (e.g. (1, 3, 32, 32)), got {input_shape!r}"
        )
    shape = tuple(input_shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in shape):
        raise ValueError(f"'input_shape' must be positive ints with the batch dim first, got {input_shape!r}")
    p = next(model.parameters(), None)
    x = torch.zeros(
        shape, dtype=p.dtype if p is not None else torch.float32, device=p.device if p is not None else "cpu"
    )
    total = [0]

    def hook(m, inputs, output):
        if isinstance(m, nn.modules.conv._ConvTransposeNd):
            inp = inputs[0]
            spatial = inp.shape[2:] if inp.dim() == m.weight.dim() else inp.shape[1:]
            batch = inp.shape[0] if inp.dim() == m.weight.dim() else 1
            total[0] += (
                batch
                * m.in_channels
                * (m.out_channels // m.groups)
                * math.prod(m.kernel_size)
                * math.prod(spatial)
            )
        elif isinstance(m, nn.modules.conv._ConvNd):
            batched = output.dim() == m.weight.dim()
            spatial = output.shape[2:] if batched else output.shape[1:]
            batch = output.shape[0] if batched else 1
            total[0] += (
                batch
                * m.out_channels
                * (m.in_channels // m.groups)
                * math.prod(m.kernel_size)
                * math.prod(spatial)
            )
        elif isinstance(m, nn.Linear):
            total[0] += inputs[0].numel() // m.in_features * m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _PRODUCERS)]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, t in modes.items():
            m.training = t
    return total[0]
