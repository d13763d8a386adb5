"""Readers of image files for the data sets of :mod:`normreg.gan.data`: a folder of
PNG/JPEG images (Pillow; the sub-folder as the label) and MNIST's IDX files (raw or
``.gz``). Each returns float32 images ``(N, C, H, W)`` in ``[-1, 1]``, the labels (or
``None``) and the class names."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from .config import TrainConfig

__all__ = ["read_idx", "read_folder", "read_mnist", "open_folder", "to_tensor"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _check_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise ValueError(f"dataset: {what} folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise ValueError(f"dataset: {what} path {str(path)!r} is not a folder")


def open_folder(path: Path, cfg: TrainConfig):
    """``(files, images, mode, labels, class names)`` of the PNG/JPEG files under ``path``
    (Pillow images, opened; the sub-folder as the label when there are several)."""

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


def to_tensor(im) -> Tensor:
    """A Pillow image as float32 ``(C, H, W)`` in ``[-1, 1]``."""
    a = np.asarray(im, dtype=np.float32)
    return (
        torch.from_numpy(np.ascontiguousarray(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))) / 127.5 - 1.0
    )


def read_folder(path: Path, cfg: TrainConfig) -> tuple[Tensor, Tensor | None, list[str]]:

    files, pil, mode, labels, names = open_folder(path, cfg)
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
        arrs.append(to_tensor(im))
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


def read_mnist(path: Path, cfg: TrainConfig) -> tuple[Tensor, Tensor | None, list[str]]:
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
