"""The loop of a GAN run: ``run_loop`` steps a ``Trainer`` to the end (or ``stop_after``) and
writes as it goes (``log.jsonl`` and ``metrics.csv`` rows, sample grids, checkpoints,
TensorBoard), shows progress (a tqdm bar, or lines on stderr), stops at a NaN / inf or an
interrupt with a checkpoint, and ends with ``curves.png`` and the summary (``summary.json``).
``normreg.gan.train`` sets the run up (config, resume, the run directory) and calls it; the
run directory's files are ``normreg.gan.rundir``.
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

from normreg.gan._tb import TensorBoardLogger
from normreg.gan.plots import plot_curves

from .checkpoint import CHECKPOINT, save_checkpoint
from .evaluation import METRIC_FIELDS
from .nonfinite import NonFiniteError
from .rundir import _fmt, _json_safe, _naming, _say, _write_text
from .trainer import Trainer

__all__ = ["run_loop"]


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


def run_loop(
    trainer: Trainer,
    run_dir: Path,
    progress: bool,
    stop_after: int | None,
    on_nonfinite: str = "stop",
    progress_every: int = 0,
    resumed: bool = False,
) -> dict[str, Any]:
    """Train ``trainer`` to its ``steps`` (or ``stop_after``) in ``run_dir``, which ``train``
    prepared; returns the summary (see ``normreg.gan.train.train`` for the arguments)."""
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
