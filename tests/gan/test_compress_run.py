"""``normreg compress``: sparse training, pruning, fine-tuning, the compressed checkpoint, the
report, and its refusals; with the library pieces it adds (MAC controller, magnitude baseline,
budget top-up, ``fit_to_state_dict``, ``settle_zero_channels``)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from _gan_util import tiny
from torch import nn

import normreg
from normreg.compress import (
    MacController,
    channel_groups,
    count_macs,
    count_zero_channels,
    fit_to_state_dict,
    macs_after_pruning,
    magnitude_to_macs,
    prune_zero_channels,
    settle_zero_channels,
    top_up_to_macs,
    zero_below,
    zero_smallest_channels,
)
from normreg.gan import evaluate, train
from normreg.gan.compress import CompressConfig, compress, measure_latency
from normreg.gan.models import DCGANGenerator, UNetGenerator, init_weights

pytestmark = pytest.mark.usefixtures("one_thread_and_cache")

pytest.importorskip("torch_pruning")

FAST = dict(sparse_steps=40, finetune_steps=4, interval=5, latency_repeats=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("compress")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NORMREG_CACHE", str(base / "cache"))
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        train(tiny(steps=6, width=0.5, eval_samples=0, max_images=200), base / "run", progress=False)
        torch.set_num_threads(n)
    return base / "run"


def _files(path):
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


# ---- the command, end to end -----------------------------------------------------------------------


def test_magnitude_compress_round_trip(run, tmp_path):
    out = tmp_path / "small"
    r = compress(run, out, CompressConfig(method="magnitude", target_macs=0.5, **FAST), progress=False)
    assert r["mac_fraction"] <= 0.5 and r["target_met"]
    assert r["params"] < r["dense_params"]
    assert r["check_max_abs_diff"] <= 1e-5
    assert {"report.json", "report.md", "checkpoint.pt", "config.toml", "summary.json", "compare.png"} <= set(
        _files(out)
    )
    assert json.loads((out / "report.json").read_text())["macs"] == r["macs"]
    # the checkpoint loads with the pruned widths, and evaluate() gives the report's numbers
    m = evaluate(out, split="test")
    for key in ("psnr", "ssim", "kid", "classifier_score"):
        assert m[key] == pytest.approx(r["compressed"]["test"][key], rel=1e-9, abs=1e-12)
    # ... and the dense numbers are the source run's
    d = evaluate(run, split="test")
    assert d["psnr"] == pytest.approx(r["dense"]["test"]["psnr"], rel=1e-12)
    from normreg.gan.sample import sample

    assert len(sample(out, tmp_path / "png", n=3)) == 3 * 3 + 1
    # the latency rows: both generators, both batch sizes and thread counts
    assert {(x["threads"], x["batch"]) for x in r["latency"]} == {(1, 1), (1, 64), (2, 1), (2, 64)}
    assert all(x["dense_ms"] > 0 and x["compressed_ms"] > 0 for x in r["latency"])
    # a second compress into the same folder needs overwrite=True
    with pytest.raises(ValueError, match="overwrite"):
        compress(run, out, CompressConfig(method="magnitude", target_macs=0.5, **FAST), progress=False)


def test_group_lasso_compress_meets_the_budget(run, tmp_path):
    out = tmp_path / "gl"
    r = compress(run, out, CompressConfig(method="group_lasso", target_macs=0.5, **FAST), progress=False)
    assert r["target_met"] and r["mac_fraction"] <= 0.5
    sparse = [x for x in r["log"] if x["phase"] == "sparse"]
    assert len(sparse) == 40 // 5 and sparse[-1]["lambda"] > 1.0  # λ was raised toward the budget
    assert r["pruned_channels"] > 0
    from normreg.gan.train import trainer_from_checkpoint

    trainer = trainer_from_checkpoint(out)
    assert sum(p.numel() for p in trainer.G.parameters()) == r["params"]
    assert trainer.compressed["method"] == "group_lasso"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="lasso"), "'method'"),
        (dict(target_macs=0.0), "'target_macs'"),
        (dict(target_macs=1.5), "'target_macs'"),
        (dict(sparse_steps=0), "'sparse_steps'"),
        (dict(interval=0), "'interval'"),
        (dict(strength=-1.0), "'strength'"),
        (dict(ramp=2.0), "'ramp'"),
    ],
)
def test_compress_config_refuses(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CompressConfig(**kwargs)


def test_compress_refuses_before_writing(run, tmp_path):
    cfg = CompressConfig(method="magnitude", **FAST)
    with pytest.raises(ValueError, match="no checkpoint"):
        (tmp_path / "empty").mkdir()
        compress(tmp_path / "empty", tmp_path / "o1", cfg, progress=False)
    with pytest.raises(ValueError, match="not a folder"):
        compress(tmp_path / "missing", tmp_path / "o2", cfg, progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        compress(run, tmp_path / "mine", cfg, progress=False)
    with pytest.raises(ValueError, match="is the run being compressed"):
        compress(run, run, cfg, progress=False)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    assert _files(tmp_path / "mine") == ["notes.txt"]


def test_compress_refuses_a_generator_it_cannot_prune(run, tmp_path, monkeypatch):
    import normreg.gan.compress as gc

    monkeypatch.setattr(gc, "prunable_layers", lambda model: [])
    with pytest.raises(ValueError, match="no layer whose channels can be removed"):
        compress(run, tmp_path / "o", CompressConfig(method="magnitude", **FAST), progress=False)
    assert not (tmp_path / "o").exists()


def test_cli_compress_errors_and_run(run, tmp_path, capsys):
    from normreg.cli import main

    assert main(["compress", str(run), "--out", str(tmp_path / "c"), "--target-macs", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "--target-macs" in err and "(0, 1]" in err
    assert not (tmp_path / "c").exists()
    argv = [
        "compress",
        str(run),
        "-o",
        str(tmp_path / "c"),
        "--method",
        "magnitude",
        "--target-macs",
        "0.5",
        "--finetune-steps",
        "2",
        "--latency-repeats",
        "1",
        "--no-progress",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "MACs" in out and "report:" in out


# ---- the library pieces --------------------------------------------------------------------------


def _unet(size=8, width=0.25, seed=0):
    torch.manual_seed(seed)
    g = UNetGenerator(2, 1, size, width)
    g.apply(init_weights)
    return g


def test_fit_to_state_dict_loads_pruned_widths_of_every_family():
    torch.manual_seed(0)
    for make, x in (
        (lambda: UNetGenerator(2, 1, 16, 0.5), torch.randn(3, 2, 16, 16)),
        (lambda: UNetGenerator(4, 3, 32, 0.25, residual=True), torch.randn(2, 4, 32, 32)),
        (lambda: DCGANGenerator(8, 1, 32, 0.5), torch.randn(3, 8)),
    ):
        g = make()
        g.apply(init_weights)
        zero_smallest_channels(g, 0.4)
        small = prune_zero_channels(g, x)
        fresh = make()
        fit_to_state_dict(fresh, small.state_dict())
        fresh.eval(), small.eval()
        assert torch.equal(fresh(x), small(x))
        assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in small.parameters())
    with pytest.raises(ValueError, match="only channel counts"):
        fit_to_state_dict(nn.Conv2d(2, 3, 3), {"weight": torch.zeros(3, 2, 5, 5), "bias": torch.zeros(3)})


def test_settle_zero_channels_makes_group_lasso_zeros_removable():
    g = _unet()
    bn = g.downs[1][1]
    with torch.no_grad():
        g.downs[1][0].weight[:3] = 0
        bn.bias[:3] = 0
        bn.running_mean[:5] = 0.25  # channels 0-2: zero layer, stale mean; 3-4: live channels
    before = count_zero_channels(g)[0]
    assert settle_zero_channels(g) == 3
    assert count_zero_channels(g)[0] == before + 3
    assert torch.all(bn.running_mean[3:5] == 0.25)  # live channels untouched


def test_magnitude_to_macs_is_the_smallest_share_that_fits():
    g = _unet(16, 0.5)
    x = torch.randn(1, 2, 16, 16)
    dense = count_macs(g, (1, 2, 16, 16))
    z, share = magnitude_to_macs(g, x, 0.3)
    assert macs_after_pruning(z, x, (1, 2, 16, 16)) <= 0.3 * dense
    looser = copy.deepcopy(g)
    zero_smallest_channels(looser, max(0.0, share - 0.02))
    assert macs_after_pruning(looser, x, (1, 2, 16, 16)) > 0.3 * dense
    assert count_macs(g, (1, 2, 16, 16)) == dense  # not modified


def test_top_up_zeroes_the_smallest_scores_over_all_layers():
    g = _unet(16, 0.5)
    x = torch.randn(1, 2, 16, 16)
    dense = count_macs(g, (1, 2, 16, 16))
    same, n = top_up_to_macs(g, x, 1.0)
    assert same is g and n == 0
    small, n = top_up_to_macs(g, x, 0.4)
    assert n > 0 and macs_after_pruning(small, x, (1, 2, 16, 16)) <= 0.4 * dense
    # one global threshold: every remaining channel scores above every zeroed one
    from normreg.compress import channel_scores, zero_channels

    s, zc = channel_scores(g), zero_channels(small)
    zeroed = torch.cat([s[k][zc[k]] for k in s])
    kept = torch.cat([s[k][~zc[k]] for k in s if (~zc[k]).sum() > 1])  # (a layer keeps its best one)
    assert zeroed.max() < kept.min()
    zero_below(g, {}, 1e9)  # nothing scored: nothing zeroed
    assert count_zero_channels(g)[0] == 0


def test_mac_controller_raises_lambda_until_the_budget_is_met():
    g = _unet()
    x, y = torch.rand(16, 2, 8, 8) * 2 - 1, torch.rand(16, 1, 8, 8) * 2 - 1
    ctl = MacController(g, x[:1], target=0.5, gain=1.0, interval=5, ramp_steps=60, max_rise=0.2)
    assert ctl.last_fraction == 1.0 and ctl.current_target() == 1.0
    opt = normreg.optim.ProxAdam(
        channel_groups(g, "group_lasso", 1.0), lr=2e-3, penalty_mode="prox", penalty_schedule=ctl
    )
    seen = []  # (fraction, budget, factor) at every measurement
    for i in range(150):
        opt.zero_grad()
        (g(x) - y).abs().mean().backward()
        before = ctl.factor
        opt.step()
        if (i + 1) % 5 == 0:
            seen.append((ctl.last_fraction, ctl.current_target(), ctl.factor))
            rate = math.log(ctl.factor / before)
            assert rate <= 0.2 + 1e-12  # the rise is capped
            if ctl.last_fraction < ctl.current_target():
                assert ctl.factor < before  # below the budget: λ falls
    assert ctl.current_target() == 0.5
    assert min(f for f, _, _ in seen) <= 0.5  # the exact zeros reached the budget
    assert max(k for _, _, k in seen) > 2.0  # λ was raised to get there
    assert ctl.last_fraction == macs_after_pruning(g, x[:1], (1, 2, 8, 8)) / ctl.dense_macs
    state = ctl.state_dict()
    other = MacController(_unet(), x[:1], target=0.9)
    other.load_state_dict(state)
    assert other.factor == ctl.factor and other.current_target() == 0.5
    with pytest.raises(ValueError, match="'target'"):
        MacController(g, x[:1], target=0.0)
    with pytest.raises(TypeError, match="example_input"):
        MacController(g, [x], target=0.5)
    with pytest.raises(ValueError, match="no prunable layer"):
        MacController(nn.Linear(2, 2), torch.zeros(1, 2), target=0.5)


def test_measure_latency_takes_turns_and_restores_threads():
    a, b = nn.Linear(8, 8), nn.Sequential(nn.Linear(8, 8), nn.ReLU())
    a.train()
    n = torch.get_num_threads()
    rows = measure_latency(
        {"a": a, "b": b}, lambda k: torch.zeros(k, 8), batches=(1, 4), threads=(1,), repeats=3
    )
    assert [(r["threads"], r["batch"]) for r in rows] == [(1, 1), (1, 4)]
    assert all(r["a_ms"] > 0 and r["b_ms"] > 0 for r in rows)
    assert torch.get_num_threads() == n and a.training
