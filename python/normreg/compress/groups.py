"""Optimizer param groups whose proximal step zeroes whole output channels."""

from __future__ import annotations

from torch import nn

from .._bridge import check_strength
from .._groups import param_groups
from ..penalties import L0, L1, GroupLasso
from ._layers import check_model, prunable_layers

__all__ = ["channel_groups", "METHODS"]

#: the channel penalties :func:`channel_groups` builds
METHODS = ("group_lasso", "slimming", "l0")


def _exact(name: str) -> str:
    """An ``fnmatch`` pattern matching exactly ``name``."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def channel_groups(model: nn.Module, method: str, strength: float, **group_options) -> list[dict]:
    """Param groups for :mod:`normreg.optim` (``ProxAdam(groups, lr, penalty_mode="prox")``)
    that drive whole output channels of the prunable layers to exact zero.

    Only the layers :func:`normreg.compress.prunable_layers` finds are penalized: convs,
    transposed convs and linears whose channels feed other layers (not the output layer,
    whose channels are the image's), each with the normalization layer that follows it. A
    channel is removable when its output after that norm is identically zero (see
    :func:`normreg.compress.zero_channels`), so each method also drives to zero what
    would otherwise keep a zeroed channel alive (a bias, a BatchNorm's shift):

    ``"group_lasso"`` (Wen et al. 2016)
        ``GroupLasso(strength, dim="out")`` on the layers' weights (one group per output
        channel: dim 0 of conv / linear weights, dim 1 of transposed-conv weights), and
        ``L1(strength)`` on their biases and on the following norm's shift. A ``Linear``
        unflattened into channels (DCGAN's first layer) is grouped per output unit, since a
        GroupLasso group is a slice along one dim; its channel goes when all its units do.
    ``"slimming"`` (Network Slimming, Liu et al. 2017; GAN Slimming, Wang et al. 2020)
        ``L1(strength)`` on the following norm layers' scale *and* shift. Liu et al.
        penalize the scale only and drop the shift of a removed channel (an approximation
        fine-tuning repairs); penalizing the shift too makes the removal exact. Layers
        without a norm are not penalized.
    ``"l0"``
        normreg has no group hard threshold (its optimizers' L0 prox is elementwise), so
        this is the elementwise ``L0(strength)`` (hard threshold ``sqrt(2 lr strength)`` per
        entry) on the layers' weights, biases and norm shifts; a channel goes once all its
        entries have fallen under the threshold. It is not an L0 penalty on channel norms.

    Everything else (the output layer, norm scales under ``group_lasso`` / ``l0``, other
    parameters) is in one unpenalized group at the end.

    Parameters
    ----------
    model : nn.Module
    method : {"group_lasso", "slimming", "l0"}
    strength : float >= 0
        λ of every penalized group (an adaptive controller scales it through the
        optimizer's ``penalty_factor`` / ``penalty_schedule``).
    **group_options
        Extra keys copied into every group (e.g. ``lr``).

    Returns
    -------
    list of dict
        :func:`normreg.param_groups`' groups (``"params"``, ``"penalty"``, ``"param_names"``).
    """
    check_model(model)
    if not isinstance(method, str):
        raise TypeError(f"'method' must be one of {', '.join(METHODS)}; got {type(method).__name__}")
    if method not in METHODS:
        raise ValueError(f"'method' must be one of {', '.join(METHODS)}; got {method!r}")
    strength = check_strength(strength, "strength")
    layers = prunable_layers(model)
    if not layers:
        raise ValueError(
            f"'model' ({type(model).__name__}) has no prunable layer: no conv / linear layer whose output "
            "channels feed another layer"
        )
    rules: dict = {}

    def add(module_name: str | None, module: nn.Module | None, pname: str, pen) -> None:
        if module is not None and isinstance(getattr(module, pname, None), nn.Parameter):
            rules[_exact(f"{module_name}.{pname}" if module_name else pname)] = pen

    for p in layers:
        if method == "group_lasso":
            add(p.name, p.module, "weight", GroupLasso(strength, dim="out").for_module(p.module, "weight"))
            add(p.name, p.module, "bias", L1(strength))
            add(p.norm_name, p.norm, "bias", L1(strength))
        elif method == "slimming":
            add(p.norm_name, p.norm, "weight", L1(strength))
            add(p.norm_name, p.norm, "bias", L1(strength))
        else:
            add(p.name, p.module, "weight", L0(strength))
            add(p.name, p.module, "bias", L0(strength))
            add(p.norm_name, p.norm, "bias", L0(strength))
    if not rules:
        raise ValueError(
            f"'method'={method!r}: 'model' has no parameter it can penalize (slimming needs a "
            "BatchNorm / InstanceNorm with affine=True after a prunable layer)"
        )
    return param_groups(model, rules, exclude=None, **group_options)
