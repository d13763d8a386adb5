"""Offline metrics against closed forms and independent implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from normreg.gan import TrainConfig, load_data
from normreg.gan.metrics import kid, load_or_train_classifier, psnr, ssim

pytestmark = pytest.mark.usefixtures("one_thread_and_cache")


def test_psnr_of_identical_images_is_inf():
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    assert psnr(x, x.clone()) == math.inf


def test_psnr_closed_form():
    x = torch.zeros(3, 1, 8, 8)
    d = torch.tensor([0.1, 0.2, 0.4]).view(3, 1, 1, 1)
    expect = np.mean([10 * math.log10(4 / v**2) for v in (0.1, 0.2, 0.4)])
    assert psnr(x + d, x) == pytest.approx(expect, rel=1e-6)


def test_ssim_identical_is_one_and_noise_lowers_it():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 16, 16, generator=g) * 2 - 1
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-9)
    assert ssim(x + 0.3 * torch.randn(x.shape, generator=g), x) < 0.9


def test_ssim_matches_scikit_image_on_a_constant_shift():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 32, 32, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.rand(1, 1, 32, 32, generator=g, dtype=torch.float64)).clamp(0, 1)
    # SSIM's luminance term is not shift-invariant: images in [-1, 1] are measured in [0, 2].
    ref = structural_similarity(
        y[0, 0].numpy() * 2,
        x[0, 0].numpy() * 2,
        data_range=2.0,
        gaussian_weights=True,
        sigma=1.5,
        win_size=11,
        use_sample_covariance=False,
    )
    assert ssim(y * 2 - 1, x * 2 - 1) == pytest.approx(ref, abs=2e-3)


def _kid_loops(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_kid_matches_the_unbiased_estimator_written_with_loops():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(9, 5)), rng.normal(0.5, 1.0, size=(7, 5))
    assert kid(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(_kid_loops(x, y), rel=1e-10)


def test_kid_of_a_set_with_itself_is_about_zero_and_shifted_is_larger():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 16, generator=g)
    same = kid(x, x)
    assert abs(same) < 0.05  # the unbiased estimator's cross term keeps the diagonal: O(1/n)
    assert abs(kid(x[:100], x[:100])) > abs(same)
    assert kid(x + 1.0, x) > 1.0


def test_kid_rejects_bad_shapes():
    with pytest.raises(ValueError, match="kid"):
        kid(torch.zeros(4, 3), torch.zeros(4, 2))


def test_classifier_scores_real_test_digits_above_090_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMREG_CACHE", str(tmp_path / "cache"))
    data = load_data(TrainConfig())
    clf = load_or_train_classifier(data)
    x, y = data.split("test")
    _, logits = clf.predict(x)
    acc = float((logits.argmax(1) == y).double().mean())
    assert acc > 0.9
    files = list((tmp_path / "cache").glob("classifier-*.pt"))
    assert len(files) == 1
    # From the cache: the same weights, and the global RNG is untouched by training.
    state = torch.get_rng_state()
    clf2 = load_or_train_classifier(data)
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(clf.state_dict().values(), clf2.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_classifier_training_is_deterministic_and_leaves_global_rng(tmp_path, monkeypatch):
    from normreg.gan.metrics import train_classifier

    data = load_data(TrainConfig(max_images=120))
    x, y = data.split("train")
    state = torch.get_rng_state()
    a = train_classifier(x, y, 10, seed=3, epochs=2)
    assert torch.equal(torch.get_rng_state(), state)
    b = train_classifier(x, y, 10, seed=3, epochs=2)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_curves_put_penalty_and_lambdas_on_their_own_labelled_axes(tmp_path):
    import csv
    import json

    import matplotlib.pyplot as plt

    from normreg.gan.plots import curves_figure, plot_curves

    with open(tmp_path / "log.jsonl", "w") as fh:
        for s in range(10, 101, 10):
            fh.write(
                json.dumps(
                    {
                        "step": s,
                        "g_adv": 0.7,
                        "g_recon": 0.05,
                        "d_adv": 0.6,
                        "g_total": 5.7,
                        "w_g_recon": 5.0,
                        "g_penalty": 3000.0 - s,
                        "w_g_penalty": 0.03,
                        "lam_recon": 100.0,
                        "lam_penalty": 1e-5 * s / 100,
                        "lam_adv": 1.0,
                    }
                )
                + "\n"
            )
    with open(tmp_path / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "split", "psnr", "baseline_psnr", "ssim", "kid", "kid_floor"])
        w.writerow([50, "val", 20.0, 19.0, 0.8, 3.0, 0.5])
        w.writerow([100, "val", 21.0, 19.0, "", 2.0, 0.5])
    fig = curves_figure(tmp_path)
    by_title = {ax.get_title(): ax for ax in fig.axes}
    assert all(ax.get_ylabel() for ax in fig.axes)  # every panel says what its y axis is
    lines = {t: {ln.get_label() for ln in ax.get_lines()} for t, ax in by_title.items()}
    pen = next(t for t in lines if "penalty R(w)" in t)
    lam = next(t for t in lines if t.startswith("λ values"))
    assert lines[pen] == {"g_penalty"} and lines[lam] == {"lam_recon", "lam_penalty", "lam_adv"}
    assert not any("g_penalty" in v for t, v in lines.items() if t != pen)  # not beside the losses
    assert by_title[lam].get_yscale() == "log"
    ys = next(ln for ln in by_title[lam].get_lines() if ln.get_label() == "lam_penalty").get_ydata()
    assert min(ys) == pytest.approx(1e-6)  # 1e-6 is drawn where it is, not on a "0" tick
    psnr = next(t for t in lines if "PSNR" in t)
    assert lines[psnr] == {"psnr", "baseline_psnr"}
    plt.close(fig)
    assert plot_curves(tmp_path).read_bytes()[:4] == b"\x89PNG"
