"""Running the GAN trainer: ``train(cfg, run_dir)``, ``evaluate(run_dir)`` and
``trainer_from_checkpoint``. The step itself (losses, penalty modes, exact resume) is
``normreg.gan.trainer.Trainer``; the run directory's files are ``normreg.gan.rundir``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from normreg.gan._tb import TensorBoardLogger, check_tensorboard
from normreg.gan.plots import plot_curves

from . import distributed as _dist  # DDP hooks: see normreg.gan.distributed
from .checkpoint import (
    CHECKPOINT,
    PREVIOUS,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from .config import TrainConfig
from .evaluation import METRIC_FIELDS
from .rundir import (
    RunDirError,
    _check_state,
    _fmt,
    _json_safe,
    _naming,
    _prepare_run_dir,
    _resolve_resume,
    _say,
    _truncate_logs,
    _write_text,
    recover_run,
)
from .trainer import (
    ON_NONFINITE,
    NonFiniteError,
    Trainer,
    resolve_device,
)

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
    return _run(
        trainer, run_dir, progress, stop_after, on_nonfinite, progress_every, resumed=state is not None
    )


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def _progress_line(step: int, total: int, terms: dict[str, float], rate: float) -> str:
    shown = [f"{k} {terms[k]:.4g}" for k in ("g_total", "d_total", "g_recon", "g_adv") if k in terms]
    eta = (total - step) / rate if rate > 0 else math.inf
    return f"step {step}/{total}  " + "  ".join(shown) + f"  {rate:.3g} steps/s  ETA {_duration(eta)}"


def _run(
    trainer: Trainer,
    run_dir: Path,
    progress: bool,
    stop_after: int | None,
    on_nonfinite: str = "stop",
    progress_every: int = 0,
    resumed: bool = False,
) -> dict[str, Any]:

    cfg = trainer.cfg
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    fields = ["step", "split", *METRIC_FIELDS]
    met_path = run_dir / "metrics.csv"
    log_path = run_dir / "log.jsonl"
    main = trainer.dist is None or trainer.dist.is_main  # DDP hook: only rank 0 writes files
    if main and not met_path.exists():
        with _naming(met_path), open(met_path, "w", newline="") as fh:
            csv.writer(fh).writerow(fields)
    t0 = time.perf_counter()
    start_step = trainer.step_
    tty = sys.stderr.isatty()
    bar = tqdm(
        total=cfg.steps,
        initial=trainer.step_,
        disable=not progress or not tty or not main,
        desc=f"{cfg.task}/{cfg.dataset.split(':')[0]}",
        dynamic_ncols=True,
    )
    # Without a terminal: one line every `every` steps (the same steps on every DDP rank,
    # since loss_terms() is collective there).
    every = progress_every or max(cfg.log_every, round(cfg.steps / 20 / cfg.log_every) * cfg.log_every)
    lines = progress and not tty and main
    last: dict[str, float] = {}
    interrupted = False
    tb = _tensorboard(trainer, run_dir) if main else None
    bad: tuple[int, str, float] | None = None
    last_ckpt = start_step if resumed else None
    try:
        with contextlib.ExitStack() as stack:
            with _naming(log_path):
                log = open(log_path if main else os.devnull, "a")  # noqa: SIM115 - closed below
            # every row is flushed when written: closing has nothing left to write, and must not
            # replace a write error (full disk) that names the file with one that does not
            stack.callback(_close_quietly, log)
            while trainer.step_ < end:
                trainer.step()
                s = trainer.step_
                # DDP hook: each rank's loss terms are its own; weights agree on every rank
                nonfinite = trainer.first_nonfinite(terms=trainer.dist is None)
                logged = s % cfg.log_every == 0 or s == end or nonfinite is not None
                if logged or s % every == 0:
                    last = trainer.loss_terms()
                    if nonfinite is None and trainer.dist is not None and logged:
                        # DDP hook: the rank-mean loss terms, the same on every rank
                        nonfinite = next(((k, v) for k, v in last.items() if not math.isfinite(v)), None)
                if logged:
                    with _naming(log_path):
                        log.write(json.dumps({"step": s, **_json_safe(last)}) + "\n")
                        log.flush()
                    if tb is not None:
                        tb.scalars(s, last)
                    post = {k: f"{last[k]:.3g}" for k in ("g_total", "d_total") if k in last}
                    post.update(
                        {
                            k[4:]: f"{v:.3g}"
                            for k, v in last.items()
                            if k.startswith("lam_") and k != "lam_adv"
                        }
                    )
                    bar.set_postfix(post, refresh=False)
                if nonfinite is not None and bad is None:
                    bad = (s, *nonfinite)
                    if on_nonfinite == "stop":
                        break
                    if main:
                        _say(
                            f"warning: non-finite {_label(bad[1])} = {bad[2]} at step {s}; "
                            "training on (on_nonfinite='continue')"
                        )
                bar.update(1)
                if lines and (s % every == 0 or s == end):
                    rate = (s - start_step) / max(time.perf_counter() - t0, 1e-9)
                    print(_progress_line(s, cfg.steps, last, rate), file=sys.stderr, flush=True)
                if main and (s % cfg.sample_every == 0 or s == cfg.steps):
                    grid = _sample(trainer, run_dir / "samples" / f"step_{s:06d}.png")
                    if tb is not None:
                        tb.grid(s, grid)
                if main and (s % cfg.eval_every == 0 or s == cfg.steps):
                    m = trainer.evaluate("val")
                    if tb is not None:
                        tb.metrics(s, "val", m)
                    with _naming(met_path), open(met_path, "a", newline="") as fh:
                        csv.writer(fh).writerow(
                            [s, "val", *[_fmt(m[k]) if m[k] is not None else "" for k in METRIC_FIELDS]]
                        )
                if s % cfg.checkpoint_every == 0 or s == end:
                    if main:
                        save_checkpoint(trainer.state_dict(), run_dir)
                    last_ckpt = s
    except KeyboardInterrupt:
        interrupted = True
        if main:
            save_checkpoint(trainer.state_dict(), run_dir)
        print(
            f"\ninterrupted at step {trainer.step_}; checkpoint saved. Continue with: normreg train --resume {run_dir}",
            file=sys.stderr,
        )
    finally:
        bar.close()
        if tb is not None:
            tb.close()
    seconds = time.perf_counter() - t0
    diverged = bad is not None and on_nonfinite == "stop" and not interrupted
    if main:
        _plot(run_dir)
    done = trainer.step_ >= cfg.steps and not diverged
    summary: dict[str, Any] = {
        "status": "diverged"
        if diverged
        else "interrupted"
        if interrupted
        else "finished"
        if done
        else "stopped",
        "task": cfg.task,
        "dataset": cfg.dataset,
        "steps": trainer.step_,
        "finished": done,
        "interrupted": interrupted,
        "seconds": round(seconds, 2),
        "image_size": trainer.data.image_size,
        "num_train": int(trainer.data.splits["train"].numel()),
        "num_val": int(trainer.data.splits["val"].numel()),
        "num_test": int(trainer.data.splits["test"].numel()),
        **({"num_photos": trainer.data.num_photos} if trainer.data.num_photos else {}),
        "device": str(trainer.device),
        "params_g": sum(p.numel() for p in trainer.G.parameters()),
        "params_d": sum(p.numel() for p in trainer.D.parameters()) if trainer.D is not None else 0,
        "losses": last or (trainer.loss_terms() if hasattr(trainer, "_last") else {}),
        "checkpoint": CHECKPOINT,
    }
    message = None
    if bad is not None:
        summary["nonfinite"] = {"step": bad[0], "name": bad[1], "value": bad[2]}
        if diverged:
            where = (
                f"the last good checkpoint ({CHECKPOINT}, step {last_ckpt}) is kept"
                if last_ckpt is not None
                else "no checkpoint was written before it"
            )
            message = (
                f"non-finite {_label(bad[1])} = {bad[2]} at step {bad[0]}: the run stopped there and "
                f"{where}; lower the weights or learning rates, or pass on_nonfinite='continue' "
                "(--on-nonfinite continue) to train on anyway"
            )
            summary["checkpoint_step"] = last_ckpt
            summary["error"] = message
    if trainer.dist is not None:
        summary["processes"] = trainer.dist.info.world
    if not main:  # DDP hook: rank 0 evaluates and writes the summary
        if diverged:
            raise NonFiniteError(message, bad[0], bad[1], bad[2], _json_safe(summary))
        return _json_safe(summary)
    if done:
        summary["val_metrics"] = trainer.evaluate("val")
        summary["metrics"] = trainer.evaluate("test")
        _sample(trainer, run_dir / "samples" / "final.png")
    summary = _json_safe(summary)
    _write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    if diverged:
        raise NonFiniteError(message, bad[0], bad[1], bad[2], summary)
    if interrupted:
        raise KeyboardInterrupt
    return summary


def _tensorboard(trainer: Trainer, run_dir: Path):
    if not trainer.cfg.tensorboard:
        return None

    return TensorBoardLogger(run_dir, purge_step=trainer.step_ + 1 if trainer.step_ else None)


def _close_quietly(fh) -> None:
    with contextlib.suppress(OSError):
        fh.close()


def _label(name: str) -> str:
    if name.startswith("weight "):
        return name
    return f"λ {name!r}" if name.startswith("lam_") else f"loss term {name!r}"


def _plot(run_dir: Path) -> None:
    with warnings.catch_warnings():  # (plot_curves writes atomically)
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow of huge λ on the symlog axis
        plot_curves(run_dir)


def _sample(trainer: Trainer, path: Path) -> None:
    trainer.sample_grid(path)  # save_grid writes atomically


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
