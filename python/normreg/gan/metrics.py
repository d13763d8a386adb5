"""Offline image metrics: PSNR, SSIM, a classifier score and KID in the classifier's features.

* ``psnr``: mean over images of ``10 log10(range^2 / mse)`` with ``range = 2`` for images in
  ``[-1, 1]``; identical images give ``inf``.
* ``ssim``: ``pytorch_msssim.ssim`` on images shifted to ``[0, 2]``, with a Gaussian window
  that fits small images (3 for 8x8, 7 for 16x16, 11 from 32x32 up).
* ``Classifier``: a small CNN trained deterministically on the real training split (the
  pix2pix "FCN-score" idea: a generated image is good if a classifier trained on real images
  recognises it) and cached on disk under ``$NORMREG_CACHE`` (default ``~/.cache/normreg``),
  keyed by a hash of the data and split.
* ``kid``: the unbiased squared MMD with the cubic polynomial kernel
  ``k(x, y) = (x.y / d + 1)^3`` (Binkowski et al. 2018) between two feature sets (the
  trainer reports it x 10^3, as the literature does).

The math runs in float64 on the tensors' device (on the CPU for MPS, which has no float64).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim as _ssim
from torch import Tensor, nn

__all__ = [
    "psnr",
    "ssim",
    "kid",
    "Classifier",
    "train_classifier",
    "load_or_train_classifier",
    "cache_dir",
    "pixel_features",
]

CLASSIFIER_VERSION = 1


def _f64(t: Tensor) -> Tensor:
    return t.to("cpu", torch.float64) if t.device.type == "mps" else t.double()


def psnr(pred: Tensor, target: Tensor, data_range: float = 2.0) -> float:
    """Mean PSNR (dB) over images; ``inf`` when every pair is identical."""
    if pred.shape != target.shape:
        raise ValueError(f"psnr: 'pred' shape {tuple(pred.shape)} != 'target' shape {tuple(target.shape)}")
    mse = (_f64(pred) - _f64(target)).pow(2).flatten(1).mean(1)
    with torch.no_grad():
        per = 10.0 * torch.log10(data_range**2 / mse)  # mse == 0 -> inf
    return float(per.mean())


def _ssim_window(size: int) -> int:
    return 3 if size < 16 else (7 if size < 32 else 11)


def ssim(pred: Tensor, target: Tensor, data_range: float = 2.0) -> float:
    """Mean SSIM over images (pytorch_msssim, window sized for small images)."""
    if pred.shape != target.shape:
        raise ValueError(f"ssim: 'pred' shape {tuple(pred.shape)} != 'target' shape {tuple(target.shape)}")
    lo = -data_range / 2
    win = _ssim_window(int(pred.shape[-1]))
    return float(
        _ssim(_f64(pred) - lo, _f64(target) - lo, data_range=data_range, win_size=win, size_average=True)
    )


def kid(x: Tensor, y: Tensor) -> float:
    """Unbiased MMD^2 with the kernel ``(x.y/d + 1)^3`` between feature sets ``x`` (m, d) and ``y`` (n, d)."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"kid: features must be (m, d) and (n, d), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError("kid: each set needs at least 2 samples")
    x, y = _f64(x), _f64(y)
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(sxx + syy - 2 * kxy.mean())


def pixel_features(images: Tensor) -> Tensor:
    """Features for data without labels: the image average-pooled to at most 16x16, flattened."""
    s = images.shape[-1]
    if s > 16:
        images = F.adaptive_avg_pool2d(images, 16)
    return images.flatten(1).float()


# -- classifier ---------------------------------------------------------------------------------
class Classifier(nn.Module):
    """Small CNN: 3 conv layers, global pooling, a 128-d feature layer (used for KID), logits."""

    def __init__(self, channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(channels, w, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 3, 2, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * w, 128),
            nn.ReLU(),
        )
        self.head = nn.Linear(128, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    @torch.no_grad()
    def predict(self, x: Tensor, batch: int = 512) -> tuple[Tensor, Tensor]:
        """(features, logits) in eval mode, in batches."""
        self.eval()
        feats, logits = [], []
        for i in range(0, x.shape[0], batch):
            f = self.body(x[i : i + batch])
            feats.append(f)
            logits.append(self.head(f))
        return torch.cat(feats), torch.cat(logits)


def cache_dir() -> Path:
    """``$NORMREG_CACHE`` or ``~/.cache/normreg`` (``$XDG_CACHE_HOME/normreg`` if set)."""
    env = os.environ.get("NORMREG_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "normreg"


def train_classifier(
    images: Tensor, labels: Tensor, num_classes: int, seed: int = 0, epochs: int = 0
) -> Classifier:
    """Train the classifier deterministically (own RNG, fixed order); global RNG untouched.

    Light augmentation (random shifts of one pixel) keeps it from judging generated images by
    exact pixel positions. ``epochs=0`` picks enough epochs for about 800 steps (at least 5).
    """
    n = images.shape[0]
    batch = 64
    if epochs <= 0:
        epochs = max(5, min(60, math.ceil(800 / max(1, n // batch))))
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        model = Classifier(images.shape[1], num_classes)
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * max(1, math.ceil(n / batch)))
        model.train()
        for _ in range(epochs):
            perm = torch.randperm(n, generator=g)
            for i in range(0, n, batch):
                idx = perm[i : i + batch]
                x = images[idx]
                shift = torch.randint(-1, 2, (2,), generator=g).tolist()
                x = torch.roll(x, shifts=shift, dims=(2, 3))
                loss = F.cross_entropy(model(x), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    model.eval()
    return model


def load_or_train_classifier(data, seed: int = 0) -> Classifier | None:
    """The classifier of ``data`` (an ``ImageData``) from the cache, or trained and cached.

    ``None`` when the data has no labels (KID then uses ``pixel_features``).
    """
    if data.labels is None or data.num_classes < 2:
        return None
    key = f"classifier-v{CLASSIFIER_VERSION}-{data.fingerprint()}-s{seed}.pt"
    path = cache_dir() / key
    with torch.random.fork_rng(devices=[]):
        model = Classifier(data.channels, data.num_classes)
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            model.eval()
            return model
        except Exception:  # a damaged cache entry is rebuilt
            pass
    x, y = data.split("train")
    model = train_classifier(x, y, data.num_classes, seed=seed)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    except OSError:  # a read-only cache only costs time
        pass
    return model
