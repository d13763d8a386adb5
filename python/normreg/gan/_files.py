"""Files the trainer writes, atomically: a reader (or a resumed run) sees the old file or
the new one, never half of one, whatever kills the process. The temporary file sits beside
the target with the target's suffix (so Pillow and matplotlib infer the format) and a failed
write names the target, not the temporary."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["_atomic", "_naming", "_write_text"]


@contextlib.contextmanager
def _naming(path: Path):
    """Re-raise an ``OSError`` that does not say which file (a failed write) with ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


@contextlib.contextmanager
def _atomic(path: Path):
    """Yield a temporary path beside ``path`` (same suffix, so writers infer the format); on
    success it replaces ``path``, on an error it is removed and the error names ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
    try:
        with _naming(path):
            yield tmp
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _write_text(path: Path, text: str) -> None:
    with _atomic(path) as tmp:
        tmp.write_text(text)
