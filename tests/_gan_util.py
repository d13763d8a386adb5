"""Shared helpers of the GAN trainer tests (tiny configs, tiny image folders and IDX files)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from normreg.gan import TrainConfig

TINY = dict(
    steps=4,
    batch_size=16,
    width=0.25,
    max_images=96,
    eval_every=4,
    sample_every=4,
    checkpoint_every=2,
    log_every=1,
    eval_samples=24,
    z_dim=8,
)


def tiny(**changes) -> TrainConfig:
    return TrainConfig(**{**TINY, **changes})


def write_pngs(
    folder: Path, n: int = 12, size: int = 16, mode: str = "L", sizes=None, classes=None, seed: int = 0
) -> list[Path]:
    """Random images as PNG files (in sub-folders named after ``classes`` if given)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        s = sizes[i % len(sizes)] if sizes else size
        shape = (s, s, 3) if mode == "RGB" else (s, s)
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        d = folder / classes[i % len(classes)] if classes else folder
        d.mkdir(exist_ok=True)
        p = d / f"img{i:03d}.png"
        Image.fromarray(a, mode).save(p)
        out.append(p)
    return out


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """Write ``array`` (uint8) as an IDX file, the MNIST format."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def checkpoint_tensors(state, prefix=""):
    """Every tensor (and number) of a nested checkpoint, by path."""
    out = {}
    if isinstance(state, dict):
        for k, v in state.items():
            out.update(checkpoint_tensors(v, f"{prefix}/{k}"))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            out.update(checkpoint_tensors(v, f"{prefix}/{i}"))
    else:
        out[prefix] = state
    return out


def assert_same_checkpoints(a: Path, b: Path) -> None:
    """The checkpoints of run directories ``a`` and ``b`` hold the same tensors and numbers, bit for bit."""
    from normreg.gan.checkpoint import load_checkpoint

    ta, tb = checkpoint_tensors(load_checkpoint(a)), checkpoint_tensors(load_checkpoint(b))
    assert ta.keys() == tb.keys()
    for k in ta:
        if isinstance(ta[k], torch.Tensor):
            assert torch.equal(ta[k], tb[k]), k
        else:
            assert ta[k] == tb[k], k
