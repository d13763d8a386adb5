"""Data sets without downloads, the seed-fixed split, and the task inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _gan_util import tiny, write_idx, write_pngs

from normreg.gan import TrainConfig, load_data
from normreg.gan.data import completion_mask, make_inputs, read_idx, split_indices

pytestmark = pytest.mark.usefixtures("one_thread_and_cache")


def test_digits_match_sklearn_scaled_to_unit_range():
    from sklearn.datasets import load_digits

    d = load_data(TrainConfig())
    ref = load_digits()
    assert d.images.shape == (1797, 1, 8, 8)
    np.testing.assert_allclose(d.images[:, 0].numpy(), ref.images / 8.0 - 1.0, rtol=0, atol=1e-6)
    assert torch.equal(d.labels, torch.from_numpy(ref.target).long())
    assert d.images.min() == -1 and d.images.max() == 1


def test_split_is_a_partition_fixed_by_the_seed():
    cfg = TrainConfig()
    a = split_indices(1000, cfg)
    b = split_indices(1000, cfg)
    for k in a:
        assert torch.equal(a[k], b[k])
    allidx = torch.cat(list(a.values())).sort().values
    assert torch.equal(allidx, torch.arange(1000))
    assert len(a["test"]) == 150 and len(a["val"]) == 100
    c = split_indices(1000, cfg.replace(seed=1))
    assert not torch.equal(a["test"], c["test"])


def test_folds_share_the_test_split_and_cover_the_rest():
    cfgs = [TrainConfig(folds=4, fold=i) for i in range(4)]
    splits = [split_indices(200, c) for c in cfgs]
    for s in splits[1:]:
        assert torch.equal(s["test"], splits[0]["test"])
    vals = torch.cat([s["val"] for s in splits]).sort().values
    rest = torch.cat([splits[0]["train"], splits[0]["val"]]).sort().values
    assert torch.equal(vals, rest)  # every non-test image is validation exactly once


def test_textures_are_patches_of_skimage_images():
    import skimage.data

    d = load_data(TrainConfig(dataset="textures", image_size=16))
    assert d.images.shape[1:] == (1, 16, 16) and d.num_classes == 4
    brick = torch.from_numpy(skimage.data.brick().astype(np.float32)) / 127.5 - 1
    first = d.images[(d.labels == 0).nonzero()[0, 0], 0]
    assert torch.allclose(first, brick[:16, :16])


def test_folder_with_class_subfolders_gives_labels(tmp_path):
    write_pngs(tmp_path / "imgs", n=12, size=20, classes=["cat", "dog"])
    d = load_data(TrainConfig(dataset=f"folder:{tmp_path / 'imgs'}", image_size=16, resize="center_crop"))
    assert d.images.shape == (12, 1, 16, 16)
    assert d.class_names == ["cat", "dog"] and sorted(d.labels.tolist()) == [0] * 6 + [1] * 6


def test_folder_resize_none_keeps_pixels(tmp_path):
    from PIL import Image

    files = write_pngs(tmp_path / "imgs", n=6, size=8, mode="RGB")
    d = load_data(TrainConfig(dataset=f"folder:{tmp_path / 'imgs'}", resize="none"))
    assert d.images.shape == (6, 3, 8, 8) and d.labels is None
    a = np.asarray(Image.open(files[0]), dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1
    np.testing.assert_allclose(d.images[0].numpy(), a, atol=1e-6)


@pytest.mark.parametrize(
    "setup,match",
    [
        ("missing", "does not exist"),
        ("empty", "contains no PNG or JPEG"),
        ("unreadable", "cannot read image"),
        ("mixed", "different sizes"),
    ],
)
def test_folder_errors_are_clear(tmp_path, setup, match):
    folder = tmp_path / "imgs"
    resize = "center_crop"
    if setup == "empty":
        folder.mkdir()
        (folder / "notes.txt").write_text("no images")
    elif setup == "unreadable":
        write_pngs(folder, n=5)
        (folder / "broken.png").write_bytes(b"\x89PNG not really")
    elif setup == "mixed":
        write_pngs(folder, n=6, sizes=[8, 16])
        resize = "none"
    with pytest.raises(ValueError, match=match) as exc:
        load_data(TrainConfig(dataset=f"folder:{folder}", resize=resize))
    assert "dataset" in str(exc.value)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files(tmp_path, compress):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (8, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", train, compress)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(20) % 10, compress)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", test, compress)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(8) % 10, compress)
    d = load_data(TrainConfig(dataset=f"mnist:{tmp_path}"))
    assert d.images.shape == (28, 1, 32, 32)
    # 28 -> 32 by padding with background; the centre is the original image.
    np.testing.assert_allclose(d.images[0, 0, 2:30, 2:30].numpy(), train[0] / 127.5 - 1, atol=1e-6)
    assert (d.images[:, :, :2] == -1).all()
    assert d.labels.tolist() == list(np.arange(20) % 10) + list(np.arange(8) % 10)


def test_idx_errors(tmp_path):
    p = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 28, 28), np.uint8))
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(p)
    p.write_bytes(b"\x12\x34garbage")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(p)
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match="no MNIST files"):
        load_data(TrainConfig(dataset=f"mnist:{tmp_path / 'other'}"))


def _bicubic_x2(a: np.ndarray, axis: int) -> np.ndarray:
    """2x upsampling along ``axis`` with Keys' cubic (a = -0.75, torch's), half-pixel centres,
    borders replicated: output j samples the input at j/2 - 1/4."""

    def w(t):
        t = abs(t)
        return (1.25 * t - 2.25) * t * t + 1 if t <= 1 else ((-0.75 * t + 3.75) * t - 6) * t + 3

    a = np.moveaxis(a, axis, -1)
    n = a.shape[-1]
    out = np.zeros(a.shape[:-1] + (2 * n,))
    for j in range(2 * n):
        s = j / 2 - 0.25
        i0 = int(np.floor(s))
        for k in range(i0 - 1, i0 + 3):
            out[..., j] += w(s - k) * a[..., min(max(k, 0), n - 1)]
    return np.moveaxis(out, -1, axis)


def test_task_inputs():
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    cfg = tiny(task="completion")
    c = make_inputs(cfg, x)
    m = completion_mask("bottom_half", 8)
    assert c.shape == (3, 2, 8, 8)
    assert (
        torch.equal(c[:, :1, :4], x[:, :, :4])
        and (c[:, :1, 4:] == 0).all()
        and torch.equal(c[:, 1:], m.expand(3, 1, 8, 8))
    )
    sr = make_inputs(cfg.replace(task="superres"), x)
    low = torch.nn.functional.avg_pool2d(x, 2).double().numpy()
    ref = np.clip(_bicubic_x2(_bicubic_x2(low, -1), -2), -1, 1)
    np.testing.assert_allclose(sr.double().numpy(), ref, rtol=0, atol=1e-5)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    dn = make_inputs(cfg.replace(task="denoise", noise_std=0.5), x, g1)
    assert torch.allclose(dn, x + 0.5 * torch.randn(x.shape, generator=g2))


def _photos(folder, sizes, mode="RGB", seed=0):
    """Random photos of the given (h, w) sizes as PNG files; returns their arrays in [-1, 1]."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrs = []
    for i, (h, w) in enumerate(sizes):
        a = rng.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
        Image.fromarray(a, mode).save(folder / f"p{i}.png")
        f = a.astype(np.float32) / 127.5 - 1
        arrs.append(f.transpose(2, 0, 1) if f.ndim == 3 else f[None])
    return arrs


def _find_window(crop, photo):
    """(y, x, flipped) of ``crop`` inside ``photo`` (C, H, W), searched exhaustively, or None."""
    c, s = crop.shape[0], crop.shape[-1]
    for flipped, want in ((False, crop), (True, crop[..., ::-1])):
        for y in range(photo.shape[1] - s + 1):
            for x in range(photo.shape[2] - s + 1):
                if np.array_equal(photo[:c, y : y + s, x : x + s], want):
                    return y, x, flipped
    return None


def test_photo_folder_trains_on_random_crops_and_evaluates_on_tiles(tmp_path):
    sizes = [(20, 28), (24, 24), (18, 30), (22, 26), (26, 20), (20, 20)]
    photos = _photos(tmp_path / "ph", sizes)
    cfg = TrainConfig(dataset=f"folder:{tmp_path / 'ph'}", image_size=8, crops_per_image=5)
    d = load_data(cfg)
    split = split_indices(len(photos), cfg)  # the split is by photo
    assert d.num_photos == {k: len(v) for k, v in split.items()}
    src = d.crop_source
    assert [p.shape for p in src.photos] == [photos[i].shape for i in split["train"].tolist()]
    # Each epoch: crops_per_image crops of every training photo, each a window (maybe flipped).
    g = torch.Generator().manual_seed(5)
    x, y = src.crops(g)
    assert x.shape == (5 * len(src.photos), 3, 8, 8) and y is None
    hits = [[_find_window(c, p.numpy()) is not None for p in src.photos] for c in x.numpy()]
    assert all(any(h) for h in hits)
    per_photo = np.array(hits).sum(0)
    assert (per_photo == 5).all()  # random noise photos: a crop matches only its own photo
    x2, _ = src.crops(torch.Generator().manual_seed(5))
    x3, _ = src.crops(torch.Generator().manual_seed(6))
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    # Val / test: every tile of the centred grid, in raster order.
    for name in ("val", "test"):
        tiles, _ = d.split(name)
        want = []
        for i in split[name].tolist():
            p = photos[i]
            ny, nx = p.shape[1] // 8, p.shape[2] // 8
            y0, x0 = (p.shape[1] - 8 * ny) // 2, (p.shape[2] - 8 * nx) // 2
            want += [
                p[:, y0 + 8 * a : y0 + 8 * a + 8, x0 + 8 * b : x0 + 8 * b + 8]
                for a in range(ny)
                for b in range(nx)
            ]
        np.testing.assert_allclose(tiles.numpy(), np.stack(want), atol=1e-6)
    assert d.split("train")[0].shape[0] == 5 * len(src.photos)


def test_photo_crops_larger_than_the_image_size_are_scaled_and_small_photos_grown(tmp_path):
    _photos(tmp_path / "ph", [(40, 48), (12, 40), (40, 40), (44, 40), (40, 52)], mode="L")
    d = load_data(TrainConfig(dataset=f"folder:{tmp_path / 'ph'}", image_size=8, crop_size=16))
    assert d.images.shape[1:] == (1, 8, 8) and d.channels == 1
    assert all(min(p.shape[1:]) >= 16 for p in d.crop_source.photos)
    small = [p for p in d.crop_source.photos if p.shape[1] == 16]
    for p in small:  # the 12x40 photo scaled up by 16/12, keeping its aspect
        assert p.shape[2] == round(40 * 16 / 12)
    g = torch.Generator().manual_seed(0)
    x, _ = d.crop_source.crops(g)
    assert x.min() >= -1 and x.max() <= 1


def test_photo_folder_needs_four_photos_and_validates_crop_options(tmp_path):
    _photos(tmp_path / "ph", [(20, 20)] * 3)
    with pytest.raises(ValueError, match="at least 4"):
        load_data(TrainConfig(dataset=f"folder:{tmp_path / 'ph'}", image_size=8))
    with pytest.raises(ValueError, match="crop_size"):
        TrainConfig(crop_size=4)
    with pytest.raises(ValueError, match="crops_per_image"):
        TrainConfig(crops_per_image=0)
