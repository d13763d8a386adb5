"""GAN trainer built on normreg's public API: ``normreg train`` / ``normreg sample``.

>>> from normreg.gan import TrainConfig, train, evaluate
>>> cfg = TrainConfig(task="completion", dataset="digits", steps=200)
>>> summary = train(cfg, "runs/demo")          # doctest: +SKIP
>>> evaluate("runs/demo", split="test")["psnr"]  # doctest: +SKIP

See docs/trainer.md for every option.
"""

from __future__ import annotations

from .checkpoint import CheckpointError, load_checkpoint
from .config import TrainConfig
from .data import ImageData, load_data
from .rundir import RunDirError
from .train import evaluate, train, trainer_from_checkpoint
from .trainer import Trainer

__all__ = [
    "TrainConfig",
    "Trainer",
    "train",
    "evaluate",
    "load_checkpoint",
    "trainer_from_checkpoint",
    "CheckpointError",
    "RunDirError",
    "ImageData",
    "load_data",
]
