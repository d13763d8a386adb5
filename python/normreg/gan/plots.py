"""PNG output: image grids (Pillow) and loss / metric curves (matplotlib, Agg)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["to_uint8", "save_image", "save_grid", "plot_curves"]


def to_uint8(images: Tensor) -> np.ndarray:
    """``(N, C, H, W)`` in ``[-1, 1]`` -> ``(N, H, W)`` or ``(N, H, W, 3)`` uint8."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    x = x.transpose(0, 2, 3, 1)
    return x[..., 0] if x.shape[-1] == 1 else x


def save_image(image: Tensor, path: str | Path, scale: int = 1) -> None:
    from PIL import Image

    a = to_uint8(image[None])[0]
    im = Image.fromarray(a)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    im.save(path)


def save_grid(
    rows: list[Tensor], path: str | Path, scale: int = 0, pad: int = 1, row_labels: list[str] | None = None
) -> None:
    """Save rows of images (each ``(N, C, S, S)``) as one PNG grid.

    ``scale=0`` upscales small images (nearest) so that each is at least 32 pixels wide.
    Several rows of equal length (input / output / target) are stacked in that order; one
    long row is wrapped into a square-ish grid.
    """
    from PIL import Image

    if len(rows) == 1 and rows[0].shape[0] > 16:
        n = rows[0].shape[0]
        cols = math.ceil(math.sqrt(n))
        rows = [rows[0][i : i + cols] for i in range(0, n, cols)]
    c = max(r.shape[1] for r in rows)
    s = rows[0].shape[-1]
    scale = scale or max(1, 32 // s)
    cols = max(r.shape[0] for r in rows)
    cell = s * scale + pad
    canvas = np.full((len(rows) * cell + pad, cols * cell + pad, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        if r.shape[1] != c:
            r = r.expand(-1, c, -1, -1)
        a = to_uint8(r[:, :3])
        if a.ndim == 3:
            a = np.repeat(a[..., None], 3, -1)
        a = a.repeat(scale, 1).repeat(scale, 2)
        for j in range(a.shape[0]):
            y, x = pad + i * cell, pad + j * cell
            canvas[y : y + s * scale, x : x + s * scale] = a[j]
    Image.fromarray(canvas).save(path)
    _ = row_labels


def plot_curves(run_dir: str | Path, out: str | Path | None = None) -> Path | None:
    """Plot the loss terms of ``log.jsonl`` and the metrics of ``metrics.csv`` into ``curves.png``."""
    import csv

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    logs = []
    log_path = run_dir / "log.jsonl"
    if log_path.is_file():
        for line in log_path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line) if line.strip() else None
            except ValueError:  # a torn line (crash or full disk while writing): skipped
                row = None
            if isinstance(row, dict) and "step" in row:
                logs.append(row)
    mets = []
    met_path = run_dir / "metrics.csv"
    if met_path.is_file():
        with open(met_path, newline="") as fh:
            mets = list(csv.DictReader(fh))
    if not logs and not mets:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    steps = [r["step"] for r in logs]
    raw = [
        k
        for k in (logs[0] if logs else {})
        if k.startswith(("g_", "d_")) and not k.startswith(("g_total", "d_total"))
    ]
    ax = axes[0]
    for k in raw:
        ys = _finite_or_nan([r.get(k) for r in logs])
        if np.isfinite(ys).any():  # non-finite values ("nan", "inf" in log.jsonl) leave gaps
            ax.plot(steps, ys, label=k, lw=1)
    ax.set_title("raw loss terms")
    ax.set_xlabel("step")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.legend(fontsize=7)
    ax = axes[1]
    for k in [
        k for k in (logs[0] if logs else {}) if k.startswith(("w_", "lam_")) or k in ("g_total", "d_total")
    ]:
        ys = _finite_or_nan([r.get(k) for r in logs])
        if np.isfinite(ys).any():
            ax.plot(steps, ys, label=k, lw=1, ls="--" if k.startswith("lam_") else "-")
    ax.set_title("λ-weighted terms, totals and λ")
    ax.set_xlabel("step")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.legend(fontsize=7)
    ax = axes[2]
    if mets:
        ms = [float(r["step"]) for r in mets]
        for k in mets[0]:
            if k in ("step", "split"):
                continue
            ys = []
            for r in mets:
                try:
                    ys.append(float(r[k]))
                except (TypeError, ValueError):
                    ys.append(float("nan"))
            ys_arr = np.array(ys)
            if np.isfinite(ys_arr).any():
                ax.plot(ms, np.where(np.isfinite(ys_arr), ys_arr, np.nan), marker="o", label=k, lw=1)
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.legend(fontsize=7)
    ax.set_title("validation metrics")
    ax.set_xlabel("step")
    fig.tight_layout()
    out = Path(out) if out else run_dir / "curves.png"
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def _finite_or_nan(values) -> np.ndarray:
    """Log values as floats: numbers and the strings "nan"/"inf" log.jsonl uses for non-finite
    values; NaN (a gap in the plot) for infinities, missing and unreadable entries."""
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        try:
            f = float(v) if not isinstance(v, bool) and v is not None else math.nan
        except (TypeError, ValueError):
            f = math.nan
        out[i] = f if math.isfinite(f) else math.nan
    return out
