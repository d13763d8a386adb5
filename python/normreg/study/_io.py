"""Small file helpers shared by the sweep and the studies: atomic writes, stable hashes."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_text",
    "atomic_write_bytes",
    "atomic_savefig",
    "config_key",
    "to_jsonable",
    "read_json",
    "remove_stale_temporaries",
    "prepare_study_dir",
    "resolve_jobs",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Files get the mode open() would give them (0644 under the usual umask 022), not mkstemp's 0600.
_FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.filename in (None, tmp):
            raise OSError(exc.errno, exc.strerror or str(exc), os.fspath(path)) from exc
        raise


def read_json(path: str | os.PathLike) -> Any:
    """``json.loads`` of a file; a corrupt file raises ``ValueError`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{os.fspath(path)!r} is corrupt (not valid JSON: {exc}); delete it or restore it"
        ) from None


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files an interrupted atomic write left in ``folder`` and its
    ``points`` folder (a crash, a kill -9); returns them: this module's ``.NAME.*.tmp`` and
    the trainer's ``.NAME.tmpPID.SUFFIX`` (normreg.gan._files: a study's figures and grids)."""
    gone = []
    for d in (Path(folder), Path(folder) / "points"):
        if d.is_dir():
            for p in d.iterdir():
                if p.name.startswith(".") and ".tmp" in p.name and p.is_file():
                    p.unlink()
                    gone.append(p)
    return gone


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_savefig(fig, path: str | os.PathLike, **kwargs) -> None:
    """``fig.savefig`` through a temporary file and ``os.replace``."""

    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    atomic_write_bytes(path, buf.getvalue())


def to_jsonable(value: Any) -> Any:
    """Plain JSON types for config values and metrics (tuples -> lists, numpy/torch scalars -> floats)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON has no NaN/inf
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy arrays/scalars, torch tensors
        return to_jsonable(value.tolist())
    if hasattr(value, "item"):
        return to_jsonable(value.item())
    return str(value)


def from_jsonable_float(value: Any) -> float:
    """Inverse of :func:`to_jsonable` for one metric: ``"nan"``/``"inf"`` strings back to floats."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan


def config_key(config: dict) -> str:
    """A short stable hash of a fully resolved config dict: the identity of one run."""
    blob = json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]


def prepare_study_dir(
    out: str | os.PathLike, study: str, mode: str, resume: bool, overwrite: bool
) -> dict | None:
    """Check a study's output folder before anything runs; returns the previous ``study.json``
    (a resumed study) or None.

    A folder that is empty or absent is used as it is. A non-empty one needs ``resume`` (its
    ``study.json`` must name the same study and mode) or ``overwrite``, which deletes it only
    when its ``study.json`` names this study: a folder of something else is never deleted.
    """

    out = Path(out)
    manifest = out / "study.json"
    if resume and overwrite:
        raise ValueError("'resume' and 'overwrite' exclude each other")
    if out.exists() and not out.is_dir():
        raise ValueError(f"'out_dir' {os.fspath(out)!r} exists and is not a folder")
    if not (out.is_dir() and any(out.iterdir())):
        return None
    prev = read_json(manifest) if manifest.is_file() else None
    if overwrite:
        if prev is None or prev.get("study") != study:
            raise ValueError(
                f"'out_dir' {os.fspath(out)!r} holds no {study} study (no study.json of one); "
                "refusing to delete it: pick another folder"
            )
        shutil.rmtree(out)
        return None
    if not resume:
        raise ValueError(
            f"'out_dir' {os.fspath(out)!r} is not empty; pass resume=True (--resume) to continue it "
            "or overwrite=True (--overwrite) to start again"
        )
    if prev is None:
        raise ValueError(
            f"'out_dir' {os.fspath(out)!r} holds no {study} study (no study.json); pick another folder"
        )
    if prev.get("study") != study or prev.get("mode") != mode:
        raise ValueError(
            f"'out_dir' holds study {prev.get('study')!r} in mode {prev.get('mode')!r}, not {study!r} in mode "
            f"{mode!r}; pick another folder"
        )
    return prev


def resolve_jobs(jobs: int | None) -> int:
    """A study's worker count: ``None`` is 2 on a machine of 2 or more cores (else 1)."""
    if jobs is None:
        return min(2, os.cpu_count() or 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"'jobs' must be an int >= 1, got {jobs!r}")
    return jobs
