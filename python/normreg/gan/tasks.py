"""The corrupted inputs of each paired task (completion, denoising, super-resolution) and its
non-learned baseline: what G sees in place of the clean image, drawn from a seeded generator
so a run resumes bit for bit."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import TrainConfig

__all__ = ["make_inputs", "completion_mask", "baseline", "input_channels"]


def completion_mask(kind: str, size: int) -> Tensor:
    """``(1, 1, S, S)`` float mask, 1 where the image is hidden."""
    m = torch.zeros(1, 1, size, size)
    if kind == "bottom_half":
        m[..., size // 2 :, :] = 1
    elif kind == "right_half":
        m[..., :, size // 2 :] = 1
    elif kind == "center":
        a, b = size // 4, size - size // 4
        m[..., a:b, a:b] = 1
    else:  # pragma: no cover
        raise ValueError(f"'mask' unknown: {kind!r}")
    return m


def baseline(cfg: TrainConfig, inputs: Tensor, channels: int) -> Tensor:
    """The trivial answer of a paired task: G's input itself (the masked image for completion,
    the noisy image for denoise, the bicubic upsampling for superres)."""
    return inputs[:, :channels]


def input_channels(cfg: TrainConfig, channels: int) -> int:
    return channels + 1 if cfg.task == "completion" else channels


def make_inputs(cfg: TrainConfig, target: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """G's input for a paired task from clean images ``target`` (``(N, C, S, S)``).

    completion: the hidden region set to 0 plus the mask as an extra channel; denoise:
    ``target + noise_std * N(0, 1)`` (noise from ``generator``, drawn on the CPU); superres:
    2x average pooling, then bicubic upsampling back to ``S`` (clamped to [-1, 1]): the
    trivial answer, which G refines by predicting the residual.
    """
    if cfg.task == "completion":
        m = completion_mask(cfg.mask, target.shape[-1]).to(target.device, target.dtype)
        return torch.cat([target * (1 - m), m.expand(target.shape[0], 1, -1, -1)], 1)
    if cfg.task == "denoise":
        noise = torch.randn(target.shape, generator=generator, dtype=target.dtype)
        return target + cfg.noise_std * noise.to(target.device)
    if cfg.task == "superres":
        low = F.avg_pool2d(target, 2)
        return F.interpolate(low, scale_factor=2, mode="bicubic", align_corners=False).clamp_(-1, 1)
    raise ValueError(f"make_inputs: task {cfg.task!r} has no inputs")
