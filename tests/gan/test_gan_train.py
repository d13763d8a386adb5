"""Short training runs of every task and data kind, exact resume, checkpoints, run folders."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from _gan_util import assert_same_checkpoints, tiny, write_idx, write_pngs

from normreg.gan import CheckpointError, RunDirError, TrainConfig, Trainer, evaluate, load_checkpoint, train
from normreg.gan.checkpoint import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread_and_cache")


def _check_run_dir(run, cfg):
    for name in ("config.toml", "metrics.csv", "log.jsonl", "summary.json", "curves.png", "checkpoint.pt"):
        assert (run / name).is_file(), name
    assert TrainConfig.from_toml(run / "config.toml") == cfg
    assert (run / "samples" / "final.png").is_file()
    logs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == list(range(1, cfg.steps + 1))
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == list(range(cfg.eval_every, cfg.steps + 1, cfg.eval_every))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == cfg.steps and summary["finished"]
    return logs, rows, summary


@pytest.mark.parametrize("task", ["completion", "denoise", "superres", "unconditional"])
def test_each_task_trains_on_digits(tmp_path, task):
    cfg = tiny(task=task)
    summary = train(cfg, tmp_path / "run", progress=False)
    logs, _, _ = _check_run_dir(tmp_path / "run", cfg)
    m = summary["metrics"]
    if task != "unconditional":
        assert 0 < m["psnr"] < math.inf and -1 <= m["ssim"] <= 1
        assert 0 <= m["classifier_score"] <= 1
        assert {"g_recon", "w_g_recon", "lam_recon"} <= set(logs[-1])
        assert logs[-1]["w_g_recon"] == pytest.approx(100.0 * logs[-1]["g_recon"], rel=1e-5)
    else:
        assert m["psnr"] is None and m["classifier_score"] is None and 0 <= m["class_confidence"] <= 1
    assert m["kid"] is not None and m["kid_floor"] is not None and m["kid_features"] == "classifier"
    assert logs[-1]["w_g_penalty"] == pytest.approx(1e-5 * logs[-1]["g_penalty"], rel=1e-6)
    assert all(math.isfinite(v) for v in logs[-1].values())


def test_folder_textures_and_mnist_data_train(tmp_path):
    folder = tmp_path / "imgs"
    write_pngs(folder, n=16, size=12, mode="RGB")
    s = train(
        tiny(dataset=f"folder:{folder}", image_size=8, steps=2, eval_every=2), tmp_path / "r1", progress=False
    )
    assert s["metrics"]["kid_features"] == "pixels" and s["metrics"]["classifier_score"] is None
    s = train(
        tiny(dataset="textures", image_size=16, steps=2, eval_every=2, task="superres"),
        tmp_path / "r2",
        progress=False,
    )
    assert s["image_size"] == 16
    rng = np.random.default_rng(0)
    (tmp_path / "m").mkdir()
    write_idx(tmp_path / "m" / "train-images-idx3-ubyte", rng.integers(0, 256, (40, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "m" / "train-labels-idx1-ubyte", np.arange(40) % 4, compress=True)
    s = train(
        tiny(dataset=f"mnist:{tmp_path / 'm'}", image_size=8, steps=2, eval_every=2, task="denoise"),
        tmp_path / "r3",
        progress=False,
    )
    assert s["num_train"] + s["num_val"] + s["num_test"] == 40


@pytest.mark.parametrize(
    "changes",
    [
        dict(
            task="denoise",
            dropout=0.5,
            r1_weight=1.0,
            r1_every=2,
            penalty_on="both",
            penalty_mode="loss",
            penalty_schedule="cosine",
            recon_schedule="linear_warmup",
        ),
        dict(
            task="unconditional",
            weight_penalty="elastic_net",
            penalty_mode="prox",
            penalty_on="both",
            penalty_schedule="linear_warmup",
            warmup_fraction=0.5,
            tv_weight=0.1,
        ),
    ],
    ids=["denoise-loss", "unconditional-prox"],
)
def test_resume_is_bit_exact(tmp_path, changes):
    cfg = tiny(steps=6, eval_every=3, checkpoint_every=2, **changes)
    train(cfg, tmp_path / "straight", progress=False)
    part = train(cfg, tmp_path / "resumed", progress=False, stop_after=3)
    assert part["steps"] == 3 and not part["finished"]
    train(cfg, tmp_path / "resumed", progress=False, resume=True)
    assert_same_checkpoints(tmp_path / "straight", tmp_path / "resumed")
    assert (tmp_path / "straight" / "log.jsonl").read_text() == (
        tmp_path / "resumed" / "log.jsonl"
    ).read_text()
    ma = (tmp_path / "straight" / "metrics.csv").read_text()
    assert ma == (tmp_path / "resumed" / "metrics.csv").read_text()


def test_run_dir_is_not_overwritten_without_overwrite(tmp_path):
    cfg = tiny(steps=2, eval_every=2)
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(RunDirError, match="overwrite"):
        train(cfg.replace(seed=1), run, progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    (run / "notes.txt").write_text("mine")
    train(cfg.replace(seed=1), run, progress=False, overwrite=True)
    assert (run / "notes.txt").read_text() == "mine"  # only the run's own files are replaced
    assert TrainConfig.from_toml(run / "config.toml").seed == 1


def test_bad_data_fails_before_the_run_dir_is_touched(tmp_path):
    run = tmp_path / "run"
    train(tiny(steps=2, eval_every=2), run, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    with pytest.raises(ValueError, match="does not exist"):
        train(tiny(dataset=f"folder:{tmp_path / 'nope'}"), run, progress=False, overwrite=True)
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before


def test_resume_errors(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        train(None, tmp_path / "nothing", resume=True, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="no checkpoint"):
        train(None, tmp_path / "empty", resume=True, progress=False)
    cfg = tiny(steps=2, eval_every=2)
    train(cfg, tmp_path / "run", progress=False, stop_after=1)
    with pytest.raises(ValueError, match="'recon_weight'"):
        train(cfg.replace(recon_weight=5.0), tmp_path / "run", resume=True, progress=False)
    s = train(cfg.replace(steps=3), tmp_path / "run", resume=True, progress=False)  # steps may grow
    assert s["steps"] == 3


def test_corrupt_checkpoint_is_reported_and_the_previous_one_offered(tmp_path):
    cfg = tiny(steps=4, eval_every=4, checkpoint_every=2)
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    assert load_checkpoint(run, previous=True)["step"] == 2
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="checkpoint.pt") as exc:
        load_checkpoint(run)
    assert "checkpoint.prev.pt" in str(exc.value) and "step 2" in str(exc.value)
    assert exc.value.previous == run / "checkpoint.prev.pt"
    with pytest.raises(CheckpointError, match="corrupt"):
        train(None, run, resume=True, progress=False)
    s = train(None, run, resume=True, from_previous=True, progress=False)
    assert s["steps"] == 4 and s["finished"]
    (run / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a normreg checkpoint"):
        load_checkpoint(run / "checkpoint.pt")


def test_checkpoint_write_keeps_previous_and_is_atomic(tmp_path):
    save_checkpoint({"step": 1}, tmp_path)
    save_checkpoint({"step": 2}, tmp_path)
    assert load_checkpoint(tmp_path)["step"] == 2
    assert load_checkpoint(tmp_path, previous=True)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]


@pytest.mark.parametrize("mode", ["loss", "add_grad"])
@pytest.mark.parametrize("kind", ["l1", "l2", "elastic_net", "group_lasso"])
def test_weight_penalty_gradient_matches_autograd_reference(kind, mode):
    """The trainer's penalty step adds exactly λ ∇R to G's gradients (against _reference in float64)."""
    from normreg import _reference as ref

    cfg = tiny(
        weight_penalty=kind,
        penalty_mode=mode,
        weight_penalty_strength=0.01,
        adv_weight=0.0,
        recon="l1",
        ema_decay=0.0,
    )
    tr = Trainer(cfg)
    seen = {}

    def hook(self_opt, args, kwargs):
        seen["grads"] = [p.grad.clone() for p in tr._penalized(tr.groups_g)]

    h = tr.opt_g.register_step_pre_hook(hook)
    params = [p.detach().clone() for p in tr._penalized(tr.groups_g)]
    no_pen = Trainer(cfg.replace(weight_penalty="none"))
    h2 = no_pen.opt_g.register_step_pre_hook(
        lambda o, a, k: seen.__setitem__("plain", [p.grad.clone() for p in no_pen.G.parameters()])
    )
    tr.step()
    no_pen.step()
    h.remove(), h2.remove()
    names_plain = dict(zip([n for n, _ in no_pen.G.named_parameters()], seen["plain"], strict=True))
    names_pen = [n for g in tr.groups_g if g.get("penalty") is not None for n in g["param_names"]]
    pen = tr.unit_penalty.scaled(tr._penalty_at(0))
    if kind != "group_lasso":
        expect = ref.penalty_grad(pen.kind, [p.double() for p in params], pen._s1(), pen._s2())
    else:  # λ w / ||w_group||, groups the output channels: dim 1 of a ConvTranspose weight, else dim 0
        expect = []
        for n, p in zip(names_pen, params, strict=True):
            layer = tr.G.get_submodule(n.rpartition(".")[0])
            dim = 1 if isinstance(layer, torch.nn.ConvTranspose2d) else 0
            w = p.double()
            norms = w.pow(2).sum(dim=[d for d in range(w.dim()) if d != dim], keepdim=True).sqrt()
            expect.append(0.01 * w / norms)
        assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in tr.G.modules())  # the case that differs
    for n, g, e in zip(names_pen, seen["grads"], expect, strict=True):
        torch.testing.assert_close(g.double() - names_plain[n].double(), e, rtol=1e-4, atol=1e-6)


def test_evaluate_api_on_checkpoint(tmp_path):
    cfg = tiny(steps=2, eval_every=2)
    train(cfg, tmp_path / "run", progress=False)
    m = evaluate(tmp_path / "run", split="val")
    assert m["step"] == 2 and m["split"] == "val" and 0 < m["psnr"] < math.inf
    m2 = evaluate(tmp_path / "run" / "checkpoint.pt", split="test")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert m2["psnr"] == pytest.approx(summary["metrics"]["psnr"], rel=1e-12)
    with pytest.raises(ValueError, match="'split'"):
        evaluate(tmp_path / "run", split="train")


def test_l1_only_and_unconditional_d_variants(tmp_path):
    s = train(tiny(steps=2, eval_every=2, adv_weight=0.0), tmp_path / "l1only", progress=False)
    assert s["params_d"] == 0 and "g_adv" not in s["losses"]
    s = train(
        tiny(steps=2, eval_every=2, conditional_d=False, recon="ssim", r1_weight=1.0, r1_every=1),
        tmp_path / "ud",
        progress=False,
    )
    assert {"d_r1", "w_d_r1", "g_adv"} <= set(s["losses"])
    assert s["losses"]["w_d_r1"] == pytest.approx(0.5 * 1.0 * 1 * s["losses"]["d_r1"], rel=1e-5)


def test_prox_mode_makes_exact_zeros_and_follows_the_schedule():
    """ProxAdam's soft threshold zeroes small weights exactly; a gradient penalty does not."""
    base = tiny(
        weight_penalty="l1",
        weight_penalty_strength=200.0,
        steps=4,
        penalty_schedule="linear_warmup",
        warmup_fraction=0.5,
    )
    zeros = {}
    for mode in ("prox", "add_grad"):
        tr = Trainer(base.replace(penalty_mode=mode))
        for _ in range(3):
            tr.step()
        ws = tr._penalized(tr.groups_g)
        zeros[mode] = sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)
        # threshold lr * λ: 0, then 0.02, then 0.04 against weights ~ N(0, 0.02)
        assert tr.lambdas(0)["lam_penalty"] == 0.0 and tr.lambdas(1)["lam_penalty"] == pytest.approx(100.0)
        assert tr.lambdas(2)["lam_penalty"] == pytest.approx(200.0) and tr.lambdas(3)[
            "lam_penalty"
        ] == pytest.approx(200.0)
    assert zeros["prox"] > 0.5 and zeros["add_grad"] < 0.01
    unpen = [p for g in tr.groups_g if g.get("penalty") is None for p in g["params"]]
    assert unpen and all(
        "bias" in n or "norm" in n.lower() or n.split(".")[-2].isdigit()
        for g in tr.groups_g
        if g.get("penalty") is None
        for n in g["param_names"]
    )


def test_tiny_data_set_trains_and_reports_no_kid_for_single_images(tmp_path):
    write_pngs(tmp_path / "few", n=5, size=8)
    s = train(
        tiny(dataset=f"folder:{tmp_path / 'few'}", steps=1, eval_every=1), tmp_path / "run", progress=False
    )
    assert s["num_val"] == 1 and s["metrics"]["kid"] is None and s["metrics"]["psnr"] > 0


@pytest.mark.parametrize("kind", ["l1", "elastic_net", "group_lasso"])
def test_grad_mode_trains_like_add_grad(kind):
    """'grad' (ProxAdam's penalty_mode="grad", formerly the trainer's 'fused') puts the penalty's gradient inside ProxAdam's update: the same math as
    add_grad_ followed by torch.optim.Adam (to a few ulps per step), with .grad untouched."""
    from normreg.optim import ProxAdam

    base = tiny(weight_penalty=kind, weight_penalty_strength=0.05, steps=3, ema_decay=0.0)
    fused, plain = Trainer(base.replace(penalty_mode="grad")), Trainer(base.replace(penalty_mode="add_grad"))
    assert isinstance(fused.opt_g, ProxAdam) and fused.opt_g.param_groups[0]["penalty_mode"] == "grad"
    assert isinstance(plain.opt_g, torch.optim.Adam)
    for _ in range(3):
        fused.step()
        plain.step()
    for p, q in zip(fused.G.parameters(), plain.G.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
    moved = [(p - q).abs().max().item() for p, q in zip(fused.G.parameters(), Trainer(base).G.parameters())]
    assert max(moved) > 1e-4  # the networks did train
