"""The grid of a sweep: the trainer seam (Backend), option values parsed from the command
line, the grid expanded into points, dotted option names checked against the base config."""

from __future__ import annotations

import difflib
import itertools
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from normreg import gan

# Options a grid may not sweep: they have their own arguments.
_RESERVED = {"seed": "seeds", "fold": "folds", "folds": "folds"}


# ----------------------------------------------------------------------------------------
# The trainer, behind a small seam (the real one by default; tests may pass a stand-in).
# ----------------------------------------------------------------------------------------
@dataclass
class Backend:
    """What a sweep needs from a trainer.

    config_cls : class with ``from_dict``, ``to_dict`` (and ``to_toml``/``from_toml``)
    train      : ``train(cfg, run_dir, overwrite=..., resume=..., progress=...) -> dict``
    evaluate   : ``evaluate(run_dir, split=...) -> dict`` of metrics
    fold_fields: names of the config fields for k-fold CV: (number of folds, held-out fold)
    """

    config_cls: Any
    train: Callable[..., dict]
    evaluate: Callable[..., dict]
    fold_fields: tuple[str, str] = ("folds", "fold")


def default_backend() -> Backend:
    """The real trainer, :mod:`normreg.gan`."""

    return Backend(config_cls=gan.TrainConfig, train=gan.train, evaluate=gan.evaluate)


# ----------------------------------------------------------------------------------------
# Grid parsing and expansion
# ----------------------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """One option value from the command line: TOML literal if it is one, else a string.

    ``"10"`` -> 10, ``"1e-4"`` -> 0.0001, ``"true"`` -> True, ``"l1"`` -> "l1".
    """
    text = text.strip()
    if text.lower() in {"true", "false"}:
        return text.lower() == "true"
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return float(text)  # "1e-4" is not a TOML float (TOML wants "1.0e-4"), "inf", ...
    except ValueError:
        return text


def _parse_values(spec: str) -> list:
    """``"1,10,100"`` or ``"log:1e-4:1e-1:4"`` (4 log-spaced values) or ``"lin:0:1:5"``."""
    m = re.fullmatch(r"\s*(log|lin):([^:]+):([^:]+):(\d+)\s*", spec)
    if m:
        kind, a, b, n = m.group(1), float(m.group(2)), float(m.group(3)), int(m.group(4))
        if n < 1:
            raise ValueError(f"'grid': {spec!r} asks for {n} values; use at least 1")
        if kind == "log":
            if a <= 0 or b <= 0:
                raise ValueError(f"'grid': log-spaced values need positive ends, got {spec!r}")
            if n == 1:
                return [a]
            return [float(f"{a * (b / a) ** (i / (n - 1)):.6g}") for i in range(n)]
        return [a] if n == 1 else [float(f"{a + (b - a) * i / (n - 1):.6g}") for i in range(n)]
    values = [parse_value(v) for v in spec.split(",") if v.strip()]
    if not values:
        raise ValueError(f"'grid': no values in {spec!r}; write name=v1,v2,...")
    return values


def parse_grid(items: Iterable[str]) -> dict[str, list]:
    """``["recon_weight=1,10,100", "weight_penalty=l1,l2"]`` -> ``{name: [values]}``."""
    grid: dict[str, list] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"'grid': {item!r} is not name=v1,v2,...; e.g. --grid recon_weight=1,10,100")
        name, spec = item.split("=", 1)
        name = name.strip()
        if not name:
            raise ValueError(f"'grid': {item!r} has no option name before '='")
        grid[name] = _parse_values(spec)
    return grid


def expand_grid(grid: Mapping[str, Sequence]) -> list[dict]:
    """The cartesian product of a grid, in the grid's order (last name varies fastest)."""
    if not isinstance(grid, Mapping):
        raise TypeError(f"'grid' must be a mapping name -> list of values, got {type(grid).__name__}")
    names = list(grid)
    values = []
    for name in names:
        v = grid[name]
        if isinstance(v, (str, bytes)) or not isinstance(v, Sequence):
            raise TypeError(f"'grid'[{name!r}] must be a list of values, got {type(v).__name__}")
        if len(v) == 0:
            raise ValueError(f"'grid'[{name!r}] is empty; give at least one value")
        values.append(list(v))
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def _get_dotted(d: Mapping, name: str) -> Any:
    cur: Any = d
    for part in name.split("."):
        cur = cur[part]
    return cur


def _set_dotted(d: dict, name: str, value: Any) -> None:
    parts = name.split(".")
    cur = d
    for part in parts[:-1]:
        cur = cur[part]
    cur[parts[-1]] = value


def _all_names(d: Mapping, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        out.append(prefix + k)
        if isinstance(v, Mapping):
            out.extend(_all_names(v, prefix + k + "."))
    return out


def _check_option(base: Mapping, name: str, arg: str) -> None:
    if name in _RESERVED:
        raise ValueError(
            f"'{arg}': {name!r} cannot be swept here; use the '{_RESERVED[name]}' argument instead"
        )
    try:
        _get_dotted(base, name)
    except (KeyError, TypeError):
        names = _all_names(base)
        close = difflib.get_close_matches(name, names, n=3)
        hint = (
            f"; did you mean {', '.join(close)}?" if close else f"; options are: {', '.join(sorted(names))}"
        )
        raise ValueError(f"'{arg}': unknown option {name!r}{hint}") from None
