"""Data sets without downloads, the seed-fixed split, and the task inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _gan_util import _one_thread_and_cache, tiny, write_idx, write_pngs  # noqa: F401

from normreg.gan import TrainConfig, load_data
from normreg.gan.data import completion_mask, make_inputs, read_idx, split_indices


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
    d = load_data(TrainConfig(dataset=f"folder:{tmp_path / 'imgs'}", image_size=16))
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
    assert torch.allclose(sr[:, :, ::2, ::2], torch.nn.functional.avg_pool2d(x, 2))
    assert torch.equal(sr[:, :, ::2, ::2], sr[:, :, 1::2, 1::2])
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    dn = make_inputs(cfg.replace(task="denoise", noise_std=0.5), x, g1)
    assert torch.allclose(dn, x + 0.5 * torch.randn(x.shape, generator=g2))
