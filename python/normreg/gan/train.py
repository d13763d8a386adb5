"""Running the GAN trainer: ``train(cfg, run_dir)``, ``evaluate(run_dir)`` and
``trainer_from_checkpoint``. The step itself (losses, penalty modes, exact resume) is
``normreg.gan.trainer.Trainer``; the loop over the steps (logs, samples, checkpoints, the
summary) is ``normreg.gan.run_loop``; the run directory's files are ``normreg.gan.rundir``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from normreg.gan._tb import check_tensorboard

from . import distributed as _dist  # DDP hooks: see normreg.gan.distributed
from .checkpoint import CHECKPOINT, PREVIOUS, load_checkpoint, remove_stale_temporaries
from .config import TrainConfig
from .nonfinite import ON_NONFINITE, NonFiniteError
from .run_loop import run_loop
from .rundir import (
    RunDirError,
    _check_state,
    _naming,
    _prepare_run_dir,
    _resolve_resume,
    _say,
    _truncate_logs,
    _write_text,
    recover_run,
)
from .trainer import Trainer
from .trainer_setup import resolve_device

__all__ = ["Trainer", "train", "evaluate", "RunDirError", "NonFiniteError", "ON_NONFINITE"]


def train(
    cfg: TrainConfig | None,
    run_dir: str | os.PathLike,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    from_previous: bool = False,
    on_nonfinite: str = "stop",
    force: bool = False,
    progress_every: int = 0,
) -> dict[str, Any]:
    """Train a GAN per ``cfg`` into ``run_dir``; returns the summary (also ``summary.json``).

    Parameters
    ----------
    cfg : TrainConfig or None
        ``None`` only with ``resume=True``: use the run's saved config.
    run_dir : path
        Created if missing. A folder that already holds a run is refused unless
        ``overwrite=True`` (which deletes that run's files only) or ``resume=True``; a
        non-empty folder that holds no run is refused unless ``force=True``.
    resume : bool
        Continue from ``run_dir/checkpoint.pt`` exactly where it stopped. Only
        ``steps`` and the eval / sample / checkpoint / log cadences may differ from the run's
        config. ``from_previous=True`` resumes from ``checkpoint.prev.pt``. A complete
        checkpoint left as a temporary file by a crash during a save is put in place first
        (and said so on stderr); stale temporary files are removed. A run already at
        ``steps`` is evaluated again; one beyond ``steps`` is refused.
    progress : bool
        The run directory first, then a tqdm bar on a terminal, else one line every
        ``progress_every`` steps (0: about 20 lines a run) on stderr.
    stop_after : int, optional
        Stop (with a checkpoint) once this step is reached, as if interrupted.
    on_nonfinite : "stop" or "continue"
        A NaN or infinite loss term or weight: stop at that step (``NonFiniteError``, after
        writing ``summary.json`` with ``status: "diverged"``; the last good checkpoint stays),
        or say so once and train on.

    Returns
    -------
    dict
        status ("finished", "stopped", "interrupted"), steps, seconds, final loss terms,
        ``metrics`` (test split), ``val_metrics``, paths.

    Raises
    ------
    NonFiniteError
        The run diverged (``on_nonfinite="stop"``).
    OSError
        A file could not be written (full disk, ...); ``filename`` names it.
    """
    run_dir = Path(run_dir)
    if overwrite and resume:
        raise ValueError("'overwrite' and 'resume' cannot both be set")
    if cfg is not None and not isinstance(cfg, TrainConfig):
        raise TypeError(f"'cfg' must be a TrainConfig, got {type(cfg).__name__}")
    if on_nonfinite not in ON_NONFINITE:
        raise ValueError(f"'on_nonfinite' must be one of {', '.join(ON_NONFINITE)}, got {on_nonfinite!r}")
    if isinstance(progress_every, bool) or not isinstance(progress_every, int) or progress_every < 0:
        raise ValueError(
            f"'progress_every' must be an int >= 0 (0: about 20 lines a run), got {progress_every!r}"
        )
    state = None
    if resume:
        recover_run(run_dir)
        cfg, state = _resolve_resume(cfg, run_dir, from_previous)
    elif cfg is None:
        raise ValueError("'cfg' is required unless resume=True")
    if stop_after is not None and stop_after < 0:
        raise ValueError(f"'stop_after' must be >= 0, got {stop_after}")
    if state is not None and int(state["step"]) > cfg.steps:
        raise RunDirError(
            f"cannot resume {str(run_dir)!r} to steps={cfg.steps}: the run is already at step {state['step']}; "
            f"ask for more steps (--steps N with N > {state['step']}) to train further"
        )
    if cfg.tensorboard:
        check_tensorboard()  # before anything is written
    trainer = Trainer(cfg)  # loads and checks the data before anything is written
    if state is not None:
        if state["data"]["fingerprint"] != trainer.data.fingerprint():
            raise ValueError(f"cannot resume: the data set {cfg.dataset!r} changed since the run was started")
        trainer.load_state_dict(state)

    def prepare() -> None:
        if state is not None:
            remove_stale_temporaries(run_dir)
            _truncate_logs(run_dir, trainer.step_)
        else:
            _prepare_run_dir(run_dir, overwrite, force)
        (run_dir / "samples").mkdir(exist_ok=True)
        _write_text(run_dir / "config.toml", cfg.to_toml())

    with _naming(run_dir):
        _dist.on_main(prepare)  # DDP hook: only rank 0 writes; its errors stop every rank
    if progress and _dist.is_main_process():
        where = (
            f"resuming at step {trainer.step_} of {cfg.steps}" if state is not None else f"{cfg.steps} steps"
        )
        _say(f"run directory {run_dir} ({where})")
    return run_loop(
        trainer, run_dir, progress, stop_after, on_nonfinite, progress_every, resumed=state is not None
    )


def trainer_from_checkpoint(
    path: str | os.PathLike,
    previous: bool = False,
    previous_hint: str | None = None,
    device: str | None = None,
) -> Trainer:
    """Rebuild a ``Trainer`` (data, models, state) from a run directory or checkpoint file.

    ``previous_hint``: how an error tells the user to use ``checkpoint.prev.pt`` instead (see
    ``normreg.gan.checkpoint.find_checkpoint``). ``device``: where to put it (default: the
    run's own device, or the CPU with a warning when this machine has none of that kind);
    checkpoints load on any device.
    """
    state = load_checkpoint(path, previous=previous, previous_hint=previous_hint)
    p = Path(path)
    cfg = _check_state(state, p / (PREVIOUS if previous else CHECKPOINT) if p.is_dir() else p)
    if device is not None:
        cfg = cfg.replace(device=device)
    else:
        try:
            resolve_device(cfg.device)
        except ValueError as exc:
            warnings.warn(f"{exc}; loading the checkpoint on the CPU instead", UserWarning, stacklevel=2)
            cfg = cfg.replace(device="cpu")
    trainer = Trainer(cfg)
    if state["data"]["fingerprint"] != trainer.data.fingerprint():
        raise ValueError(
            f"the data set {cfg.dataset!r} is not the one this checkpoint was trained on (it changed)"
        )
    trainer.load_state_dict(state)
    return trainer


def evaluate(
    run_dir_or_checkpoint: str | os.PathLike, split: str = "test", device: str | None = None
) -> dict[str, Any]:
    """Metrics of a trained run's EMA generator on ``split`` ("val" or "test").

    Returns psnr and ssim (paired tasks; ``inf`` PSNR for perfect outputs) beside
    baseline_psnr and baseline_ssim (the trivial answer: G's input itself, i.e. the masked,
    noisy or bicubic-upsampled image), classifier_score
    (accuracy of the cached real-data classifier on generated images; paired tasks) beside
    real_classifier_score (its accuracy on the real images), class_confidence (mean top
    probability; also for unconditional runs), kid against the real split in the classifier's
    features and kid_floor (a real training sample against the same split), both x 10^3,
    ``notes`` (why a metric is absent), plus ``step``.
    """
    if split not in ("val", "test"):
        raise ValueError(f"'split' must be 'val' or 'test', got {split!r}")
    trainer = trainer_from_checkpoint(run_dir_or_checkpoint, device=device)
    out = trainer.evaluate(split)
    out["step"] = trainer.step_
    out["split"] = split
    return out
