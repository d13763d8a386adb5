"""Ring-of-Gaussians metrics, the adaptive-λ controller, the 2-D trainer and the study's plumbing."""

from __future__ import annotations

import math

import pytest
import torch

import normreg
from normreg.stability import AdaptiveLambda, RingConfig, RingTrainer, ring_metrics, ring_modes, train_ring
from normreg.stability.study import run_stability_study, study_runs

SIG = 0.02


def _around(mode_ids, radius_offset=0.0, n_each=100, spread=0.5 * SIG):
    """n_each points per listed mode, each at distance `radius_offset` + a small jitter from its centre."""
    c = ring_modes().double()
    g = torch.Generator().manual_seed(0)
    pts = []
    for k in mode_ids:
        ang = torch.rand(n_each, generator=g, dtype=torch.float64) * 2 * math.pi
        r = radius_offset + spread * torch.rand(n_each, generator=g, dtype=torch.float64)
        pts.append(c[k] + torch.stack([r * ang.cos(), r * ang.sin()], 1))
    return torch.cat(pts)


def test_ring_metrics_hand_made_sets():
    # all 8 modes equally: 8 covered, all high quality, KL 0
    m = ring_metrics(_around(range(8)))
    assert (
        m["modes_covered"] == 8
        and m["hq_fraction"] == 1.0
        and m["kl_uniform"] == pytest.approx(0.0, abs=1e-12)
    )
    # two modes only (mode collapse): KL = log(8/2)
    m = ring_metrics(_around([0, 3]))
    assert m["modes_covered"] == 2 and m["mode_counts"][0] == 100 and m["mode_counts"][3] == 100
    assert m["kl_uniform"] == pytest.approx(math.log(4.0), rel=1e-12)
    # points at 3.5σ from every centre are not high quality; at 2.9σ they are
    assert ring_metrics(_around(range(8), 3.5 * SIG, spread=0.0))["hq_fraction"] == 0.0
    assert ring_metrics(_around(range(8), 2.9 * SIG, spread=0.0))["hq_fraction"] == 1.0
    # the 1% rule: 5 of 1000 samples (0.5%) on a mode do not cover it, 10 (1%) do
    base = torch.zeros(1000, 2, dtype=torch.float64)  # the origin: far from every mode
    c = ring_modes().double()
    x = base.clone()
    x[:5] = c[2]
    m = ring_metrics(x)
    assert (
        m["modes_covered"] == 0
        and m["hq_fraction"] == pytest.approx(0.005)
        and m["kl_uniform"] == pytest.approx(math.log(8))
    )
    x[:10] = c[2]
    assert ring_metrics(x)["modes_covered"] == 1
    # no high-quality sample: KL undefined (NaN), not 0
    assert math.isnan(ring_metrics(base)["kl_uniform"])
    # a non-finite sample is reported
    x[0, 0] = float("nan")
    assert ring_metrics(x)["finite"] is False
    with pytest.raises(ValueError, match="'samples'"):
        ring_metrics(torch.zeros(4, 3))


def test_ring_metrics_uneven_histogram_kl():
    # 300 / 100 on two modes: p = (3/4, 1/4), KL = sum p log(8 p)
    m = ring_metrics(torch.cat([_around([1], n_each=300), _around([5], n_each=100)]))
    want = 0.75 * math.log(8 * 0.75) + 0.25 * math.log(8 * 0.25)
    assert m["kl_uniform"] == pytest.approx(want, rel=1e-12)


def test_controller_moves_lambda_the_right_way():
    c = AdaptiveLambda(target=0.6, gain=0.5, interval=2, base=0.1)
    assert c.factor == 1.0 and c.strength == pytest.approx(0.1)
    # D says "real" to every real sample (r = 1 > 0.6): λ goes up by exp(0.5 * 0.4) per adjustment
    for _ in range(2):
        c.observe(torch.ones(8))
    assert c.step() == pytest.approx(math.exp(0.2))
    assert c.strength == pytest.approx(0.1 * math.exp(0.2))
    # one observation is not enough for the next adjustment (interval 2)
    c.observe(torch.full((8,), -1.0))
    assert c.step() == pytest.approx(math.exp(0.2))
    # r = (-1 + -1)/2 = -1 < 0.6: λ goes down by exp(0.5 * -1.6)
    c.observe(torch.full((8,), -3.0))
    assert c.step() == pytest.approx(math.exp(0.2 - 0.8))
    # at the target nothing changes: half positive, r = 0.2 ... use r given as numbers
    f = c.factor
    c.observe(0.6)
    c.observe(0.6)
    assert c.step() == pytest.approx(f)
    # clipped to [min_factor, max_factor]
    d = AdaptiveLambda(target=0.5, gain=10.0, interval=1, max_factor=2.0, min_factor=0.5)
    d.observe(1.0)
    assert d.step() == 2.0
    for _ in range(5):
        d.observe(-1.0)
        d.step()
    assert d.factor == 0.5
    # state round trip
    e = AdaptiveLambda()
    e.load_state_dict(c.state_dict())
    assert e.state_dict() == c.state_dict()


def test_controller_bad_input():
    for t in (0.0, 1.0, -0.2, 1.5, float("nan")):
        with pytest.raises(ValueError, match="'target'"):
            AdaptiveLambda(target=t)
    with pytest.raises(ValueError, match="'gain'"):
        AdaptiveLambda(gain=0.0)
    with pytest.raises(ValueError, match="'interval'"):
        AdaptiveLambda(interval=0)
    with pytest.raises(ValueError, match="'d_real'"):
        AdaptiveLambda().observe(torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="'d_real'"):
        AdaptiveLambda().observe(1.5)
    with pytest.raises(ValueError, match="'base'"):
        AdaptiveLambda(base=-1.0)


def test_controller_as_prox_optimizer_schedule():
    # ProxAdam reads ctrl(step) as its penalty factor: a raised factor shrinks the weights more
    ctrl = AdaptiveLambda(target=0.5, gain=1.0, interval=1, base=1.0)
    w = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = normreg.optim.ProxSGD([w], lr=0.1, penalty=normreg.SquaredL2(1.0), penalty_schedule=ctrl)
    w.grad = torch.zeros_like(w)
    opt.step()
    assert torch.allclose(w.detach(), torch.full((4,), 1 / 1.1, dtype=torch.float64))
    ctrl.observe(1.0)
    ctrl.step()  # factor e^0.5
    opt.step()
    want = 1 / 1.1 / (1 + 0.1 * math.exp(0.5))
    assert torch.allclose(w.detach(), torch.full((4,), want, dtype=torch.float64))


_TINY = dict(
    steps=6,
    hidden=8,
    batch_size=16,
    eval_every=3,
    eval_samples=64,
    log_every=2,
    checkpoint_every=3,
    snapshots=(0, 6),
    snapshot_samples=10,
)


@pytest.mark.parametrize(
    "opts",
    [
        {"r1_gamma": 1.0, "d_penalty": "l1", "d_penalty_strength": 0.1},
        {
            "spectral_norm": True,
            "d_penalty": "l2",
            "d_penalty_strength": 1.0,
            "adaptive_target": 0.6,
            "adaptive_interval": 2,
        },
    ],
)
def test_ring_training_checkpoint_round_trip(tmp_path, opts):
    cfg = RingConfig(**_TINY, **opts)
    full = train_ring(cfg, tmp_path / "full")
    train_ring(cfg, tmp_path / "half", stop_after=3)
    resumed = train_ring(None, tmp_path / "half", resume=True)
    assert resumed["steps"] == full["steps"] == 6
    a = RingTrainer(cfg)
    a.load_state_dict(normreg.gan.load_checkpoint(tmp_path / "full"))
    b = RingTrainer(cfg)
    b.load_state_dict(normreg.gan.load_checkpoint(tmp_path / "half"))
    for pa, pb in zip(a.G.state_dict().values(), b.G.state_dict().values()):
        assert torch.equal(pa, pb)  # N steps = N/2, resume, N/2 more, bit for bit
    assert torch.equal(a.generate(), b.generate())
    assert full["metrics"] == resumed["metrics"]
    assert full["curve"] == resumed["curve"] and [c["step"] for c in full["curve"]] == [3, 6]
    assert set(full["snapshots"]) == {"0", "6"} and full["snapshots"] == resumed["snapshots"]
    if opts.get("adaptive_target"):
        assert full["lam_d_final"] == resumed["lam_d_final"] and full["lam_d_final"] != 1.0
    if opts.get("d_penalty") == "l1":
        assert full["d_weights"]["d_zero_fraction"] >= 0.0
    with pytest.raises(ValueError, match="already holds a run"):
        train_ring(cfg, tmp_path / "full")


def test_ring_config_and_study_bad_input(tmp_path):
    with pytest.raises(ValueError, match="'r1_gamma'"):
        RingConfig(r1_gamma=-1.0)
    with pytest.raises(ValueError, match="'d_penalty_strength'"):
        RingConfig(d_penalty="l2", d_penalty_strength=-0.1)
    with pytest.raises(ValueError, match="'d_penalty'"):
        RingConfig(d_penalty="l3")
    with pytest.raises(ValueError, match="'adaptive_target'"):
        RingConfig(d_penalty="l2", d_penalty_strength=1.0, adaptive_target=1.0)
    with pytest.raises(ValueError, match="'adaptive_target'"):
        RingConfig(adaptive_target=0.6)  # nothing to scale
    with pytest.raises(ValueError, match="unknown option"):
        RingConfig.from_dict({"gamma": 1.0})
    with pytest.raises(ValueError, match="'arms': unknown arm"):
        study_runs("full", arms=["none", "WGAN-GP"])
    runs = study_runs("full", parts=("ring",))
    assert len(runs) == 12 * 5 and len({r["key"] for r in runs}) == 60
    assert [r["seed"] for r in runs[:12]] == [0] * 12  # seed-major
    with pytest.raises(ValueError, match="'mode'"):
        study_runs("medium")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("")
    with pytest.raises(ValueError, match="not empty"):
        run_stability_study(tmp_path / "x", mode="smoke")


def test_train_help_has_no_ring_options(capsys, tmp_path):
    from normreg.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for word in (
        "ring",
        "r1-gamma",
        "d-penalty",
    ):  # the image trainer's --d-spectral-norm / --adaptive-* are its own
        assert word not in text.lower()
    assert main(["study", "--list"]) == 0
    out = capsys.readouterr().out
    assert "stability:" in out and "12 arms x 5 seeds" in out and "spectral norm" in out
    assert "digits (unconditional, the image trainer): the same 12 arms x 3 seeds" in out
    # the study's bad input through the CLI: a clear error, exit status 2
    bad = tmp_path / "full"
    bad.mkdir()
    (bad / "x").write_text("")
    assert main(["study", "stability", "--out", str(bad), "--smoke"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_smoke_study_writes_report(tmp_path):
    out = tmp_path / "st"
    path = run_stability_study(
        out, mode="smoke", arms=["none", "adaptive L2 (target 0.6)"], parts=("ring",), jobs=1, progress=False
    )
    # (two arms: the report's tables and figures for one plain and one controlled arm)
    text = path.read_text()
    assert "| none | 1 |" in text and "adaptive L2 (target 0.6)" in text
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("arm,group,seed,diverged") and len(rows) == 3
    assert (out / "samples_grid.png").is_file() and (out / "final_state.png").is_file()
    # resume keeps the finished runs; a second plain run refuses the folder
    run_stability_study(
        out, mode="smoke", arms=["none"], parts=("ring",), jobs=1, resume=True, progress=False, report=False
    )
    with pytest.raises(ValueError, match="not empty"):
        run_stability_study(out, mode="smoke", jobs=1)


def test_class_coverage_hand_made():
    from normreg.stability.coverage import class_coverage

    eye = torch.eye(10)
    m = class_coverage(eye.repeat(5, 1))  # every class equally often
    assert m["entropy"] == pytest.approx(math.log(10), rel=1e-12) and m[
        "entropy_normalized"
    ] == pytest.approx(1.0)
    assert m["classes_present"] == 10
    m = class_coverage(eye[[3] * 20])  # total collapse
    assert m["entropy"] == 0.0 and m["classes_present"] == 1
    m = class_coverage(torch.tensor([1, 1, 1, 7]), num_classes=10)
    assert m["entropy"] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), rel=1e-12)
    with pytest.raises(ValueError, match="num_classes"):
        class_coverage(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="class indices"):
        class_coverage(torch.tensor([1, 12]), num_classes=10)


def test_divergence_count_test_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    from normreg.stability.report import more_divergences

    for ka, kb in ((4, 0), (3, 0), (5, 1), (2, 0), (0, 3), (5, 2)):
        p = stats.fisher_exact([[ka, 5 - ka], [kb, 5 - kb]], alternative="greater")[1]
        assert more_divergences(ka, 5, kb, 5) == (ka * 5 > kb * 5 and p < 0.05)
