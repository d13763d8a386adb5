"""Data-parallel GAN training on PyTorch's own distributed engine.

``torchrun --nproc_per_node=N -m normreg train ...`` (or ``normreg train --nproc N``, which
runs exactly that) starts N processes; each builds the same :class:`~normreg.gan.Trainer`
and, because ``torch.distributed`` is initialized, the trainer trains data-parallel:

* G and D are wrapped in ``torch.nn.parallel.DistributedDataParallel``: gradients are
  all-reduced (averaged) during ``backward``, before the optimizer step, so a weight penalty
  added with ``add_grad_`` and the proximal step of ``ProxAdam`` see the same gradients and
  parameters on every rank and keep the replicas bitwise identical.
* Every step still draws the *global* batch of ``batch_size`` images (the run's seeded
  permutation, as on one process) and its task noise; ``torch.utils.data.DistributedSampler``
  then gives each rank its ``batch_size / N`` rows of it. ``batch_size`` must be a multiple
  of N. So N processes train on the same images as one process, and a checkpoint holds no
  per-rank state: a run resumes with any process count.
* BatchNorm layers use the statistics of the global batch. ``torch.nn.SyncBatchNorm`` only
  runs on accelerators, so on the CPU :class:`GlobalBatchNorm2d` all-reduces the per-channel
  sums with a differentiable all-reduce. N processes then compute the loss and gradients of
  the one-process step (up to floating-point summation order).
* Loss terms are averaged across ranks before they are logged; only rank 0 writes the run
  directory (logs, metrics, samples, checkpoints) and evaluates (the replicas are equal).

Backends: gloo for CPU tensors, nccl for CUDA tensors. The trainer computes on the CPU, so it
trains over gloo (``--backend nccl``, or a process group with nccl alone, is refused with a
message saying so; the mixed ``cpu:gloo,cuda:nccl`` default of ``init_process_group()`` works).
The process group is set up from the environment torchrun provides (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``); :func:`init_from_env` does it for scripts.
"""

from __future__ import annotations

import atexit
import inspect
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DistributedSampler

__all__ = [
    "DistInfo",
    "GlobalBatchNorm2d",
    "env_world_size",
    "check_backend",
    "init_from_env",
    "current",
    "is_main_process",
    "attach",
    "on_main",
    "launch",
    "finish",
]

BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the default process group."""

    rank: int
    world: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when not launched by it)."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable WORLD_SIZE must be an integer, got {raw!r}") from None


def check_backend(backend: str | None, device: str = "cpu") -> str:
    """The backend for processes whose tensors live on ``device`` ("cpu" or "cuda").

    ``None`` picks nccl for CUDA tensors (when this torch has it) and gloo for CPU tensors.
    Raises a ``ValueError`` that says what to use instead when the asked backend cannot run
    here. The GAN trainer computes on the CPU, so it trains with gloo.
    """
    if not dist.is_available():
        raise ValueError(
            "multi-process training needs torch.distributed, which this torch build does not have; "
            "install a torch wheel with distributed support or train with one process"
        )
    if backend is None:
        backend = (
            "nccl" if device == "cuda" and torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
        )
    if backend not in BACKENDS:
        raise ValueError(f"'backend' must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "gloo" and not dist.is_gloo_available():
        raise ValueError("'backend' gloo is not available in this torch build; use nccl with CUDA tensors")
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ValueError(
                "'backend' nccl needs CUDA, but torch.cuda.is_available() is False; use --backend gloo on CPU"
            )
        if not dist.is_nccl_available():
            raise ValueError("'backend' nccl is not available in this torch build; use --backend gloo")
        if device != "cuda":
            raise ValueError(
                f"'backend' nccl only moves CUDA tensors, but these processes compute on {device} "
                "(the GAN trainer runs on the CPU); use --backend gloo"
            )
    return backend


def init_from_env(backend: str | None = None, device: str = "cpu") -> DistInfo | None:
    """Initialize the default process group from torchrun's environment, once.

    Returns ``None`` when this is a single process (``WORLD_SIZE`` unset or 1) and nothing
    was initialized; otherwise the process's :class:`DistInfo`. ``device``: where the
    processes compute (picks the backend, see :func:`check_backend`).
    """
    if dist.is_available() and dist.is_initialized():
        return current()
    if env_world_size() <= 1:
        return None
    backend = check_backend(backend, device)
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE is set but {', '.join(missing)} is not: start the processes with "
            "torchrun (python -m torch.distributed.run) or normreg train --nproc N"
        )
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    atexit.register(finish)
    return current()


def current() -> DistInfo | None:
    """This process's place in the default group, or ``None`` when not data-parallel."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return DistInfo(dist.get_rank(), dist.get_world_size(), str(dist.get_backend()))


def is_main_process() -> bool:
    """True on rank 0 and in a single process: the process that writes files."""
    info = current()
    return info is None or info.is_main


def _device(info: DistInfo) -> torch.device:
    """Where collectives of this backend take their tensors (CPU unless nccl alone)."""
    return (
        torch.device("cpu") if "gloo" in info.backend else torch.device("cuda", torch.cuda.current_device())
    )


def on_main(fn) -> None:
    """Run ``fn`` (file writes) on rank 0 only; every rank learns whether it failed, so an
    error there (e.g. the run directory already holds a run) stops all ranks, not only rank 0."""
    info = current()
    if info is None or info.world == 1:
        fn()
        return
    err: BaseException | None = None
    if info.is_main:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - re-raised below, after telling the others
            err = exc
    flag = torch.tensor([0.0 if err is None else 1.0], device=_device(info))
    dist.all_reduce(flag)
    if err is not None:
        raise err
    if flag.item() > 0:
        raise ValueError(
            f"rank 0 failed while preparing the run directory (its error is above); rank {info.rank} stops too"
        )


# -- BatchNorm over the global batch -------------------------------------------------------------


class _AllReduceSum(torch.autograd.Function):
    """Differentiable all-reduce (sum) over the default group: the backward of a sum over
    ranks all-reduces the incoming gradients. Its backward is itself differentiable (double
    backward, as R1 needs). ``torch.distributed.nn.functional.all_reduce`` does the same but
    is deprecated from torch 2.13, and the functional collectives that replace it have no
    autograd for all-reduce."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return _AllReduceSum.apply(grad.contiguous())


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are those of the global batch.

    The per-channel sums of x and x² and the element count are all-reduced by a
    differentiable all-reduce whose backward all-reduces the incoming gradients, so forward and backward equal BatchNorm on the concatenation of the ranks'
    batches. Statistics are accumulated in float64. Outside training, or without an
    initialized process group, it is a plain ``BatchNorm2d``. It has the parameters,
    buffers and state-dict keys of ``BatchNorm2d``; :func:`global_batchnorm_` turns a
    model's ``BatchNorm2d`` layers into it in place.
    """

    def forward(self, x: Tensor) -> Tensor:
        if (
            not (self.training and dist.is_available() and dist.is_initialized())
            or dist.get_world_size() == 1
        ):
            return super().forward(x)
        self._check_input_dim(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        x64 = x.double()
        count = x64.new_tensor([x.numel() // max(c, 1)])
        stats = _AllReduceSum.apply(torch.cat([x64.sum(dims), (x64 * x64).sum(dims), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * (n / (n - 1).clamp_min(1.0))
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x64 - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.double().view(shape) + self.bias.double().view(shape)
        return y.to(x.dtype)


def global_batchnorm_(model: nn.Module) -> int:
    """Make every ``BatchNorm2d`` of ``model`` a :class:`GlobalBatchNorm2d`, in place (same
    parameter and buffer objects, so optimizers and state dicts are unaffected). Returns
    how many layers changed."""
    n = 0
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = GlobalBatchNorm2d
            n += 1
    return n


# -- the trainer's hooks ---------------------------------------------------------------------------


class DataParallel:
    """What a data-parallel :class:`~normreg.gan.Trainer` holds (``trainer.dist``).

    ``g`` / ``d``: the DDP-wrapped G and D, used for the forward passes whose backward
    trains them; the trainer keeps the plain modules for everything else (state dicts, EMA,
    D's forward in G's step, sampling). ``rows``: this rank's rows of each global batch.
    """

    def __init__(self, info: DistInfo, G: nn.Module, D: nn.Module | None, global_batch: int) -> None:

        self.info = info
        if "gloo" not in info.backend:
            raise ValueError(
                f"the process group's backend is {info.backend!r}, but the GAN trainer computes on the CPU, "
                "which needs gloo: init_process_group('gloo') (normreg train --backend gloo)"
            )
        if global_batch % info.world:
            raise ValueError(
                f"'batch_size' {global_batch} is not divisible by the number of processes ({info.world}): "
                f"every process trains on batch_size / {info.world} images of each batch; pick a multiple of {info.world}"
            )
        self.local_batch = global_batch // info.world
        # torch's sampler over the positions of a global batch: rank r gets r, r + N, ...
        sampler = DistributedSampler(
            range(global_batch), num_replicas=info.world, rank=info.rank, shuffle=False
        )
        self.rows = torch.tensor(list(sampler), dtype=torch.long)
        for m in (G, D):
            if m is not None:
                global_batchnorm_(m)
        # BatchNorm statistics are global, so buffers stay equal: no buffer sync before each
        # forward (still synced once at construction). torch 2.13 renamed the option.
        kw = {_no_buffer_sync(): False}
        self.g = DDP(G, **kw)
        self.d = DDP(D, **kw) if D is not None else None

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    def local(self, t: Tensor | None) -> Tensor | None:
        """This rank's rows of a global-batch tensor."""
        if t is None:
            return None
        return t.index_select(0, self.rows.to(t.device))

    def mean(self, terms: dict[str, float]) -> dict[str, float]:
        """Average the loss terms over the ranks (the global-batch mean for equal shares)."""
        keys = sorted(terms)
        if not keys:
            return dict(terms)
        t = torch.tensor([float(terms[k]) for k in keys], dtype=torch.float64, device=_device(self.info))
        dist.all_reduce(t)
        t /= self.info.world
        return dict(zip(keys, t.tolist(), strict=True))

    def barrier(self) -> None:
        dist.barrier()


def _no_buffer_sync() -> str:

    names = inspect.signature(DDP.__init__).parameters
    return "forward_sync_buffers" if "forward_sync_buffers" in names else "broadcast_buffers"


def attach(G: nn.Module, D: nn.Module | None, global_batch: int) -> DataParallel | None:
    """The trainer's hook: ``DataParallel`` when the default group is initialized with more
    than one process, else ``None`` (one process: nothing changes)."""
    info = current()
    if info is None or info.world == 1:
        return None
    return DataParallel(info, G, D, global_batch)


# -- launcher -------------------------------------------------------------------------------------


def launch(nproc: int, train_argv: Sequence[str], backend: str | None = None) -> int:
    """Run ``python -m torch.distributed.run --standalone --nproc_per_node nproc -m normreg
    train *train_argv`` and return its exit code (what ``normreg train --nproc N`` does)."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"'--nproc' must be a positive integer, got {nproc!r}")
    check_backend(backend)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += ["-m", "normreg", "train", *train_argv]
    if backend is not None:
        cmd += ["--backend", backend]
    return subprocess.call(cmd)


def finish() -> None:
    """Destroy the default process group if it exists (end of ``normreg train``)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
