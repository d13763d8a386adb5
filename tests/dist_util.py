"""Run a function on N local processes joined by a gloo process group (tests only).

``run_ranks(fn, world=2, **kwargs)`` spawns ``world`` processes, each initializes gloo on
127.0.0.1 (a free port), calls ``fn(rank, world, group, **kwargs)`` and returns what it
returned, one entry per rank. A process that fails re-raises in the caller with its
traceback; a run that does not finish within ``timeout`` seconds is killed.

Starting the processes (torch, normreg, the process group) costs more than most test
bodies, so test modules share one run: each decorates its rank function with
:func:`register` (at import, i.e. collection) and its fixture calls
``shared_results(fn)``; the first such call runs every registered function, one after the
other, in one spawn, and keeps the results for the others.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["run_ranks", "start_ranks", "free_port", "register", "shared_results"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world, port, out_dir, fn, kwargs):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=120),
    )
    try:
        out = fn(rank, world, dist.group.WORLD, **kwargs)
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


class Ranks:
    """``world`` processes running ``fn``; ``results()`` waits for them (see :func:`run_ranks`)."""

    def __init__(self, fn, world: int, timeout: float, kwargs: dict) -> None:
        self._dir = tempfile.TemporaryDirectory()
        self.fn, self.world, self.timeout = fn, world, timeout
        self.deadline = time.monotonic() + timeout
        self.ctx = mp.start_processes(
            _entry,
            args=(world, free_port(), self._dir.name, fn, kwargs),
            nprocs=world,
            join=False,
            start_method="spawn",
        )

    def results(self) -> list:
        try:
            while not self.ctx.join(timeout=1.0):
                if time.monotonic() > self.deadline:
                    raise TimeoutError(
                        f"{self.fn.__name__} on {self.world} processes did not finish within {self.timeout} s"
                    )
            d = self._dir.name
            return [torch.load(os.path.join(d, f"rank{r}.pt"), weights_only=False) for r in range(self.world)]
        finally:
            for p in self.ctx.processes:
                if p.is_alive():
                    p.kill()
                    p.join()
            self._dir.cleanup()


def start_ranks(fn, world: int = 2, timeout: float = 180.0, **kwargs) -> Ranks:
    """Start ``fn`` on ``world`` processes and return at once; call ``.results()`` later."""
    return Ranks(fn, world, timeout, kwargs)


def run_ranks(fn, world: int = 2, timeout: float = 180.0, **kwargs) -> list:
    return start_ranks(fn, world, timeout, **kwargs).results()


_REGISTERED: dict[str, object] = {}
_SHARED: dict[str, list] = {}


def _key(fn) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def register(fn):
    """Mark ``fn(rank, world, group)`` to run in the shared spawn (a decorator)."""
    _REGISTERED[_key(fn)] = fn
    return fn


def _run_registered(rank, world, group, fns):
    return {_key(fn): fn(rank, world, group) for fn in fns}


def shared_results(fn, world: int = 2, timeout: float = 240.0) -> list:
    """What ``fn`` returned on each rank, from the one spawn shared by every registered
    function (started on the first call)."""
    key = register(fn) and _key(fn)
    if key not in _SHARED:
        todo = [f for k, f in _REGISTERED.items() if k not in _SHARED]
        per_rank = run_ranks(_run_registered, world=world, timeout=timeout, fns=todo)
        for f in todo:
            _SHARED[_key(f)] = [r[_key(f)] for r in per_rank]
    return _SHARED[key]
