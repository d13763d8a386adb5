"""``normreg sample``: generated images from a checkpoint, as PNG files."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from normreg.gan.readers import read_folder
from normreg.gan.train import trainer_from_checkpoint

from .config import TrainConfig
from .data import make_inputs
from .plots import save_grid, save_image

__all__ = ["sample"]


def sample(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    n: int = 16,
    split: str = "test",
    inputs: str | os.PathLike | None = None,
    seed: int = 0,
    use_ema: bool = True,
    scale: int = 0,
) -> list[Path]:
    """Write ``n`` generated images (and a ``grid.png``) to ``out_dir``; returns the paths.

    Unconditional runs draw latents from ``seed``. Paired runs fill in the first ``n``
    images of ``split`` (or the images of the folder ``inputs``, made into the task's inputs
    as in training: masked, noised or downsampled), writing ``NNNN_input.png``,
    ``NNNN_output.png`` and ``NNNN_target.png``.
    """

    if n < 1:
        raise ValueError(f"'n' must be >= 1, got {n}")
    if split not in ("train", "val", "test"):
        raise ValueError(f"'split' must be train, val or test, got {split!r}")
    # `normreg sample` has no --from-previous: it takes the previous checkpoint's file itself
    trainer = trainer_from_checkpoint(checkpoint, previous_hint="pass that file itself: --checkpoint {prev}")
    cfg = trainer.cfg
    model = trainer.sampler if use_ema else trainer.G
    g = torch.Generator().manual_seed(seed)
    if inputs is not None:
        if not cfg.paired:
            raise ValueError("'inputs' only applies to paired tasks (completion, denoise, superres)")
        targets = _folder_images(Path(inputs), cfg, trainer.data.image_size, trainer.data.channels)[:n]
    else:
        targets = trainer.data.split(split)[0][:n]
    targets = targets.to(trainer.device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    sc = scale or max(1, 32 // trainer.data.image_size)
    if cfg.paired:
        c = make_inputs(cfg, targets, g)
        y = trainer.generate(c, model)
        shown = c[:, : trainer.data.channels]
        if cfg.task == "completion":
            m = c[:, -1:]
            shown = shown * (1 - m) + m * (-0.5)
        for i in range(y.shape[0]):
            for tag, img in (("input", shown[i]), ("output", y[i]), ("target", targets[i])):
                p = out / f"{i:04d}_{tag}.png"
                save_image(img, p, sc)
                written.append(p)
        save_grid([shown, y, targets], out / "grid.png")
    else:
        z = torch.randn(n, cfg.z_dim, generator=g).to(trainer.device)
        y = trainer.generate(z, model)
        for i in range(n):
            p = out / f"{i:04d}.png"
            save_image(y[i], p, sc)
            written.append(p)
        save_grid([y], out / "grid.png")
    written.append(out / "grid.png")
    return written


def _folder_images(path: Path, cfg: TrainConfig, size: int, channels: int) -> torch.Tensor:
    x, _, _ = read_folder(
        path,
        cfg.replace(
            image_size=size,
            channels=channels,
            resize="center_crop" if cfg.resize in ("none", "random_crop") else cfg.resize,
        ),
    )
    return x
