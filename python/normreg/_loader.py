"""Loads the compiled extension after torch, so both share torch's OpenMP runtime."""

from __future__ import annotations

import torch  # noqa: F401  (must come first: it loads the OpenMP runtime _C binds to)

try:
    from . import _C  # type: ignore[attr-defined]
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "normreg's compiled extension normreg._C could not be loaded. Reinstall with "
        "`pip install .` (or `pip install -e . --no-build-isolation` for development) "
        f"so that it is compiled for this Python and platform. Original error: {exc}"
    ) from exc

__all__ = ["_C"]
