"""The trainer on photo folders: residual super-resolution, baselines, warnings, notes, KID x 10^3,
devices and TensorBoard."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from _gan_util import tiny, write_pngs

from normreg.gan import Trainer, load_checkpoint, train, trainer_from_checkpoint
from normreg.gan.checkpoint import save_checkpoint
from normreg.gan.data import make_inputs

pytestmark = pytest.mark.usefixtures("one_thread_and_cache")


def _photo_folder(tmp_path, n=6, h=24, w=32, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(n):
        # Smooth photos (a low-frequency pattern plus a little noise), so bicubic is a fair guess.
        yy, xx = np.mgrid[0:h, 0:w] / 6.0
        a = 127 + 80 * np.sin(xx + i) * np.cos(yy - i) + rng.normal(0, 5, (h, w))
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L").save(folder / f"p{i}.png")
    return folder


def _psnr64(a, b):
    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(1).numpy()
    return float(np.mean(10 * np.log10(4.0 / mse)))


def test_superres_g_predicts_the_residual_over_bicubic(tmp_path):
    cfg = tiny(dataset=f"folder:{_photo_folder(tmp_path)}", image_size=8, task="superres", crops_per_image=4)
    tr = Trainer(cfg)
    last = tr.G.ups[-1]
    with torch.no_grad():  # a G whose last layer is zero returns its input: the bicubic image
        last.weight.zero_()
        last.bias.zero_()
    c = tr.eval_inputs["val"]
    assert torch.equal(tr.generate(c, model=tr.G), c)
    with torch.no_grad():
        last.bias.fill_(0.1)
    assert torch.allclose(tr.generate(c, model=tr.G), (c + 0.1).clamp(-1, 1))


@pytest.mark.parametrize("task", ["superres", "denoise", "completion"])
def test_metrics_report_the_trivial_answer_beside_the_model(tmp_path, task):
    cfg = tiny(dataset=f"folder:{_photo_folder(tmp_path)}", image_size=8, task=task, crops_per_image=4)
    tr = Trainer(cfg)
    m = tr.evaluate("test")
    real, _ = tr.data.split("test")
    g = torch.Generator().manual_seed(cfg.seed + 12345)
    make_inputs(cfg, tr.data.split("val")[0], g)  # the val inputs are drawn first
    base = make_inputs(cfg, real, g)[:, :1]
    if task == "superres":  # bicubic upsampling of the 2x average-pooled image
        want = torch.nn.functional.interpolate(
            torch.nn.functional.avg_pool2d(real, 2), scale_factor=2, mode="bicubic"
        ).clamp(-1, 1)
        assert torch.allclose(base, want, atol=1e-6)
    assert m["baseline_psnr"] == pytest.approx(_psnr64(base, real), rel=1e-9)
    assert 0 < m["baseline_ssim"] < 1 and math.isfinite(m["psnr"])


def test_unlabelled_photos_say_why_the_classifier_score_is_absent_and_kid_is_x1000(tmp_path):
    cfg = tiny(dataset=f"folder:{_photo_folder(tmp_path)}", image_size=8, task="superres", crops_per_image=4)
    tr = Trainer(cfg)
    m = tr.evaluate("val")
    assert m["classifier_score"] is None and m["kid_features"] == "pixels"
    assert any("no labels" in n and "classifier_score" in n for n in m["notes"])
    # KID x 10^3 against the unbiased MMD^2 with the cubic kernel, written in float64 numpy.
    fake = tr.generate(tr.eval_inputs["val"]).flatten(1).double().numpy()
    real = tr.data.split("val")[0].flatten(1).double().numpy()
    d = fake.shape[1]

    def k(a, b):
        return (a @ b.T / d + 1) ** 3

    m_, n_ = len(fake), len(real)
    kxx, kyy = k(fake, fake), k(real, real)
    mmd = (
        (kxx.sum() - np.trace(kxx)) / (m_ * (m_ - 1))
        + (kyy.sum() - np.trace(kyy)) / (n_ * (n_ - 1))
        - 2 * k(fake, real).mean()
    )
    assert m["kid"] == pytest.approx(1e3 * mmd, rel=1e-6, abs=1e-9)


def test_a_training_set_smaller_than_a_batch_warns_and_trains(tmp_path):
    write_pngs(tmp_path / "few", n=8, size=8)
    cfg = tiny(
        dataset=f"folder:{tmp_path / 'few'}", resize="center_crop", image_size=8, batch_size=16, steps=1
    )
    with pytest.warns(UserWarning, match="fewer than batch_size=16"):
        s = train(cfg, tmp_path / "run", progress=False)
    assert s["finished"]
    m = s["metrics"]
    assert m["kid"] is None and any("KID needs at least 2" in n for n in m["notes"])


def test_enough_crops_give_no_warning(tmp_path):
    cfg = tiny(dataset=f"folder:{_photo_folder(tmp_path)}", image_size=8, batch_size=16, crops_per_image=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tr = Trainer(cfg)
    assert tr.train_x.shape[0] == 8 * tr.data.num_photos["train"] and tr.batch == 16


def test_photo_crops_resume_exactly(tmp_path):
    """Each epoch's crops are a function of (seed, epoch): stopping and resuming changes nothing."""
    cfg = tiny(
        dataset=f"folder:{_photo_folder(tmp_path)}",
        image_size=8,
        task="superres",
        crops_per_image=4,
        batch_size=8,
        steps=6,
        checkpoint_every=3,
        eval_every=6,
        sample_every=6,
    )
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False, stop_after=3)
    train(None, tmp_path / "b", progress=False, resume=True)
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for k in a["G"]:
        assert torch.equal(a["G"][k], b["G"][k]), k


def test_device_option_and_checkpoints_load_on_the_cpu(tmp_path):
    with pytest.raises(ValueError, match="device"):
        tiny(device="tpu")
    run = tmp_path / "run"
    s = train(tiny(steps=2, eval_every=2, device="cpu"), run, progress=False)
    assert s["device"] == "cpu"
    state = load_checkpoint(run)
    state["config"]["device"] = "cuda"
    save_checkpoint(state, run)
    if torch.cuda.is_available():
        tr = trainer_from_checkpoint(run)
        assert next(tr.G.parameters()).device.type == "cuda"
    else:
        with pytest.raises(ValueError, match="cuda"):
            Trainer(tiny(device="cuda"))
        with pytest.warns(UserWarning, match="on the CPU instead"):
            tr = trainer_from_checkpoint(run)
        assert next(tr.G.parameters()).device.type == "cpu"
    tr = trainer_from_checkpoint(run, device="cpu")
    assert tr.step_ == 2 and torch.equal(
        tr.G.state_dict()[next(iter(state["G"]))], next(iter(state["G"].values()))
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_matches_cpu(tmp_path):  # pragma: no cover - no GPU in CI
    a = train(tiny(steps=2, eval_every=2), tmp_path / "cpu", progress=False)
    b = train(tiny(steps=2, eval_every=2, device="cuda"), tmp_path / "cuda", progress=False)
    assert b["device"].startswith("cuda")
    assert b["metrics"]["psnr"] == pytest.approx(a["metrics"]["psnr"], abs=0.5)


def test_tensorboard_missing_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ValueError, match=r"normreg\[tensorboard\]"):
        train(tiny(tensorboard=True), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_tensorboard_logs_every_scalar_the_lambdas_and_the_grids(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(tiny(steps=4, eval_every=2, sample_every=2, tensorboard=True), run, progress=False)
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    logged = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    for k in logged:
        if k != "step":
            assert (f"lambda/{k}" if k.startswith("lam_") else f"loss/{k}") in tags, k
    assert {"lambda/lam_recon", "lambda/lam_penalty", "val/psnr", "val/baseline_psnr", "val/kid"} <= tags
    ev = acc.Scalars("loss/g_total")
    assert [e.step for e in ev] == [1, 2, 3, 4]
    assert ev[-1].value == pytest.approx(logged["g_total"], rel=1e-6)
    assert [e.step for e in acc.Images("samples")] == [2, 4]


def test_sample_from_a_photo_run_fills_in_center_crops_of_new_photos(tmp_path):
    from PIL import Image

    from normreg.gan.sample import sample

    folder = _photo_folder(tmp_path)
    run = tmp_path / "run"
    train(
        tiny(
            dataset=f"folder:{folder}",
            image_size=8,
            task="superres",
            crops_per_image=4,
            steps=1,
            eval_every=1,
        ),
        run,
        progress=False,
    )
    paths = sample(run, tmp_path / "out", n=2, inputs=folder)
    target = np.asarray(Image.open(tmp_path / "out" / "0000_target.png"))
    assert target.shape == (32, 32)  # an 8-px image shown 4x: one centre-cropped square per photo
    with Image.open(folder / "p0.png") as im:  # 32 wide, 24 high: the centre 24x24, then 8x8
        want = np.asarray(im.crop((4, 0, 28, 24)).resize((8, 8), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(target[::4, ::4], want)
    assert len([p for p in paths if p.name.endswith("_output.png")]) == 2
