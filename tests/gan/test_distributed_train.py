"""The GAN trainer on 2 gloo processes (DistributedDataParallel) against one process.

One spawn of 2 ranks runs every multi-process case while the parent runs the one-process
reference; the parent compares. The claims:

* after a few steps the replicas' parameters are bitwise equal (gradients are all-reduced
  before the optimizer step and the weight penalty);
* the 2-process loss curve equals the 1-process curve with the same global batch, within
  floating-point tolerance (global batch statistics in BatchNorm, the same images and noise);
* a checkpoint written by 1 process resumes on 2 and vice versa, landing where the
  uninterrupted 1-process run lands;
* only rank 0 writes the run directory; errors on rank 0 stop every rank.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from dist_util import start_ranks
from torch import nn

from normreg.gan import TrainConfig, Trainer, load_checkpoint, train
from normreg.gan import distributed as gd

CFG = dict(
    task="completion",
    dataset="digits",
    steps=6,
    batch_size=8,
    width=0.25,
    r1_weight=1.0,
    r1_every=2,  # R1 (double backward through D) on steps 0, 2, 4
    weight_penalty="l1",
    weight_penalty_strength=1e-3,
    penalty_on="both",
    penalty_mode="prox",  # ProxAdam's fused proximal step, after DDP's all-reduce
    checkpoint_every=3,
    log_every=1,
    eval_every=1000,
    sample_every=1000,
)
CURVE = ("d_total", "g_total", "g_recon", "g_adv", "d_real", "d_fake", "g_penalty", "d_penalty")
EXTRA = "add_grad"  # the other penalty mode, checked beside CFG's
TOL = dict(rtol=1e-4, atol=1e-5)


def _err(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - recorded for the parent to check
        return type(exc).__name__, str(exc)
    return None


def _state(tr) -> dict:
    return {**tr.G.state_dict(), **{"D." + k: v for k, v in tr.D.state_dict().items()}}


def _bn_case(rank: int, world: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(8, 3, 2, 2, generator=g), torch.randn(8, 3, 2, 2, generator=g)
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5, generator=g)
        bn.bias.uniform_(-0.5, 0.5, generator=g)
    assert gd.global_batchnorm_(bn) == 1 and isinstance(bn, gd.GlobalBatchNorm2d)
    xl = x[rank::world].clone().requires_grad_()
    y = bn(xl)
    (y * w[rank::world]).sum().backward()
    return dict(
        y=y.detach(),
        xgrad=xl.grad,
        wgrad=bn.weight.grad,
        bgrad=bn.bias.grad,
        rm=bn.running_mean,
        rv=bn.running_var,
    )


def _work(rank, world, pg, dirs):
    import torch.distributed as dist

    out = {"bn": _bn_case(rank, world)}
    cfg = TrainConfig(**CFG)
    # bitwise-equal replicas and the loss curve, stepping a Trainer directly
    tr = Trainer(cfg)
    assert tr.dist is not None and tr.dist.info.world == world
    out["rows"] = tr.dist.rows
    curve = []
    for _ in range(4):
        tr.step()
        curve.append(tr.loss_terms())
    out["curve"] = curve
    out["G"] = {k: v.clone() for k, v in tr.G.state_dict().items()}
    out["D"] = {k: v.clone() for k, v in tr.D.state_dict().items()}
    # the penalty's fused gradient added after DDP's all-reduce, and the penalty as a loss term
    extra = Trainer(cfg.replace(penalty_mode=EXTRA))
    out["extra_curve"] = []
    for _ in range(4):
        extra.step()
        out["extra_curve"].append(extra.loss_terms())
    out[EXTRA] = _state(extra)
    other = Trainer(cfg.replace(penalty_mode="loss", weight_penalty="group_lasso"))
    for _ in range(2):
        other.step()
    out["loss"] = _state(other)
    out["batch_err"] = _err(lambda: Trainer(cfg.replace(batch_size=7)))
    # train(): 2 processes write one run; 2 -> 1 and 1 -> 2 process resumes
    train(cfg, dirs["B"], stop_after=3, progress=False)
    if rank == 0:
        shutil.copytree(dirs["B"], dirs["B1"])
    dist.barrier()
    train(None, dirs["A2"], resume=True, stop_after=5, progress=False)
    out["exists_err"] = _err(lambda: train(cfg, dirs["B"], progress=False))
    return out


def _log(run_dir) -> list[dict]:
    return [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines() if ln.strip()]


def _models(run_dir) -> dict:
    state = load_checkpoint(run_dir)
    return {"step": state["step"], "G": state["G"], "D": state["D"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    dirs = {k: root / k for k in ("A", "A2", "B", "B1", "C")}
    cfg = TrainConfig(**CFG)
    train(cfg, dirs["A"], stop_after=3, progress=False)  # 1 process, checkpoint at step 3
    shutil.copytree(dirs["A"], dirs["A2"])
    shutil.copytree(dirs["A"], dirs["C"])
    ranks = start_ranks(_work, world=2, dirs={k: str(v) for k, v in dirs.items()})
    train(None, dirs["C"], resume=True, stop_after=5, progress=False)  # the 1-process reference
    extra = Trainer(cfg.replace(penalty_mode=EXTRA))  # 1-process reference of the other mode
    extra_curve = []
    for _ in range(4):
        extra.step()
        extra_curve.append(extra.loss_terms())
    results = ranks.results()
    train(None, dirs["B1"], resume=True, stop_after=5, progress=False)  # 2 -> 1 process
    return dirs, results, extra_curve


def test_global_batchnorm_is_batchnorm_of_the_whole_batch(runs):
    _, results, _ = runs
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(8, 3, 2, 2, generator=g), torch.randn(8, 3, 2, 2, generator=g)
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5, generator=g)
        bn.bias.uniform_(-0.5, 0.5, generator=g)
    x.requires_grad_()
    y = bn(x)
    (y * w).sum().backward()
    for r, res in enumerate(results):
        b = res["bn"]
        torch.testing.assert_close(b["y"], y.detach()[r::2])
        torch.testing.assert_close(b["xgrad"], x.grad[r::2])
        torch.testing.assert_close(b["rm"], bn.running_mean)
        torch.testing.assert_close(b["rv"], bn.running_var)
    # DDP averages the parameter gradients; the sum over ranks is the whole batch's gradient
    torch.testing.assert_close(results[0]["bn"]["wgrad"] + results[1]["bn"]["wgrad"], bn.weight.grad)
    torch.testing.assert_close(results[0]["bn"]["bgrad"] + results[1]["bn"]["bgrad"], bn.bias.grad)


def test_each_rank_gets_its_distributed_sampler_share_of_the_global_batch(runs):
    _, results, _ = runs
    rows = [r["rows"] for r in results]
    assert rows[0].tolist() == [0, 2, 4, 6] and rows[1].tolist() == [1, 3, 5, 7]


@pytest.mark.parametrize("mode", ["prox", EXTRA, "loss"])
def test_replicas_are_bitwise_equal_after_training(runs, mode):
    _, (r0, r1), _ = runs
    nets = ("G", "D") if mode == CFG["penalty_mode"] else (mode,)
    for net in nets:
        assert r0[net].keys() == r1[net].keys()
        for k in r0[net]:
            assert torch.equal(r0[net][k], r1[net][k]), f"{mode}: {net}.{k} differs between ranks"
    for curve in ("curve", "extra_curve"):
        assert r0[curve] == r1[curve]  # the logged (all-reduced) terms agree too


@pytest.mark.parametrize("mode", ["prox", EXTRA])
def test_loss_curve_matches_one_process_with_the_same_global_batch(runs, mode):
    dirs, (r0, _), extra_curve = runs
    if mode == EXTRA:
        ref, got_curve = extra_curve, r0["extra_curve"]
    else:
        ref, got_curve = _log(dirs["C"])[:4], r0["curve"]  # 1 process: steps 1-3, resumed exactly: 4
        assert [row["step"] for row in ref] == [1, 2, 3, 4]
    assert any(k.endswith("penalty") for k in got_curve[0])
    for step, (want, got) in enumerate(zip(ref, got_curve, strict=True), 1):
        for k in CURVE:
            assert got[k] == pytest.approx(want[k], rel=TOL["rtol"], abs=TOL["atol"]), f"{k} at step {step}"


def test_only_rank_0_writes_and_its_errors_stop_every_rank(runs):
    dirs, (r0, r1), _ = runs
    assert [row["step"] for row in _log(dirs["B"])] == [1, 2, 3]  # one row per step, not one per rank
    assert r0["exists_err"][0] == "RunDirError" and "already holds a run" in r0["exists_err"][1]
    assert r1["exists_err"][0] == "ValueError" and "rank 0" in r1["exists_err"][1]
    for r in (r0, r1):
        kind, msg = r["batch_err"]
        assert kind == "ValueError" and "'batch_size'" in msg and "2" in msg


@pytest.mark.parametrize("run", ["A2", "B1"], ids=["1-to-2-processes", "2-to-1-processes"])
def test_resume_with_a_different_process_count(runs, run):
    dirs, _, _ = runs
    want, got = _models(dirs["C"]), _models(dirs[run])
    assert got["step"] == want["step"] == 5
    for net in ("G", "D"):
        for k, v in want[net].items():
            torch.testing.assert_close(got[net][k], v, **TOL, msg=f"{net}.{k}")
    rows = _log(dirs[run])
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5]
    for want_row, got_row in zip(_log(dirs["C"]), rows, strict=True):
        for k in CURVE:
            assert got_row[k] == pytest.approx(want_row[k], rel=TOL["rtol"], abs=TOL["atol"])


def test_backend_errors_are_clear(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="'backend' nccl needs CUDA.*gloo"):
        gd.check_backend("nccl")
    with pytest.raises(ValueError, match="'backend' must be one of gloo, nccl"):
        gd.check_backend("mpi")
    assert gd.check_backend(None) == "gloo"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    assert gd.check_backend(None, "cuda") == "nccl"
    assert gd.check_backend(None) == "gloo"  # the trainer's tensors are on the CPU
    with pytest.raises(ValueError, match="'backend' nccl only moves CUDA tensors.*gloo"):
        gd.check_backend("nccl")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="RANK.*torchrun"):
        gd.init_from_env()
    with pytest.raises(ValueError, match="'--nproc'"):
        gd.launch(0, [])
    with pytest.raises(ValueError, match="'nccl'.*computes on the CPU.*gloo"):
        gd.DataParallel(gd.DistInfo(rank=0, world=2, backend="nccl"), nn.Linear(2, 2), None, 8)


def test_single_process_trainer_is_untouched():
    assert gd.current() is None and gd.is_main_process()
    assert gd.attach(nn.Linear(2, 2), None, 8) is None


def test_nproc_relaunches_the_same_command_under_torchrun(monkeypatch, tmp_path):
    from normreg.cli import main

    seen = {}
    monkeypatch.setattr(
        gd, "launch", lambda n, argv, backend=None: seen.update(n=n, argv=argv, backend=backend) or 0
    )
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--nproc",
                "3",
                "--run-dir",
                str(run),
                "--steps",
                "5",
                "--betas",
                "0.5",
                "0.9",
                "--no-conditional-d",
                "--lr-g",
                "0.001",
                "--backend",
                "gloo",
            ]
        )
        == 0
    )
    assert seen["n"] == 3 and seen["backend"] == "gloo"
    argv = seen["argv"]
    assert "--nproc" not in argv and argv[:2] == ["--run-dir", str(run)]
    assert {"--no-conditional-d"} <= set(argv)
    for flag, value in (("--steps", "5"), ("--lr-g", "0.001")):
        assert argv[argv.index(flag) + 1] == value
    assert argv[argv.index("--betas") + 1 : argv.index("--betas") + 3] == ["0.5", "0.9"]
    assert main(["train", "--nproc", "-1"]) == 2  # '--nproc' must be positive (the error is printed)


def test_normreg_train_nproc_2_end_to_end(tmp_path):
    import subprocess
    import sys

    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "normreg",
        "train",
        "--nproc",
        "2",
        "--run-dir",
        str(run),
        "--steps",
        "4",
        "--stop-after",
        "2",
        "--batch-size",
        "8",
        "--width",
        "0.25",
        "--eval-every",
        "1000",
        "--sample-every",
        "1000",
        "--log-every",
        "1",
        "--no-progress",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("run directory:") == 1  # rank 0 reports
    assert [row["step"] for row in _log(run)] == [1, 2]
    state = load_checkpoint(run)
    assert state["step"] == 2 and not any(k.startswith("module.") for k in state["G"])
