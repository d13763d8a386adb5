"""Atomic, checksummed checkpoints that keep the previous one.

File format: the line ``NORMREG-CKPT 1``, the SHA-256 of the payload in hex on the next line,
then the payload as written by ``torch.save`` (tensors, numbers, strings and lists only, so
it loads with ``weights_only=True``). A write goes to a temporary file in the same folder,
is fsync'ed, the current ``checkpoint.pt`` becomes ``checkpoint.prev.pt``, and the temporary
file is renamed to ``checkpoint.pt``: a crash at any moment leaves a good checkpoint.
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
    """Write ``payload`` to ``run_dir/checkpoint.pt`` atomically; the old one becomes ``checkpoint.prev.pt``."""
    run_dir = Path(run_dir)
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    digest = hashlib.sha256(body).hexdigest().encode()
    tmp = run_dir / f".{CHECKPOINT}.tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(_MAGIC)
        fh.write(digest + b"\n")
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    cur = run_dir / CHECKPOINT
    if cur.exists():
        os.replace(cur, run_dir / PREVIOUS)
    os.replace(tmp, cur)
    _fsync_dir(run_dir)
    return cur


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


def find_checkpoint(path: str | Path) -> Path:
    """``path`` itself if it is a file, else ``path/checkpoint.pt``; ``CheckpointError`` if absent."""
    path = Path(path)
    if path.is_dir():
        cand = path / CHECKPOINT
        if not cand.is_file():
            prev = path / PREVIOUS
            hint = f"; {str(prev)!r} exists: use it with --from-previous" if prev.is_file() else ""
            raise CheckpointError(
                f"no checkpoint in {str(path)!r} (expected {CHECKPOINT}){hint}",
                cand,
                prev if prev.is_file() else None,
            )
        return cand
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist", path)
    return path


def load_checkpoint(path: str | Path, previous: bool = False) -> dict[str, Any]:
    """Load the checkpoint at ``path`` (a file or a run directory).

    With ``previous=True`` and a run directory, load ``checkpoint.prev.pt`` instead. A corrupt
    or truncated checkpoint raises ``CheckpointError`` that names the file and, when the
    previous checkpoint beside it is good, offers it (``err.previous``).
    """
    path = Path(path)
    if previous:
        base = path if path.is_dir() else path.parent
        return read_checkpoint(base / PREVIOUS)
    file = find_checkpoint(path)
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
                f"{exc}. The previous checkpoint {str(prev)!r} (step {step}) is good: resume from it with "
                "`normreg train --resume RUN_DIR --from-previous` (or load_checkpoint(..., previous=True))",
                file,
                prev,
            ) from None
        raise
