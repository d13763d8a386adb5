"""Image data sets that never download and a seed-fixed split (the task's corrupted inputs:
``normreg.gan.tasks``, re-exported here).

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

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .config import TrainConfig
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
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


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
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp_(-1, 1)


def _tiles(photo: Tensor, crop: int) -> Tensor:
    """Every tile of the centred grid of ``crop``-sided squares that fits in ``photo``."""
    h, w = photo.shape[-2:]
    ny, nx = h // crop, w // crop
    y0, x0 = (h - ny * crop) // 2, (w - nx * crop) // 2
    t = photo[:, y0 : y0 + ny * crop, x0 : x0 + nx * crop]
    return t.reshape(t.shape[0], ny, crop, nx, crop).permute(1, 3, 0, 2, 4).reshape(-1, t.shape[0], crop, crop)


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
        import hashlib

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
    import importlib.util

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


def _check_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise ValueError(f"dataset: {what} folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise ValueError(f"dataset: {what} path {str(path)!r} is not a folder")


def _read_folder(path: Path, cfg: TrainConfig):
    from PIL import Image, UnidentifiedImageError

    _check_dir(path, "image")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise ValueError(
            f"dataset: folder {str(path)!r} contains no PNG or JPEG images (*.png, *.jpg, *.jpeg)"
        )
    pil = []
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                pil.append(im.copy())
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise ValueError(f"dataset: cannot read image {str(f)!r} ({exc}); remove or fix it") from None
    color = {
        im.mode not in ("1", "L", "LA", "I", "I;16", "F", "P") or (im.mode == "P" and _palette_is_color(im))
        for im in pil
    }
    channels = cfg.channels or (3 if True in color else 1)
    mode = "RGB" if channels == 3 else "L"
    # Labels from sub-folders when there are at least two of them.
    parents = [f.parent.relative_to(path).parts[:1] for f in files]
    names = sorted({p[0] for p in parents if p})
    labels = None
    if len(names) >= 2 and all(parents):
        lut = {n: i for i, n in enumerate(names)}
        labels = torch.tensor([lut[p[0]] for p in parents], dtype=torch.int64)
    else:
        names = []
    return files, pil, mode, labels, names


def _to_tensor(im) -> Tensor:
    a = np.asarray(im, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))) / 127.5 - 1.0


def _photo_crops(path: Path, cfg: TrainConfig) -> ImageData:
    """``random_crop``: split the photos, cut val / test into tiles, keep train for random crops."""
    from PIL import Image

    _files, pil, mode, labels, names = _read_folder(path, cfg)
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
        photos.append(_to_tensor(im))
    if cfg.max_images and len(photos) > cfg.max_images:
        g = torch.Generator().manual_seed(cfg.seed + 7)
        keep = torch.randperm(len(photos), generator=g)[: cfg.max_images].sort().values.tolist()
        photos = [photos[i] for i in keep]
        labels = labels[keep] if labels is not None else None
    if len(photos) < 4:
        raise ValueError(f"dataset: {cfg.dataset!r} has {len(photos)} images; at least 4 are needed for a split")
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


def _folder(path: Path, cfg: TrainConfig) -> tuple[Tensor, Tensor | None, list[str]]:
    from PIL import Image

    files, pil, mode, labels, names = _read_folder(path, cfg)
    sizes = sorted({im.size for im in pil})
    if cfg.resize == "none":
        if len(sizes) > 1:
            a = next(f for f, im in zip(files, pil, strict=True) if im.size == sizes[0])
            b = next(f for f, im in zip(files, pil, strict=True) if im.size == sizes[-1])
            raise ValueError(
                f"dataset: images in {str(path)!r} have different sizes ({sizes[0][0]}x{sizes[0][1]} {a.name!r}, "
                f"{sizes[-1][0]}x{sizes[-1][1]} {b.name!r}, ...); set resize='center_crop' or 'stretch'"
            )
        w, h = sizes[0]
        if w != h:
            raise ValueError(
                f"dataset: images in {str(path)!r} are {w}x{h}, not square; set resize='center_crop'"
            )
        size = cfg.image_size or w
        if size != w:
            raise ValueError(f"dataset: image_size={size} but the images are {w}x{h} and resize='none'")
    else:
        size = cfg.image_size or 32
    arrs = []
    for im in pil:
        im = im.convert(mode)
        if cfg.resize == "center_crop":
            w, h = im.size
            s = min(w, h)
            im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        if im.size != (size, size):
            im = im.resize(
                (size, size), Image.Resampling.BICUBIC if hasattr(Image, "Resampling") else Image.BICUBIC
            )
        arrs.append(_to_tensor(im))
    return torch.stack(arrs), labels, names


def _palette_is_color(im) -> bool:
    try:
        rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
    except Exception:  # pragma: no cover
        return True
    return bool(np.any(rgb[..., 0] != rgb[..., 1]) or np.any(rgb[..., 1] != rgb[..., 2]))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (MNIST format), raw or gzip-compressed, into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"dataset: cannot read IDX file {str(path)!r}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"dataset: {str(path)!r} is not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"dataset: {str(path)!r} has an unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"dataset: {str(path)!r} is truncated (header)")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dt = np.dtype(dtypes[data[2]])
    n = int(np.prod(dims)) if dims else 0
    body = data[4 + 4 * ndim :]
    if len(body) != n * dt.itemsize:
        raise ValueError(
            f"dataset: {str(path)!r} is truncated or has extra bytes: header says {n * dt.itemsize} bytes of data, found {len(body)}"
        )
    return np.frombuffer(body, dtype=dt).reshape(dims)


def _find(path: Path, stem: str) -> Path | None:
    for cand in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (path / cand).is_file():
            return path / cand
    return None


def _mnist(path: Path, cfg: TrainConfig) -> tuple[Tensor, Tensor | None, list[str]]:
    _check_dir(path, "MNIST")
    xs, ys = [], []
    for prefix in ("train", "t10k"):
        imf = _find(path, f"{prefix}-images-idx3-ubyte")
        if imf is None:
            continue
        im = read_idx(imf)
        if im.ndim != 3:
            raise ValueError(f"dataset: {str(imf)!r} must hold 3-d images (N, H, W), found shape {im.shape}")
        xs.append(im)
        lf = _find(path, f"{prefix}-labels-idx1-ubyte")
        lab = read_idx(lf) if lf is not None else None
        if lab is not None and lab.shape != (im.shape[0],):
            raise ValueError(f"dataset: {str(lf)!r} has {lab.shape} labels for {im.shape[0]} images")
        ys.append(lab)
    if not xs:
        raise ValueError(
            f"dataset: no MNIST files in {str(path)!r}; expected train-images-idx3-ubyte[.gz] and/or t10k-images-idx3-ubyte[.gz]"
        )
    if len({a.shape[1:] for a in xs}) > 1:
        raise ValueError(f"dataset: the IDX image files in {str(path)!r} have different image sizes")
    x = torch.from_numpy(np.concatenate(xs).astype(np.float32)).unsqueeze(1) / 127.5 - 1.0
    labels = None
    if all(y is not None for y in ys):
        labels = torch.from_numpy(np.concatenate(ys).astype(np.int64))
    size = cfg.image_size or 32
    h = x.shape[-1]
    if size == h + 4:  # 28 -> 32: pad with background, as LeNet does
        x = F.pad(x, (2, 2, 2, 2), value=-1.0)
    elif size != h:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp_(
            -1, 1
        )
    names = [str(i) for i in range(int(labels.max()) + 1)] if labels is not None else []
    return x, labels, names


# -- split ---------------------------------------------------------------------------------------
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
        x, y, names = _folder(Path(ds.split(":", 1)[1]).expanduser(), cfg)
    elif ds.startswith("mnist:"):
        x, y, names = _mnist(Path(ds.split(":", 1)[1]).expanduser(), cfg)
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
