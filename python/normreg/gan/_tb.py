"""``--tensorboard``: the run's scalars, λ values and sample grids as TensorBoard events.

Written through ``torch.utils.tensorboard`` into ``RUN_DIR/tensorboard``; needs the
``tensorboard`` package (``pip install 'normreg[tensorboard]'``). Tags: ``loss/<term>``
for every logged loss term (raw and λ-weighted), ``lambda/<name>`` for the λ values in
force, ``<split>/<metric>`` for every evaluation, ``samples`` for every sample grid.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TensorBoardLogger", "check_tensorboard"]

_HOW = "install it with: pip install 'normreg[tensorboard]' (or pip install tensorboard)"


def check_tensorboard() -> None:
    """Raise ``ValueError`` naming the extra when ``torch.utils.tensorboard`` cannot be used."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"'tensorboard': the tensorboard package is not installed ({exc}); {_HOW}") from None


class TensorBoardLogger:
    """A ``SummaryWriter`` on ``run_dir/tensorboard``; ``purge_step`` drops events a resume rewrites."""

    def __init__(self, run_dir: str | Path, purge_step: int | None = None) -> None:
        check_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=purge_step)

    def scalars(self, step: int, terms: dict[str, Any]) -> None:
        """Every loss term (``loss/...``) and λ value (``lambda/...``) of a log line."""
        for k, v in terms.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                tag = f"lambda/{k}" if k.startswith("lam_") else f"loss/{k}"
                self.writer.add_scalar(tag, float(v), step)

    def metrics(self, step: int, split: str, metrics: dict[str, Any]) -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and k != "n":
                self.writer.add_scalar(f"{split}/{k}", float(v), step)

    def grid(self, step: int, image: np.ndarray | None) -> None:
        if image is not None:
            self.writer.add_image("samples", image, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
