"""normreg: C++/OpenMP-accelerated norm regularization for PyTorch.

>>> import torch, normreg
>>> model = torch.nn.Linear(4, 2)
>>> loss = normreg.L1(1e-4).value(model.parameters())   # differentiable 0-dim tensor
>>> value = normreg.SquaredL2(1e-4).add_grad_(model.parameters())  # fused, no graph
"""

from __future__ import annotations

import importlib
import os

import torch

from . import distributed, functional, losses, optim, prox
from ._groups import param_groups
from ._loader import _C
from .penalties import L0, L1, ElasticNet, GroupLasso, L2Norm, Linf, Penalty, SquaredL2, Sum

__version__ = "0.1.0"

__all__ = [
    "L1",
    "SquaredL2",
    "ElasticNet",
    "L2Norm",
    "GroupLasso",
    "Linf",
    "L0",
    "Penalty",
    "Sum",
    "distributed",
    "functional",
    "losses",
    "optim",
    "prox",
    "param_groups",
    "set_num_threads",
    "get_num_threads",
    "build_info",
    "__version__",
]

# Let torch set up its thread pool (and so the OpenMP thread count) before any kernel runs.
torch.get_num_threads()


def _follow_torch_after_fork() -> None:
    # A forked child (a DataLoader worker) must not keep the parent's thread override: the
    # parent's OpenMP team does not exist there, and torch sets its workers to 1 thread.
    _C.set_num_threads(0)


os.register_at_fork(after_in_child=_follow_torch_after_fork)


def set_num_threads(n: int | None) -> None:
    """Threads the kernels use. ``None`` or 0: follow ``torch.get_num_threads()`` (default).

    The override is this process's: a forked child (e.g. a DataLoader worker) starts again
    from following torch, so it never waits on the parent's thread team."""
    if n is None:
        n = 0
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"'n' must be an int or None, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"'n' must be >= 0 (0 follows torch.get_num_threads()), got {n}")
    _C.set_num_threads(n)


def get_num_threads() -> int:
    """Threads the next kernel call will use."""
    n = _C.thread_override()
    return n if n > 0 else torch.get_num_threads()


def build_info() -> dict:
    """What was built: version, OpenMP, compiler and flags, threads."""
    info = dict(_C.build_info())
    info["version"] = __version__
    info["threads"] = get_num_threads()
    info["torch"] = torch.__version__
    return info


def __getattr__(name: str):
    # The applications built on the library (the trainer, the studies, the benchmark suite)
    # are not imported by `import normreg` (they pull in data sets, plotting, argparse); the
    # first `normreg.gan` (or `import normreg.gan`) imports them.

    if name in {"gan", "study", "bench"}:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'normreg' has no attribute {name!r}")
