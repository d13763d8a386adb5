"""The run directory: the files a run writes, preparing and truncating them for a resume, and
checking a checkpoint before it is trusted. ``normreg.gan.train`` uses it."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from . import distributed as _dist  # DDP hooks: see normreg.gan.distributed
from ._files import _atomic, _naming, _write_text  # noqa: F401  (re-exported: train, compress)
from .checkpoint import (
    CHECKPOINT,
    PREVIOUS,
    CheckpointError,
    load_checkpoint,
    recover_checkpoint,
    remove_stale_temporaries,
)
from .config import RESUME_MUTABLE, TrainConfig

# Files a run writes; --overwrite removes exactly these (and nothing else) first.
RUN_FILES = ("config.toml", "metrics.csv", "log.jsonl", "summary.json", "curves.png", CHECKPOINT, PREVIOUS)
RUN_DIRS = ("samples", "tensorboard")


class RunDirError(ValueError):
    """The run directory cannot be used as asked (exists, or has no checkpoint to resume)."""


def _prepare_run_dir(run_dir: Path, overwrite: bool, force: bool = False) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"'run_dir' {str(run_dir)!r} exists and is not a folder")
    if run_dir.is_dir():
        ours = [run_dir / f for f in RUN_FILES if (run_dir / f).exists()] + [
            run_dir / d for d in RUN_DIRS if (run_dir / d).exists()
        ]
        if ours and not overwrite:
            raise RunDirError(
                f"run directory {str(run_dir)!r} already holds a run ({', '.join(p.name for p in ours[:4])}...); "
                "pass overwrite=True (--overwrite) to replace it, resume=True (--resume) to continue it, or pick another folder"
            )
        stale = [p for p in run_dir.iterdir() if p.name.startswith(".") and ".tmp" in p.name]
        others = [p for p in run_dir.iterdir() if p not in ours and p not in stale]
        if not ours and others and not force:
            names = ", ".join(sorted(p.name for p in others)[:4])
            raise RunDirError(
                f"run directory {str(run_dir)!r} is not empty and holds no run ({names}"
                f"{', ...' if len(others) > 4 else ''}); pick a new or empty folder, or pass force=True "
                "(--force) to write the run among these files"
            )
        for p in ours:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
        remove_stale_temporaries(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "samples").mkdir(exist_ok=True)


def _read_log_rows(path: Path, step: int | None = None) -> list[str]:
    """The lines of ``log.jsonl`` (up to ``step``); a torn last line (a crash or a full disk
    while writing it) is dropped, any other unreadable line is reported naming the file."""
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    keep = []
    for i, ln in enumerate(lines):
        try:
            row = json.loads(ln)
            s = row["step"]
        except (ValueError, KeyError, TypeError) as exc:
            if i == len(lines) - 1:
                break  # torn last line
            raise ValueError(f"log file {str(path)!r} is corrupt at line {i + 1}: {exc}") from None
        if step is None or s <= step:
            keep.append(ln)
    return keep


def _truncate_logs(run_dir: Path, step: int) -> None:
    """Drop log rows written after the checkpoint we resume from (they will be written again)."""
    log = run_dir / "log.jsonl"
    if log.is_file():
        keep = _read_log_rows(log, step)
        _write_text(log, "".join(ln + "\n" for ln in keep))
    met = run_dir / "metrics.csv"
    if met.is_file():
        with open(met, newline="", errors="replace") as fh:
            rows = [r for r in csv.reader(fh) if r]
        if rows:
            header, body = rows[0], []
            for i, r in enumerate(rows[1:], 2):
                try:
                    s = int(r[0])
                    if len(r) != len(header):
                        raise ValueError(f"{len(r)} fields, the header has {len(header)}")
                except ValueError as exc:
                    if i == len(rows):
                        break  # torn last row
                    raise ValueError(f"metrics file {str(met)!r} is corrupt at line {i}: {exc}") from None
                if s <= step:
                    body.append(r)
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(header)
            w.writerows(body)
            _write_text(met, buf.getvalue())


def _fmt(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (_json_safe(v) if isinstance(v, dict) else _fmt(v)) for k, v in d.items()}


_STATE_KEYS = ("config", "step", "G", "D", "opt_g", "opt_d", "schedules", "rng", "data")


def _check_state(state: Any, path: Path) -> TrainConfig:
    """The config of a loaded checkpoint; ``CheckpointError`` naming ``path`` if its content
    (checksum fine) is not the state of a ``normreg train`` run."""
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a {type(state).__name__}, not the state of a normreg train run",
            path,
        )
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is a valid normreg checkpoint file but not of a normreg train run "
            f"(it has no {', '.join(map(repr, missing))}); pass the checkpoint.pt of a run directory",
            path,
        )
    try:
        return TrainConfig.from_dict(state["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a config this version cannot use: {exc}", path
        ) from None


def _resolve_resume(
    cfg: TrainConfig | None, run_dir: Path, previous: bool
) -> tuple[TrainConfig, dict[str, Any]]:
    if not run_dir.is_dir():
        raise RunDirError(f"cannot resume: run directory {str(run_dir)!r} does not exist")
    if not (run_dir / CHECKPOINT).exists() and not (previous and (run_dir / PREVIOUS).exists()):
        prev = run_dir / PREVIOUS
        hint = f" ({str(prev)!r} exists: add --from-previous to use it)" if prev.exists() else ""
        raise RunDirError(f"cannot resume: {str(run_dir)!r} holds no checkpoint ({CHECKPOINT}){hint}")
    state = load_checkpoint(run_dir, previous=previous)
    saved = _check_state(state, run_dir / (PREVIOUS if previous else CHECKPOINT))
    if cfg is None:
        return saved, state
    bad = {k: v for k, v in saved.diff(cfg).items() if k not in RESUME_MUTABLE}
    if bad:
        k, (a, b) = next(iter(bad.items()))
        raise ValueError(
            f"cannot resume with a different config: '{k}' was {a!r} in the run, now {b!r} "
            f"(only {', '.join(RESUME_MUTABLE)} may change on resume)"
        )
    return cfg, state


def recover_run(run_dir: str | os.PathLike) -> None:
    """Before a resume: put in place a complete checkpoint a crash left as a temporary file
    (said on stderr) and remove the other temporary checkpoints; see ``recover_checkpoint``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return

    def recover() -> None:
        with _naming(run_dir):
            got = recover_checkpoint(run_dir)
        if got is not None:
            _say(
                f"recovered {str(run_dir / CHECKPOINT)!r} (step {got[1]}) from {got[0].name}, a complete "
                "checkpoint whose save was interrupted"
            )

    _dist.on_main(recover)  # DDP hook: rank 0 renames, every rank waits for it


def _say(msg: str) -> None:
    print(f"normreg train: {msg}", file=sys.stderr, flush=True)
