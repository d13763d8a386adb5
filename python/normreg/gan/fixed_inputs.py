"""The fixed inputs of a GAN run and its sample grids: the validation and test inputs every
evaluation uses (the task's corrupted images, or latents; drawn once from their own
generator), the validation rows a sample grid shows, and the grid itself (inputs, outputs and
targets for paired tasks; outputs for unconditional ones). ``normreg.gan.trainer`` holds
them; ``normreg.gan.plots.save_grid`` writes the PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from normreg.gan.plots import save_grid

from .config import TrainConfig
from .data import ImageData, make_inputs

__all__ = ["N_GRID", "eval_inputs", "grid_rows", "save_sample_grid"]

N_GRID = 16  # images in a sample grid


def eval_inputs(cfg: TrainConfig, data: ImageData, device: torch.device) -> dict[str, Tensor]:
    """G's inputs (paired tasks) or latents (unconditional) for the "val" and "test" splits,
    on ``device``; a function of ``cfg.seed`` only."""
    eg = torch.Generator().manual_seed(cfg.seed + 12345)
    out: dict[str, Tensor] = {}
    for split in ("val", "test"):
        x, _ = data.split(split)
        out[split] = (
            make_inputs(cfg, x, eg) if cfg.paired else torch.randn(x.shape[0], cfg.z_dim, generator=eg)
        ).to(device)
    return out


def grid_rows(data: ImageData, n: int) -> Tensor:
    """The rows of the ``n`` validation images that a sample grid shows."""
    # Photo tiles: spread the 16 over the photo (the first 16 tiles are one strip).
    if data.crop_source is not None and n > N_GRID:
        return torch.linspace(0, n - 1, N_GRID).round().long()
    return torch.arange(min(n, N_GRID))


def save_sample_grid(
    cfg: TrainConfig, inputs: Tensor, outputs: Tensor, targets: Tensor, channels: int, path: Path
) -> np.ndarray:
    """Write the sample grid of G's ``outputs`` for ``inputs`` to ``path`` (paired tasks: rows
    of inputs, outputs and ``targets``); returns the grid as an image array."""
    if cfg.paired:
        shown = inputs[:, :channels]
        if cfg.task == "completion":
            m = inputs[:, -1:]
            shown = shown * (1 - m) + m * (-0.5)  # hidden region shown dark gray
        return save_grid([shown, outputs, targets], path)
    return save_grid([outputs], path)
