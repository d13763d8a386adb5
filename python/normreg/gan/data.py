"""Image data sets that never download and a seed-fixed split (the task's corrupted inputs:
``normreg.gan.tasks``, and the file readers: ``normreg.gan.readers``, re-exported here).

Every loader returns images as a float32 tensor ``(N, C, H, W)`` in ``[-1, 1]`` and integer
labels (or ``None`` when the data has none):

* ``digits``: scikit-learn's 8x8 digits (1797 images, 10 classes), shipped inside its wheel.
* ``textures``: non-overlapping square patches of the texture photographs bundled in
  scikit-image's wheel (``brick``, ``grass``, ``gravel``, ``moon``); the label is the photo.
* ``folder:PATH``: every PNG/JPEG under ``PATH`` (recursively), read with Pillow; when the
  images sit in two or more sub-folders, the sub-folder is the label. With
  ``resize="random_crop"`` (the default) the photos are split by image and G trains on
  ``crops_per_image`` random crops of each training photo per epoch (drawn anew every epoch,
  flipped left-right at random); validation and test use every tile of a fixed grid over
  their photos. Other ``resize`` values turn each image into one ``image_size`` square.
* ``mnist:PATH``: the IDX files of MNIST or Fashion-MNIST (``train-images-idx3-ubyte`` and
  ``t10k-images-idx3-ubyte``, raw or ``.gz``, with their ``*-labels-idx1-ubyte``) in ``PATH``.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .config import TrainConfig
from .readers import open_folder, read_folder, read_idx, read_mnist, to_tensor
from .tasks import baseline, completion_mask, input_channels, make_inputs  # noqa: F401  (part of this module's API)

__all__ = [
    "ImageData",
    "load_data",
    "split_indices",
    "make_inputs",
    "completion_mask",
    "baseline",
    "read_idx",
    "TEXTURES",
    "CropSource",
]

TEXTURES = ("brick", "grass", "gravel", "moon")


@dataclass
class CropSource:
    """The training photos of a ``random_crop`` folder, from which each epoch's crops are cut."""

    photos: list[Tensor]  # (C, H, W) float32 in [-1, 1], each side >= crop
    labels: Tensor | None  # (len(photos),) int64
    crop: int  # side of a crop in the photo
    size: int  # side of a training image (crops are scaled to it)
    per_image: int  # crops per photo per epoch

    def crops(self, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """``per_image`` random crops of every photo (random left-right flips), shuffled."""
        out = []
        for p in self.photos:
            h, w = p.shape[-2:]
            ys = torch.randint(0, h - self.crop + 1, (self.per_image,), generator=generator).tolist()
            xs = torch.randint(0, w - self.crop + 1, (self.per_image,), generator=generator).tolist()
            flip = torch.rand(self.per_image, generator=generator) < 0.5
            c = torch.stack([p[:, y : y + self.crop, x : x + self.crop] for y, x in zip(ys, xs, strict=True)])
            out.append(torch.where(flip[:, None, None, None], c.flip(-1), c))
        x = _scale(torch.cat(out), self.size)
        order = torch.randperm(x.shape[0], generator=generator)
        y = self.labels.repeat_interleave(self.per_image)[order] if self.labels is not None else None
        return x[order].contiguous(), y


def _scale(x: Tensor, size: int) -> Tensor:
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp_(
        -1, 1
    )


def _tiles(photo: Tensor, crop: int) -> Tensor:
    """Every tile of the centred grid of ``crop``-sided squares that fits in ``photo``."""
    h, w = photo.shape[-2:]
    ny, nx = h // crop, w // crop
    y0, x0 = (h - ny * crop) // 2, (w - nx * crop) // 2
    t = photo[:, y0 : y0 + ny * crop, x0 : x0 + nx * crop]
    return (
        t.reshape(t.shape[0], ny, crop, nx, crop).permute(1, 3, 0, 2, 4).reshape(-1, t.shape[0], crop, crop)
    )


@dataclass
class ImageData:
    """Images in ``[-1, 1]``, labels, and the split into train / val / test indices.

    For a ``random_crop`` folder, ``images`` holds one fixed set of training crops (used by
    the classifier and the KID floor) and the val / test tiles, and ``crop_source`` the
    training photos that ``Trainer`` cuts new crops from each epoch.
    """

    name: str
    images: Tensor  # (N, C, S, S) float32
    labels: Tensor | None  # (N,) int64
    class_names: list[str]
    splits: dict[str, Tensor]  # "train" | "val" | "test" -> int64 indices into images
    crop_source: CropSource | None = None
    num_photos: dict[str, int] | None = None  # random_crop: photos per split

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> tuple[Tensor, Tensor | None]:
        if name not in self.splits:
            raise ValueError(f"'split' must be one of {', '.join(self.splits)}; got {name!r}")
        idx = self.splits[name]
        return self.images[idx], (self.labels[idx] if self.labels is not None else None)

    def fingerprint(self) -> str:
        """A hash of the images, labels and split (keys the classifier cache)."""

        h = hashlib.sha256()
        h.update(self.images.numpy().tobytes())
        if self.labels is not None:
            h.update(self.labels.numpy().tobytes())
        for k in sorted(self.splits):
            h.update(k.encode())
            h.update(self.splits[k].numpy().tobytes())
        if self.crop_source is not None:
            cs = self.crop_source
            h.update(f"crops {cs.crop} {cs.size} {cs.per_image}".encode())
            for p in cs.photos:
                h.update(p.numpy().tobytes())
        return h.hexdigest()[:24]


# -- loaders ------------------------------------------------------------------------------------
def _digits() -> tuple[Tensor, Tensor, list[str]]:
    # The file load_digits() reads, located without importing scikit-learn (a slow import).

    spec = importlib.util.find_spec("sklearn")
    loc = list(spec.submodule_search_locations or []) if spec else []
    csv_gz = Path(loc[0]) / "datasets" / "data" / "digits.csv.gz" if loc else None
    if csv_gz is not None and csv_gz.is_file():
        raw = np.loadtxt(csv_gz, delimiter=",", dtype=np.float32)
        images, target = raw[:, :-1].reshape(-1, 8, 8), raw[:, -1].astype(np.int64)
    else:  # pragma: no cover - a scikit-learn that stores the file elsewhere
        from sklearn.datasets import load_digits

        d = load_digits()
        images, target = d.images.astype(np.float32), d.target.astype(np.int64)
    x = torch.from_numpy(images).unsqueeze(1) / 8.0 - 1.0  # 0..16 -> [-1, 1]
    return x, torch.from_numpy(target), [str(i) for i in range(10)]


def _textures(size: int) -> tuple[Tensor, Tensor, list[str]]:
    import skimage.data

    xs, ys = [], []
    for label, name in enumerate(TEXTURES):
        im = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
        if im.ndim == 3:
            im = im[..., :3].mean(-1)
        t = torch.from_numpy(im)
        h, w = (t.shape[0] // size) * size, (t.shape[1] // size) * size
        patches = (
            t[:h, :w].reshape(h // size, size, w // size, size).permute(0, 2, 1, 3).reshape(-1, 1, size, size)
        )
        xs.append(patches / 127.5 - 1.0)
        ys.append(torch.full((patches.shape[0],), label, dtype=torch.int64))
    return torch.cat(xs), torch.cat(ys), list(TEXTURES)


def _photo_crops(path: Path, cfg: TrainConfig) -> ImageData:
    """``random_crop``: split the photos, cut val / test into tiles, keep train for random crops."""

    _files, pil, mode, labels, names = open_folder(path, cfg)
    size = cfg.image_size or 32
    crop = cfg.crop_size or size
    bicubic = Image.Resampling.BICUBIC if hasattr(Image, "Resampling") else Image.BICUBIC
    photos = []
    for im in pil:
        im = im.convert(mode)
        w, h = im.size
        if min(w, h) < crop:  # too small for one crop: scale up so the short side fits
            f = crop / min(w, h)
            im = im.resize((max(crop, round(w * f)), max(crop, round(h * f))), bicubic)
        photos.append(to_tensor(im))
    if cfg.max_images and len(photos) > cfg.max_images:
        g = torch.Generator().manual_seed(cfg.seed + 7)
        keep = torch.randperm(len(photos), generator=g)[: cfg.max_images].sort().values.tolist()
        photos = [photos[i] for i in keep]
        labels = labels[keep] if labels is not None else None
    if len(photos) < 4:
        raise ValueError(
            f"dataset: {cfg.dataset!r} has {len(photos)} images; at least 4 are needed for a split"
        )
    by_photo = split_indices(len(photos), cfg)
    train_idx = by_photo["train"].tolist()
    source = CropSource(
        [photos[i] for i in train_idx],
        labels[by_photo["train"]] if labels is not None else None,
        crop,
        size,
        cfg.crops_per_image,
    )
    # One fixed draw of training crops (its own generator): the classifier's data, the KID floor.
    xs, ys = [], []
    x0, y0 = source.crops(torch.Generator().manual_seed(10007 * cfg.seed + 3))
    xs.append(x0)
    ys.append(y0)
    counts = {"train": x0.shape[0]}
    for split in ("val", "test"):
        n = 0
        for i in by_photo[split].tolist():
            t = _scale(_tiles(photos[i], crop), size)
            xs.append(t)
            n += t.shape[0]
            if labels is not None:
                ys.append(labels[i].repeat(t.shape[0]))
        counts[split] = n
    x = torch.cat(xs).contiguous()
    y = torch.cat(ys) if labels is not None else None
    start, splits = 0, {}
    for k in ("train", "val", "test"):
        splits[k] = torch.arange(start, start + counts[k])
        start += counts[k]
    nph = {k: len(v) for k, v in by_photo.items()}
    return ImageData(cfg.dataset, x, y, names, splits, crop_source=source, num_photos=nph)


def split_indices(n: int, cfg: TrainConfig) -> dict[str, Tensor]:
    """Train / val / test indices, a function of ``(n, seed, fractions, folds, fold)`` only.

    The test part depends on the seed and ``test_fraction`` alone, so every fold of a k-fold
    study shares it; with ``folds > 1`` the rest is cut into ``folds`` parts and part ``fold``
    is the validation set.
    """
    g = torch.Generator().manual_seed(10007 * cfg.seed + 1)
    perm = torch.randperm(n, generator=g)
    n_test = max(1, int(round(cfg.test_fraction * n)))
    test, rest = perm[:n_test], perm[n_test:]
    if cfg.folds > 1:
        parts = torch.tensor_split(rest, cfg.folds)
        val = parts[cfg.fold]
        train = torch.cat([p for i, p in enumerate(parts) if i != cfg.fold])
    else:
        n_val = max(1, int(round(cfg.val_fraction * n)))
        val, train = rest[:n_val], rest[n_val:]
    if len(train) < 2:
        raise ValueError(f"dataset: only {n} images, too few for a train / val / test split")
    return {"train": train.sort().values, "val": val.sort().values, "test": test.sort().values}


def load_data(cfg: TrainConfig) -> ImageData:
    """Load ``cfg.dataset`` at ``cfg.image_size`` and split it; raises ``ValueError`` on bad data."""
    ds = cfg.dataset
    if ds == "digits":
        x, y, names = _digits()
        if cfg.image_size and cfg.image_size != 8:
            x = F.interpolate(x, size=(cfg.image_size,) * 2, mode="bilinear", align_corners=False).clamp_(
                -1, 1
            )
    elif ds == "textures":
        x, y, names = _textures(cfg.image_size or 32)
    elif ds.startswith("folder:") and cfg.resize == "random_crop":
        size = cfg.image_size or 32
        if size < 8 or size & (size - 1):  # pragma: no cover - TrainConfig validates
            raise ValueError(f"dataset: set image_size to a power of 2 >= 8, got {size}")
        return _photo_crops(Path(ds.split(":", 1)[1]).expanduser(), cfg)
    elif ds.startswith("folder:"):
        x, y, names = read_folder(Path(ds.split(":", 1)[1]).expanduser(), cfg)
    elif ds.startswith("mnist:"):
        x, y, names = read_mnist(Path(ds.split(":", 1)[1]).expanduser(), cfg)
    else:  # pragma: no cover - TrainConfig validates
        raise ValueError(f"'dataset' unknown: {ds!r}")
    if cfg.channels and x.shape[1] != cfg.channels:
        x = x.mean(1, keepdim=True) if cfg.channels == 1 else x.expand(-1, 3, -1, -1).contiguous()
    size = x.shape[-1]
    if size < 8 or size & (size - 1):
        raise ValueError(f"dataset: images are {size}x{size}; set image_size to a power of 2 >= 8")
    if cfg.max_images and x.shape[0] > cfg.max_images:
        g = torch.Generator().manual_seed(cfg.seed + 7)
        keep = torch.randperm(x.shape[0], generator=g)[: cfg.max_images].sort().values
        x, y = x[keep], (y[keep] if y is not None else None)
    x = x.contiguous().float()
    if x.shape[0] < 4:
        raise ValueError(f"dataset: {ds!r} has {x.shape[0]} images; at least 4 are needed for a split")
    return ImageData(ds, x, y, names, split_indices(x.shape[0], cfg))
