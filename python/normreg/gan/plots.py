"""PNG output: image grids (Pillow) and loss / metric curves (matplotlib, Agg)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ._files import _atomic

__all__ = ["to_uint8", "save_image", "save_grid", "plot_curves", "curves_figure"]


def to_uint8(images: Tensor) -> np.ndarray:
    """``(N, C, H, W)`` in ``[-1, 1]`` -> ``(N, H, W)`` or ``(N, H, W, 3)`` uint8."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    x = x.transpose(0, 2, 3, 1)
    return x[..., 0] if x.shape[-1] == 1 else x


def save_image(image: Tensor, path: str | Path, scale: int = 1) -> None:

    a = to_uint8(image[None])[0]
    im = Image.fromarray(a)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    with _atomic(Path(path)) as tmp:
        im.save(tmp)


def save_grid(
    rows: list[Tensor], path: str | Path, scale: int = 0, pad: int = 1, row_labels: list[str] | None = None
) -> np.ndarray:
    """Save rows of images (each ``(N, C, S, S)``) as one PNG grid.

    ``scale=0`` upscales small images (nearest) so that each is at least 32 pixels wide.
    Several rows of equal length (input / output / target) are stacked in that order; one
    long row is wrapped into a square-ish grid.
    """

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
    with _atomic(Path(path)) as tmp:
        Image.fromarray(canvas).save(tmp)
    _ = row_labels
    return canvas


def _series(rows: list[dict], key: str) -> np.ndarray:
    """``rows[i][key]`` as floats; missing, empty or non-numeric entries become NaN (a gap)."""
    out = []
    for r in rows:
        try:
            out.append(float(r.get(key)))
        except (TypeError, ValueError):
            out.append(float("nan"))
    return np.array(out, dtype=np.float64)


def _plot_lines(ax, xs, rows: list[dict], keys: list[str], log: bool, **kw) -> int:
    """Plot each key's series (finite points; on a log axis only positive ones); returns how many."""
    n = 0
    for k in keys:
        ys = _series(rows, k)
        ys = np.where(np.isfinite(ys) & ((ys > 0) if log else True), ys, np.nan)
        if np.isfinite(ys).any():
            style = kw.get("style", {}).get(k, {})
            ax.plot(xs, ys, label=k, lw=1, **style, **({"marker": "o", "ms": 3} if kw.get("markers") else {}))
            n += 1
    return n


def _wide(rows: list[dict], keys: list[str]) -> bool:
    """A log axis for series that are all positive and span more than a factor of 20."""
    vals = np.concatenate([_series(rows, k) for k in keys]) if keys else np.array([])
    vals = vals[np.isfinite(vals)]
    return bool(vals.size and (vals > 0).all() and vals.max() > 20 * vals.min())


def _finish(ax, title: str, ylabel: str, log: bool, n: int) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if n:
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(
            0.5,
            0.5,
            "not computed for this run",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="gray",
        )
    ax.grid(True, which="major", alpha=0.3)


def plot_curves(run_dir: str | Path, out: str | Path | None = None) -> Path | None:
    """Write ``curves.png`` (or ``out``) from the run's logs; ``None`` when there is nothing to plot."""
    import matplotlib.pyplot as plt

    fig = curves_figure(run_dir)
    if fig is None:
        return None
    out = Path(out) if out else Path(run_dir) / "curves.png"
    with _atomic(out) as tmp:
        fig.savefig(tmp, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return out


def curves_figure(run_dir: str | Path):
    """The figure of ``curves.png`` (``None`` without logs): eight panels, each with its y label.

    Top: the raw loss terms, the λ-weighted terms with the totals, the raw weight penalty
    ``R(w)`` (its own axis: it is orders of magnitude above the losses), the λ values (log
    axis). Bottom: validation PSNR and SSIM, each beside the trivial answer's (dashed), the
    classifier's scores, KID × 10³ beside its floor. A panel's axis is logarithmic when its
    values are positive and span more than a factor of 20.
    """

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
    keys = list(dict.fromkeys(k for r in logs for k in r if k != "step"))
    penalty = [k for k in keys if k in ("g_penalty", "d_penalty")]
    raw = [
        k for k in keys if k.startswith(("g_", "d_")) and k not in penalty and k not in ("g_total", "d_total")
    ]
    weighted = [k for k in keys if k.startswith("w_")] + [k for k in ("g_total", "d_total") if k in keys]
    lams = [k for k in keys if k.startswith("lam_")]
    steps = _series(logs, "step")
    fig, axes = plt.subplots(2, 4, figsize=(19, 8))
    for ax, ks, title, ylabel in (
        (axes[0, 0], raw, "raw loss terms", "loss"),
        (axes[0, 1], weighted, "λ-weighted terms and totals", "loss (λ × term)"),
        (axes[0, 2], penalty, "weight penalty R(w) at strength 1", "R(w)"),
    ):
        log = _wide(logs, ks)
        _finish(ax, title, ylabel, log, _plot_lines(ax, steps, logs, ks, log=log))
    _finish(
        axes[0, 3],
        "λ values in force (0 not shown)",
        "λ",
        True,
        _plot_lines(axes[0, 3], steps, logs, lams, log=True),
    )
    ms = _series(mets, "step")
    cols = [k for k in (mets[0] if mets else {}) if k not in ("step", "split")]
    dashed = {"baseline_psnr": {"ls": "--"}, "baseline_ssim": {"ls": "--"}, "kid_floor": {"ls": "--"}}
    for ax, ks, title, ylabel in (
        (axes[1, 0], ["psnr", "baseline_psnr"], "validation PSNR (baseline: G's input)", "PSNR (dB)"),
        (axes[1, 1], ["ssim", "baseline_ssim"], "validation SSIM (baseline: G's input)", "SSIM"),
        (
            axes[1, 2],
            [k for k in cols if "class" in k],
            "classifier on validation images",
            "accuracy / confidence",
        ),
        (axes[1, 3], ["kid", "kid_floor"], "validation KID × 10³ (floor: real images)", "KID × 10³"),
    ):
        ks = [k for k in ks if k in cols]
        _finish(
            ax, title, ylabel, False, _plot_lines(ax, ms, mets, ks, log=False, markers=True, style=dashed)
        )
    fig.tight_layout()
    return fig


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
