"""A sweep's points: the base config (a TrainConfig, a dict of options or a TOML path), the
seed list, and every (grid point, seed, fold) as a :class:`~normreg.study.runner.Point` with a
validated config. :mod:`.sweep` makes them, :mod:`.runner` runs them; the grid itself is
parsed and expanded by :mod:`.grid`."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from .grid import Backend, _get_dotted, _set_dotted, expand_grid
from .runner import Point


def _base_dict(base, backend: Backend) -> dict:
    if base is None:
        return backend.config_cls().to_dict()
    if isinstance(base, (str, os.PathLike)):
        path = Path(base)
        if not path.is_file():
            raise ValueError(f"'base': config file {os.fspath(path)!r} does not exist")
        return backend.config_cls.from_toml(path).to_dict()
    if isinstance(base, Mapping):
        # validate through the config class (fills defaults, rejects unknown options)
        return backend.config_cls.from_dict(dict(base)).to_dict()
    if hasattr(base, "to_dict"):
        return base.to_dict()
    raise TypeError(
        f"'base' must be a TrainConfig, a dict of options or a TOML path, got {type(base).__name__}"
    )


def _seed_list(seeds, base_seed: int) -> list[int]:
    if isinstance(seeds, bool):
        raise TypeError(f"'seeds' must be a count or a list of ints, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"'seeds' must be >= 1, got {seeds}")
        return [base_seed + i for i in range(seeds)]
    seeds = list(seeds)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"'seeds' must be a positive count or a non-empty list of ints, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"'seeds' has repeated seeds: {seeds}")
    return seeds


def make_points(
    base: dict, grid: Mapping[str, Sequence], seeds: Sequence[int], folds: int, backend: Backend
) -> list[Point]:
    """Every (grid point, seed, fold) as a :class:`Point` with a validated config."""
    folds_field, fold_field = backend.fold_fields
    points = []
    for opts in expand_grid(grid):
        for seed in seeds:
            for fold in range(folds) if folds > 1 else [None]:
                cfg = json.loads(json.dumps(base))  # deep copy of plain data
                for name, value in opts.items():
                    _set_dotted(cfg, name, value)
                cfg["seed"] = seed
                if fold is not None:
                    cfg[folds_field], cfg[fold_field] = folds, fold
                try:  # validate now, before any run starts, and store the normalized dict
                    cfg = backend.config_cls.from_dict(cfg).to_dict()
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"'grid': the point {opts} is not a valid config: {exc}") from exc
                # labels as the config holds them (an int λ becomes the float the config stores)
                labels = {name: _get_dotted(cfg, name) for name in opts}
                points.append(Point(labels=labels, seed=seed, fold=fold, config=cfg))
    return points
