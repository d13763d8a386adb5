"""Optimizer param groups that leave biases and normalization layers unpenalized."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from torch import nn

__all__ = ["param_groups", "DEFAULT_EXCLUDE"]

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)

#: Excluded by default: normalization layers (by type) and every parameter named ``*bias``.
DEFAULT_EXCLUDE: tuple = (*_NORM_TYPES, "*bias")


def param_groups(
    model: nn.Module,
    penalty,
    exclude: Iterable[type[nn.Module] | str] | None = DEFAULT_EXCLUDE,
    **group_options,
) -> list[dict]:
    """Split ``model``'s trainable parameters into a penalized and an unpenalized group.

    Parameters
    ----------
    model : nn.Module
    penalty : normreg.Penalty
        Stored as the ``"penalty"`` key of the first group (``normreg.optim`` reads it).
    exclude : iterable of module types and/or name patterns
        A parameter is left unpenalized if its owning module is an instance of one of the
        types, or its qualified name (``"net.0.bias"``) matches one of the ``fnmatch``
        patterns. Default: normalization layers and ``"*bias"``. ``None`` excludes nothing.
    **group_options
        Extra keys copied into both groups (e.g. ``lr``).

    Returns
    -------
    list of dict
        ``[{"params": penalized, "penalty": penalty, "param_names": [...]},
        {"params": rest, "penalty": None, "param_names": [...]}]``; an empty group is
        left out. Usable with ``torch.optim`` and ``normreg.optim`` alike.
    """
    from .penalties import Penalty

    if not isinstance(model, nn.Module):
        raise TypeError(f"'model' must be a torch.nn.Module, got {type(model).__name__}")
    if penalty is not None and not isinstance(penalty, Penalty):
        raise TypeError(f"'penalty' must be a normreg penalty (e.g. normreg.L1(1e-4)), got {type(penalty).__name__}")
    types: list[type] = []
    patterns: list[str] = []
    for e in exclude or ():
        if isinstance(e, str):
            patterns.append(e)
        elif isinstance(e, type) and issubclass(e, nn.Module):
            types.append(e)
        else:
            raise TypeError(f"'exclude' entries must be nn.Module subclasses or name patterns, got {e!r}")
    types_t = tuple(types)
    seen: set[int] = set()
    pen, pen_names, rest, rest_names = [], [], [], []
    for mod_name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            full = f"{mod_name}.{pname}" if mod_name else pname
            skip = (types_t and isinstance(module, types_t)) or any(fnmatch.fnmatchcase(full, pat) for pat in patterns)
            (rest if skip else pen).append(p)
            (rest_names if skip else pen_names).append(full)
    groups = []
    if pen:
        groups.append({"params": pen, "penalty": penalty, "param_names": pen_names, **group_options})
    if rest:
        groups.append({"params": rest, "penalty": None, "param_names": rest_names, **group_options})
    if not groups:
        raise ValueError("'model' has no trainable parameters")
    return groups
