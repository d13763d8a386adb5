"""normreg study: the study definitions, their measurements, and each study end to end in
smoke mode on the real trainer (a few steps on a few hundred digits)."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from normreg.study.report import compare, fmt_pm
from normreg.study.studies import (
    HIST_EDGES,
    STUDIES,
    get_study,
    histogram,
    run_study,
    study_points,
    wasserstein1,
)
from normreg.study.sweep import default_backend

gan = pytest.importorskip("normreg.gan")

SMALL = {
    "max_images": 128
}  # as the smoke mode: few enough images that the scoring classifier trains in seconds


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    # the trainer caches its scoring classifier; keep the tests' copy out of the user's cache
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NORMREG_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


# --- definitions --------------------------------------------------------------------------
def test_loss_ablation_has_the_pix2pix_arms_and_a_lambda_sweep():
    st = get_study("loss-ablation")
    arms = {a.name: a for a in st.arms}
    comp = {a.name: a.options for a in st.arms if a.group == "completion"}
    assert set(comp) == {"L1", "L2", "GAN", "cGAN", "L1 + cGAN", "L2 + cGAN"}
    assert comp["L1"]["adv_weight"] == 0 and comp["L1"]["recon"] == "l1"
    assert comp["L2"]["adv_weight"] == 0 and comp["L2"]["recon"] == "l2"
    assert comp["GAN"]["recon"] == "none" and comp["GAN"]["conditional_d"] is False
    assert comp["cGAN"]["recon"] == "none" and comp["cGAN"]["conditional_d"] is True
    assert comp["L1 + cGAN"]["recon"] == "l1" and comp["L1 + cGAN"]["adv_weight"] > 0
    lams = sorted(a.options["recon_weight"] for a in st.arms if a.group == "lambda")
    assert lams == [1, 10, 100, 1000]
    assert all(
        a.options["task"] == "completion" and a.options["mask"] == "bottom_half"
        for a in st.arms
        if a.group in ("completion", "lambda")
    )
    assert {a.options["task"] for a in st.arms if a.group == "denoise"} == {"denoise"}
    assert st.seeds >= 3
    assert "L1 + cGAN, λ=100" in arms


def test_weight_penalty_arms_cover_penalties_ways_and_lambdas():
    st = get_study("weight-penalty")
    seen = {
        (a.options["weight_penalty"], a.options["penalty_mode"], a.options["weight_penalty_strength"])
        for a in st.arms
        if a.group != "none"
    }
    for pen in ("l1", "l2", "elastic_net"):
        for mode in ("loss", "prox"):
            assert len({lam for p, m, lam in seen if (p, m) == (pen, mode)}) >= 3
    assert {m for p, m, _ in seen if p == "l0"} == {"prox"}  # L0 has no gradient
    assert st.seeds >= 3 and st.base["ema_decay"] == 0.0


@pytest.mark.parametrize("name", sorted(STUDIES))
@pytest.mark.parametrize("mode", ["smoke", "full"])
def test_every_arm_is_a_valid_trainer_config(name, mode):
    st = get_study(name)
    points, _ = study_points(st, mode, default_backend())
    assert points
    seeds = {p.seed for p in points}
    assert seeds == ({0} if mode == "smoke" else set(range(st.seeds)))
    for p in points:  # the config holds the arm's options
        arm = next(a for a in st.arms if (a.name, a.group) == (p.labels["arm"], p.labels["group"]))
        for k, v in arm.options.items():
            assert p.config[k] == v


def test_unknown_study_and_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="'name'"):
        run_study("nope", tmp_path)
    with pytest.raises(ValueError, match="'mode'"):
        run_study("loss-ablation", tmp_path, mode="fast")
    with pytest.raises(ValueError, match="'threads'"):
        run_study("loss-ablation", tmp_path, mode="smoke", threads=0)


# --- measurements against independent computations ------------------------------------
def test_wasserstein1_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(500, generator=g) * 2 - 1, torch.randn(500, generator=g).clamp(-1, 1)
    assert wasserstein1(a, b) == pytest.approx(stats.wasserstein_distance(a.numpy(), b.numpy()), rel=1e-9)
    c = torch.rand(300, generator=g)
    assert wasserstein1(a, c) == pytest.approx(stats.wasserstein_distance(a.numpy(), c.numpy()), abs=2e-2)
    assert wasserstein1(a, a.flip(0)) == 0.0


def test_histogram_bins_the_digit_grey_levels():
    levels = torch.arange(17, dtype=torch.float64) / 8 - 1  # the 17 grey levels of sklearn digits in [-1, 1]
    h = histogram(levels.repeat(3))
    assert h == pytest.approx([1 / 17] * 17)
    assert len(HIST_EDGES) == 18 and sum(histogram(torch.rand(1000) * 4 - 2)) == pytest.approx(1.0)


def _row(name, vals):
    n = len(vals)
    mu = sum(vals) / n
    sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    return {
        "labels": {"arm": name},
        "mean": {"kid": mu, "psnr": mu},
        "std": {"kid": sd, "psnr": sd},
        "n": {"kid": n, "psnr": n},
    }


def test_compare_uses_the_seeds_spread_and_the_metric_direction():
    lo, hi = _row("a", [1.0, 1.1, 0.9]), _row("b", [3.0, 3.1, 2.9])
    assert compare(lo, hi, "kid")[0] == "better"  # lower KID is better
    assert compare(lo, hi, "psnr")[0] == "worse"
    noisy = _row("c", [0.0, 4.0, 2.0])
    assert compare(noisy, hi, "kid")[0] == "within spread"
    assert compare(_row("d", [1.0]), _row("e", [5.0]), "kid")[0] == "within spread"  # one seed proves nothing
    assert fmt_pm(0.012345, 0.0021) == "0.0123 ± 0.0021"  # two significant digits of the spread
    assert fmt_pm(25.123, 0.41) == "25.12 ± 0.41" and fmt_pm(float("nan"), 0.0) == "–"


# --- end to end on the real trainer ----------------------------------------------------------
def _check_report(path, figures):
    text = path.read_text()
    assert text.startswith("# ") and "Smoke mode" in text and "±" in text
    for fig in figures:
        assert f"]({fig})" in text
        data = (path.parent / fig).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(path.parent / "results.csv")))
    assert rows and all(r["seed"] == "0" for r in rows)
    return text, rows


def test_loss_ablation_smoke(tmp_path):
    out = tmp_path / "la"
    path = run_study("loss-ablation", out, mode="smoke", progress=False, jobs=2)  # worker processes
    text, rows = _check_report(
        path,
        [
            "loss_ablation_metrics.png",
            "loss_ablation_histograms.png",
            "loss_ablation_samples.png",
            "loss_ablation_lambda.png",
        ],
    )
    st = get_study("loss-ablation")
    assert {r["arm"] for r in rows} == set(st.smoke_arms)
    for r in rows:
        for m in ("psnr", "classifier_score", "kid", "hist_w1"):
            assert math.isfinite(float(r[m]))
    # the stored histograms are distributions and W1 matches them being different from real
    rec = json.loads(next((out / "points").glob("*.json")).read_text())
    assert sum(rec["extra"]["hist_fake"]) == pytest.approx(1.0)
    assert sum(rec["extra"]["hist_real"]) == pytest.approx(1.0)
    assert "What the numbers say" in text
    assert not (out / "runs").exists() or not any((out / "runs").iterdir())  # runs dropped by default

    # resume: nothing is trained again, the report is rebuilt
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "points").glob("*.json")}
    run_study("loss-ablation", out, mode="smoke", progress=False, resume=True, jobs=1)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "points").glob("*.json")} == mtimes
    with pytest.raises(ValueError, match="'out_dir'"):
        run_study("loss-ablation", out, mode="smoke", progress=False)
    with pytest.raises(ValueError, match="'out_dir'"):
        run_study("weight-penalty", out, mode="smoke", progress=False, resume=True)


def test_weight_penalty_smoke(tmp_path):
    path = run_study("weight-penalty", tmp_path, mode="smoke", progress=False, jobs=1, threads=1)
    text, rows = _check_report(path, ["weight_penalty_sparsity.png", "weight_penalty_time.png"])
    by_arm = {r["arm"]: r for r in rows}
    assert "none" in by_arm
    for r in rows:
        assert 0.0 <= float(r["zero_fraction"]) <= 1.0 and float(r["step_ms"]) > 0
    assert float(by_arm["none"]["zero_fraction"]) == 0.0
    if "l0 prox λ=0.01" in by_arm:  # when this build has ProxAdam, the hard threshold makes exact zeros
        assert float(by_arm["l0 prox λ=0.01"]["zero_fraction"]) > 0.0
    else:
        assert "ProxAdam" in text


def test_sweep_smoke_on_the_real_trainer(tmp_path):
    from normreg.gan import TrainConfig
    from normreg.study import sweep

    base = TrainConfig(
        steps=3,
        batch_size=16,
        eval_samples=32,
        eval_every=100,
        sample_every=100,
        checkpoint_every=100,
        **SMALL,
    )
    res = sweep(
        base, {"recon_weight": [1, 100]}, tmp_path, folds=2, criterion="classifier_score+kid", progress=False
    )
    assert len(res.records) == 4
    assert {(r["config"]["folds"], r["config"]["fold"]) for r in res.records} == {(2, 0), (2, 1)}
    best = TrainConfig.from_toml(res.files["best"])
    assert best == base.replace(recon_weight=float(res.best_options["recon_weight"]))
    assert best.folds == 1 and best.seed == base.seed

    # resuming runs nothing (the fake would fail if called)
    def boom(*a, **k):
        raise AssertionError("a finished run was trained again")

    from normreg.study import Backend

    again = sweep(
        base,
        {"recon_weight": [1, 100]},
        tmp_path,
        folds=2,
        resume=True,
        progress=False,
        criterion="classifier_score+kid",
        backend=Backend(config_cls=TrainConfig, train=boom, evaluate=boom),
    )
    assert again.best_options == res.best_options

    # the command line: select again with another criterion, nothing is trained
    from normreg.cli import main

    assert main(["sweep", "--out", str(tmp_path), "--reselect", "--criterion", "psnr", "--no-plot"]) == 0
    expected = max(res.summary, key=lambda r: r["mean"]["psnr"])["labels"]
    assert TrainConfig.from_toml(res.files["best"]).recon_weight == expected["recon_weight"]


def test_cli_errors_and_list(tmp_path, capsys):
    from normreg.cli import main

    assert main(["sweep", "--out", str(tmp_path / "s"), "--grid", "recon_wieght=1,10"]) == 2
    assert "'grid'" in capsys.readouterr().err
    assert (
        main(["sweep", "--out", str(tmp_path / "s"), "--grid", "recon_weight=1", "--criterion", "bogus"]) == 2
    )
    assert "'criterion'" in capsys.readouterr().err
    assert main(["sweep", "--out", str(tmp_path / "s"), "--set", "stepz=3", "--grid", "recon_weight=1"]) == 2
    assert "'--set'" in capsys.readouterr().err
    assert main(["study", "nope", "--out", str(tmp_path / "n")]) == 2
    assert "'name'" in capsys.readouterr().err
    assert main(["study", "--list"]) == 0
    out = capsys.readouterr().out
    assert "loss-ablation" in out and "weight-penalty" in out and "L1 + cGAN" in out


def test_prepare_study_dir_resumes_only_the_same_study_and_deletes_only_a_study(tmp_path):
    import json as _json

    from normreg.study._io import prepare_study_dir

    assert prepare_study_dir(tmp_path / "new", "loss-ablation", "full", False, False) is None
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("x")
    for resume, overwrite in ((True, False), (False, True), (False, False)):
        with pytest.raises(ValueError, match="'out_dir'"):
            prepare_study_dir(other, "loss-ablation", "full", resume, overwrite)
    assert (other / "mine.txt").read_text() == "x"  # never deleted
    st = tmp_path / "st"
    st.mkdir()
    (st / "study.json").write_text(_json.dumps({"study": "loss-ablation", "mode": "smoke", "elapsed_s": 3.0}))
    assert prepare_study_dir(st, "loss-ablation", "smoke", True, False)["elapsed_s"] == 3.0
    with pytest.raises(ValueError, match="in mode 'smoke', not 'loss-ablation' in mode 'full'"):
        prepare_study_dir(st, "loss-ablation", "full", True, False)
    with pytest.raises(ValueError, match="no weight-penalty study"):
        prepare_study_dir(st, "weight-penalty", "smoke", False, True)
    assert prepare_study_dir(st, "loss-ablation", "smoke", False, True) is None and not st.exists()
