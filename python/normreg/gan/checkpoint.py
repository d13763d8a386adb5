"""Atomic, checksummed checkpoints that keep the previous one.

File format: the line ``NORMREG-CKPT 1``, the SHA-256 of the payload in hex on the next line,
then the payload as written by ``torch.save`` (tensors, numbers, strings and lists only, so
it loads with ``weights_only=True``). A write goes to a temporary file in the same folder,
is fsync'ed, the current ``checkpoint.pt`` becomes ``checkpoint.prev.pt``, and the temporary
file is renamed to ``checkpoint.pt``: a crash at any moment leaves a good checkpoint. A crash
between the two renames leaves ``checkpoint.pt`` missing and the complete temporary file
beside ``checkpoint.prev.pt``; ``recover_checkpoint`` (called on resume) verifies it and puts it
in place. A failed write (full disk) removes its temporary file and raises ``OSError`` naming
the checkpoint.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "CHECKPOINT",
    "PREVIOUS",
    "find_checkpoint",
    "recover_checkpoint",
    "remove_stale_temporaries",
]

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
_MAGIC = b"NORMREG-CKPT 1\n"


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated or corrupt. ``previous`` names a good fallback, if any."""

    def __init__(self, message: str, path: Path | None = None, previous: Path | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.previous = previous


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - not all platforms open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def save_checkpoint(payload: dict[str, Any], run_dir: str | Path) -> Path:
    """Write ``payload`` to ``run_dir/checkpoint.pt`` atomically; the old one becomes ``checkpoint.prev.pt``.

    An ``OSError`` (full disk, ...) removes the temporary file and is raised again with the
    checkpoint's path as its ``filename``.
    """
    run_dir = Path(run_dir)
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    digest = hashlib.sha256(body).hexdigest().encode()
    tmp = run_dir / f".{CHECKPOINT}.tmp{os.getpid()}"
    cur = run_dir / CHECKPOINT
    try:
        with open(tmp, "wb") as fh:
            fh.write(_MAGIC)
            fh.write(digest + b"\n")
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        if cur.exists():
            os.replace(cur, run_dir / PREVIOUS)
        os.replace(tmp, cur)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise OSError(exc.errno, exc.strerror or str(exc), str(cur)) from exc
    _fsync_dir(run_dir)
    return cur


def _step_of(path: Path) -> int | None:
    try:
        step = read_checkpoint(path).get("step")
    except CheckpointError:
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def recover_checkpoint(run_dir: str | Path) -> tuple[Path, int] | None:
    """Put in place a complete, verified temporary checkpoint left by a crash during a save.

    A crash between the two renames of ``save_checkpoint`` leaves no ``checkpoint.pt`` (it
    became ``checkpoint.prev.pt``) and the new checkpoint as ``.checkpoint.pt.tmpPID``; a crash
    just before them leaves the old ``checkpoint.pt`` beside the complete new one. A temporary
    file whose checksum verifies and whose step is later than ``checkpoint.pt``'s becomes
    ``checkpoint.pt`` (the current one, if good, becomes ``checkpoint.prev.pt``, as a save
    would have done). Returns ``(temporary file, step)`` when it recovered one, else ``None``;
    the other temporary checkpoints are removed either way.
    """
    run_dir = Path(run_dir)
    best: tuple[int, Path] | None = None
    tmps = sorted(run_dir.glob(f".{CHECKPOINT}.tmp*"))
    for t in tmps:
        step = _step_of(t)
        if step is not None and (best is None or step > best[0]):
            best = (step, t)
    out = None
    cur = run_dir / CHECKPOINT
    if best is not None:
        cur_step = _step_of(cur) if cur.exists() else None
        if cur_step is None or best[0] > cur_step:
            if cur_step is not None:
                os.replace(cur, run_dir / PREVIOUS)
            os.replace(best[1], cur)
            _fsync_dir(run_dir)
            out = (best[1], best[0])
    for t in tmps:
        if t.exists():
            t.unlink()
    return out


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Remove temporary files (``.NAME.tmp*``) a crashed run left in ``run_dir`` and its ``samples``."""
    run_dir = Path(run_dir)
    gone = []
    for folder in (run_dir, run_dir / "samples"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".") and ".tmp" in p.name and p.is_file():
                p.unlink()
                gone.append(p)
    return gone


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and verify one checkpoint file; ``CheckpointError`` if it is truncated or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist", path)
    data = path.read_bytes()
    if not data.startswith(_MAGIC):
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a normreg checkpoint (bad header) or is truncated", path
        )
    rest = data[len(_MAGIC) :]
    nl = rest.find(b"\n")
    if nl != 64:
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated (no checksum line)", path)
    digest, body = rest[:64].decode("ascii", "replace"), rest[65:]
    if hashlib.sha256(body).hexdigest() != digest:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt: its checksum does not match ({len(body)} bytes of payload; "
            "the file was truncated or modified)",
            path,
        )
    try:
        return torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as exc:  # pragma: no cover - checksum passed but content unreadable
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be loaded: {exc}", path) from None


def _previous_hint(prev: Path, how: str | None) -> str:
    if how is None:
        return "resume from it with `normreg train --resume RUN_DIR --from-previous` (or load_checkpoint(..., previous=True))"
    return how.format(prev=str(prev))


def find_checkpoint(path: str | Path, previous_hint: str | None = None) -> Path:
    """``path`` itself if it is a file, else ``path/checkpoint.pt``; ``CheckpointError`` if absent.

    ``previous_hint`` is how the message tells a user to use ``checkpoint.prev.pt`` instead
    (``{prev}`` is its path; default: ``normreg train --resume ... --from-previous``).
    """
    path = Path(path)
    if path.is_dir():
        cand = path / CHECKPOINT
        if not cand.is_file():
            prev = path / PREVIOUS
            hint = f"; {str(prev)!r} exists: {_previous_hint(prev, previous_hint)}" if prev.is_file() else ""
            raise CheckpointError(
                f"no checkpoint in {str(path)!r} (expected {CHECKPOINT}){hint}",
                cand,
                prev if prev.is_file() else None,
            )
        return cand
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist", path)
    return path


def load_checkpoint(
    path: str | Path, previous: bool = False, previous_hint: str | None = None
) -> dict[str, Any]:
    """Load the checkpoint at ``path`` (a file or a run directory).

    With ``previous=True`` and a run directory, load ``checkpoint.prev.pt`` instead. A corrupt
    or truncated checkpoint raises ``CheckpointError`` that names the file and, when the
    previous checkpoint beside it is good, offers it (``err.previous``; ``previous_hint`` as
    in ``find_checkpoint``).
    """
    path = Path(path)
    if previous:
        base = path if path.is_dir() else path.parent
        return read_checkpoint(base / PREVIOUS)
    file = find_checkpoint(path, previous_hint)
    try:
        return read_checkpoint(file)
    except CheckpointError as exc:
        prev = file.parent / PREVIOUS
        if file.name != PREVIOUS and prev.is_file():
            try:
                step = read_checkpoint(prev).get("step")
            except CheckpointError:
                raise exc from None
            raise CheckpointError(
                f"{exc}. The previous checkpoint {str(prev)!r} (step {step}) is good: "
                + _previous_hint(prev, previous_hint),
                file,
                prev,
            ) from None
        raise
