"""Optimizer param groups that leave biases and normalization layers unpenalized."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from torch import nn

from normreg.penalties import Penalty

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


def _resolve(penalty, module: nn.Module, name: str):
    """The penalty for one parameter: a layout recipe (``GroupLasso(dim="out")``) made concrete."""
    return penalty.for_module(module, name) if penalty is not None else None


def param_groups(
    model: nn.Module,
    penalty,
    exclude: Iterable[type[nn.Module] | str] | None = DEFAULT_EXCLUDE,
    **group_options,
) -> list[dict]:
    """Split ``model``'s trainable parameters into penalized groups and an unpenalized one.

    Parameters
    ----------
    model : nn.Module
    penalty : normreg.Penalty, or a dict of penalties
        One penalty for every parameter not excluded, stored as the ``"penalty"`` key of its
        group (``normreg.optim`` reads it). Or several: a dict whose keys are module types
        (``nn.Conv2d``) or ``fnmatch`` patterns of qualified parameter names (``"dec.*"``),
        whose values are penalties (or ``None``: unpenalized); a parameter takes the first
        entry that matches it (in the dict's order), and one that matches none is left
        unpenalized.
        A penalty that depends on the layer's layout is made concrete per layer
        (:meth:`normreg.Penalty.for_module`): ``GroupLasso(strength, dim="out")`` groups by output
        channel, which is ``dim=0`` for ``Conv*d`` and ``Linear`` weights and ``dim=1`` for
        ``ConvTranspose*d`` weights (whose layout is ``(in, out, ...)``).
    exclude : iterable of module types and/or name patterns
        A parameter is left unpenalized if its owning module is an instance of one of the
        types, or its qualified name (``"net.0.bias"``) matches one of the ``fnmatch``
        patterns. Default: normalization layers and ``"*bias"``. ``None`` excludes nothing.
    **group_options
        Extra keys copied into every group (e.g. ``lr``).

    Returns
    -------
    list of dict
        One ``{"params", "penalty", "param_names"}`` group per distinct penalty, in the
        order first met, then ``{"params": rest, "penalty": None, "param_names": [...]}``;
        an empty group is left out. With one penalty (and no layout recipe) that is
        ``[penalized, rest]``. Usable with ``torch.optim`` and ``normreg.optim`` alike.
    """

    if not isinstance(model, nn.Module):
        raise TypeError(f"'model' must be a torch.nn.Module, got {type(model).__name__}")
    rules: list[tuple[type | str, Penalty | None]]
    if isinstance(penalty, dict):
        if not penalty:
            raise ValueError(
                "'penalty' is an empty dict; give at least one {module type or name pattern: penalty}"
            )
        rules = []
        for key, pen in penalty.items():
            if not (isinstance(key, str) or (isinstance(key, type) and issubclass(key, nn.Module))):
                raise TypeError(f"'penalty' keys must be nn.Module subclasses or name patterns, got {key!r}")
            if pen is not None and not isinstance(pen, Penalty):
                raise TypeError(
                    f"'penalty'[{key!r}] must be a normreg penalty (e.g. normreg.L1(1e-4)) or None, "
                    f"got {type(pen).__name__}"
                )
            rules.append((key, pen))
    elif penalty is None or isinstance(penalty, Penalty):
        rules = [("*", penalty)]
    else:
        raise TypeError(
            "'penalty' must be a normreg penalty (e.g. normreg.L1(1e-4)) or a dict "
            f"{{module type or name pattern: penalty}}, got {type(penalty).__name__}"
        )
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

    def matches(key, module, full) -> bool:
        return isinstance(module, key) if isinstance(key, type) else fnmatch.fnmatchcase(full, key)

    seen: set[int] = set()
    made: dict[tuple, Penalty] = {}  # one concrete penalty per (rule, layout): layers share it
    groups: dict[int, dict] = {}
    rest, rest_names = [], []
    for mod_name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            full = f"{mod_name}.{pname}" if mod_name else pname
            pen = None
            skip = (types_t and isinstance(module, types_t)) or any(
                fnmatch.fnmatchcase(full, pat) for pat in patterns
            )
            if not skip:
                for k, (key, rule_pen) in enumerate(rules):
                    if matches(key, module, full):
                        if rule_pen is not None:
                            concrete = _resolve(rule_pen, module, pname)
                            pen = made.setdefault((k, repr(concrete)), concrete)
                        break
            if pen is None:
                rest.append(p)
                rest_names.append(full)
            else:
                g = groups.setdefault(
                    id(pen), {"params": [], "penalty": pen, "param_names": [], **group_options}
                )
                g["params"].append(p)
                g["param_names"].append(full)
    out = list(groups.values())
    if rest:
        out.append({"params": rest, "penalty": None, "param_names": rest_names, **group_options})
    if not out:
        raise ValueError("'model' has no trainable parameters")
    return out
