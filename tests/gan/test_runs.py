"""Runs that survive what goes wrong: divergence, torn logs, full disks, crashes mid-save, kills.

Every run here is one of the tiniest the trainer allows (tests/_gan_util.py); results after a
crash and a resume are compared bit for bit with an uninterrupted run of the same config.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random

import pytest
import torch
from _fake_trainer import FakeTrainer
from _gan_util import assert_same_checkpoints, tiny

import normreg.gan.checkpoint as ckpt_mod
from normreg.cli import main
from normreg.gan import CheckpointError, RunDirError, load_checkpoint, train
from normreg.gan.checkpoint import save_checkpoint
from normreg.gan.plots import plot_curves
from normreg.gan.train import NonFiniteError, Trainer
from normreg.study import sweep
from normreg.study.report import fmt_pm

pytestmark = pytest.mark.usefixtures("one_thread_and_cache")


@pytest.fixture(autouse=True)
def _quick_curves(monkeypatch):
    """A stand-in for curves.png: matplotlib's layout costs far more than these tiny runs;
    test_plot_curves_handles_non_finite_values_and_torn_lines draws the real one. Patched
    where the run loop looks the name up (it imports plot_curves itself)."""
    import normreg.gan.plots as plots
    import normreg.gan.run_loop as run_loop

    def stand_in(run_dir, out=None):
        out = out or os.path.join(run_dir, "curves.png")
        with open(out, "wb") as fh:
            fh.write(b"curves")
        return out

    monkeypatch.setattr(plots, "plot_curves", stand_in)
    monkeypatch.setattr(run_loop, "plot_curves", stand_in)


SMALL = dict(steps=4, eval_every=4, sample_every=4, checkpoint_every=2, eval_samples=12, max_images=64)


def _assert_same_run(a, b):
    """Two run directories hold the same final checkpoint, losses and metrics, bit for bit."""
    assert_same_checkpoints(a, b)
    for name in ("log.jsonl", "metrics.csv"):
        assert (a / name).read_text() == (b / name).read_text(), name


class _Crash(BaseException):
    """Stands for a kill -9: nothing in the trainer catches it."""


# -- divergence ----------------------------------------------------------------------------------
def test_nonfinite_weight_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_step = Trainer.step

    def step(self):
        real_step(self)
        if self.step_ == 3:  # the optimizer blew a weight up at step 3
            with torch.no_grad():
                next(self.G.parameters()).view(-1)[0] = math.nan

    monkeypatch.setattr(Trainer, "step", step)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=r"at step 3: .*checkpoint.pt, step 2\) is kept") as exc:
        train(tiny(**SMALL), run, progress=False)
    assert exc.value.step == 3 and exc.value.name.startswith("weight ") and exc.value.name.endswith(" of G")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "diverged" and not summary["finished"] and summary["steps"] == 3
    assert summary["nonfinite"]["step"] == 3 and summary["checkpoint_step"] == 2
    state = load_checkpoint(run)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["G"].values() if v.is_floating_point())
    rows = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert (run / "curves.png").is_file()


def test_diverging_cli_run_ends_with_one_line_and_continue_trains_on(tmp_path, capsys):
    flags = [
        "--steps",
        "2",
        "--width",
        "0.25",
        "--max-images",
        "64",
        "--eval-samples",
        "12",
        "--batch-size",
        "16",
        "--log-every",
        "1",
        "--recon-weight",
        "1e300",
    ]
    rc = main(["train", *flags, "-o", str(tmp_path / "a"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "non-finite loss term 'w_g_recon' = inf at step 1" in lines[0]
    assert "--on-nonfinite continue" in lines[0]
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["status"] == "diverged"
    assert not (tmp_path / "a" / "checkpoint.pt").exists()

    rc = main(["train", *flags, "-o", str(tmp_path / "b"), "--no-progress", "--on-nonfinite", "continue"])
    err = capsys.readouterr().err
    assert rc == 0 and err.count("warning: non-finite") == 1
    s = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert s["status"] == "finished" and s["steps"] == 2 and s["nonfinite"]["step"] == 1
    assert s["losses"]["w_g_recon"] in ("inf", "nan")  # JSON has no inf: written as a string


def test_plot_curves_handles_non_finite_values_and_torn_lines(tmp_path):
    rows = [
        {"step": 1, "g_total": 1.0, "g_recon": 0.5},
        {"step": 2, "g_total": "nan", "g_recon": "inf"},
        {"step": 3, "g_total": 0.8, "g_recon": 0.4},
    ]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "g_to')
    (tmp_path / "metrics.csv").write_text("step,split,psnr,kid\n2,val,nan,\n3,val,12.5,0.1\n")
    assert plot_curves(tmp_path) == tmp_path / "curves.png"
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- resume after a crash -------------------------------------------------------------------------
def test_resume_tolerates_a_torn_last_log_line_and_names_a_corrupt_one(tmp_path):
    cfg = tiny(**SMALL)
    train(cfg, tmp_path / "straight", progress=False)
    run = tmp_path / "run"
    train(cfg, run, progress=False, stop_after=2)
    with open(run / "log.jsonl", "a") as fh:  # a full disk tore the next line
        fh.write('{"step": 3, "d_real": 0.69, "d_fa')
    with open(run / "metrics.csv", "a") as fh:
        fh.write("4,val,12.")
    train(None, run, resume=True, progress=False)
    _assert_same_run(tmp_path / "straight", run)
    # a line torn in the middle of the file is not a crash's: it is reported, naming the file
    text = (run / "log.jsonl").read_text().splitlines()
    text[1] = text[1][:20]
    (run / "log.jsonl").write_text("\n".join(text) + "\n")
    save_checkpoint(load_checkpoint(run, previous=True), run)  # step 2: logs get truncated
    with pytest.raises(ValueError, match=r"log\.jsonl' is corrupt at line 2"):
        train(cfg.replace(steps=5), run, resume=True, progress=False)


def test_crash_between_the_two_renames_is_recovered_and_reported(tmp_path, monkeypatch, capsys):
    cfg = tiny(**SMALL)
    train(cfg, tmp_path / "straight", progress=False)
    run = tmp_path / "run"
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        if os.path.basename(dst) in ("checkpoint.pt", "checkpoint.prev.pt"):
            calls.append(dst)
            # the save at step 4: checkpoint.pt -> checkpoint.prev.pt done, then the crash
            if len(calls) == 3:
                raise _Crash
        real_replace(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "replace", replace)
    with pytest.raises(_Crash):
        train(cfg, run, progress=False)
    monkeypatch.setattr(ckpt_mod.os, "replace", real_replace)
    assert not (run / "checkpoint.pt").exists() and load_checkpoint(run, previous=True)["step"] == 2
    (tmp,) = run.glob(".checkpoint.pt.tmp*")
    capsys.readouterr()
    train(None, run, resume=True, progress=False)
    err = capsys.readouterr().err
    assert f"recovered '{run / 'checkpoint.pt'}' (step 4) from {tmp.name}" in err
    assert not list(run.glob(".*.tmp*"))
    assert load_checkpoint(run, previous=True)["step"] == 2  # the order a save would have left
    _assert_same_run(tmp_path / "straight", run)


def test_fault_injection_random_kills_then_resume_is_bit_exact(tmp_path, monkeypatch):
    """Crash at random moments (a step, a log write, either rename of a checkpoint save),
    resume each time, and end bit-equal to an uninterrupted run."""
    cfg = tiny(**{**SMALL, "steps": 6, "checkpoint_every": 2, "eval_every": 3, "sample_every": 3})
    train(cfg, tmp_path / "straight", progress=False)
    run = tmp_path / "run"
    rng = random.Random(15)
    events = [0]
    crash_at = [rng.randrange(1, 15)]
    real_replace, real_step = os.replace, Trainer.step

    def tick():
        events[0] += 1
        if events[0] == crash_at[0]:
            raise _Crash

    def replace(src, dst):
        tick()
        real_replace(src, dst)

    def step(self):
        real_step(self)
        tick()

    monkeypatch.setattr(ckpt_mod.os, "replace", replace)
    monkeypatch.setattr(Trainer, "step", step)
    crashes = 0
    for attempt in range(5):
        try:
            if (run / "checkpoint.pt").exists() or list(run.glob(".checkpoint.pt.tmp*")):
                train(None, run, resume=True, progress=False)
            else:  # killed before its first checkpoint: start again
                train(cfg, run, progress=False, overwrite=run.exists())
            break
        except _Crash:
            crashes += 1
            # three random kills at most, then the run may finish
            events[0], crash_at[0] = 0, (rng.randrange(1, 15) if attempt < 2 else 0)
    assert crashes >= 2
    assert not list(run.glob(".*.tmp*")) and not list((run / "samples").glob(".*"))
    _assert_same_run(tmp_path / "straight", run)
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"


# -- I/O errors and stale files -------------------------------------------------------------------
def test_full_disk_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch, capsys):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod.os, "fsync", full)
    run = tmp_path / "run"
    with pytest.raises(OSError) as exc:
        train(tiny(**SMALL), run, progress=False)
    assert exc.value.filename == str(run / "checkpoint.pt") and exc.value.errno == errno.ENOSPC
    assert not list(run.glob(".*tmp*"))
    rc = main(
        [
            "train",
            "--steps",
            "2",
            "--width",
            "0.25",
            "--max-images",
            "64",
            "--checkpoint-every",
            "1",
            "-o",
            str(tmp_path / "cli"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert (
        f"normreg train: error: cannot write or read '{tmp_path / 'cli' / 'checkpoint.pt'}': No space left"
        in err
    )
    assert not list((tmp_path / "cli").glob(".*tmp*"))


def test_full_disk_while_logging_names_the_log(tmp_path, monkeypatch):
    import builtins

    import normreg.gan.run_loop as run_loop  # the loop opens log.jsonl

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

    def fake_open(path, *args, **kw):
        fh = builtins.open(path, *args, **kw)
        return Full(fh) if str(path).endswith("log.jsonl") else fh

    monkeypatch.setattr(run_loop, "open", fake_open, raising=False)
    with pytest.raises(OSError) as exc:
        train(tiny(**SMALL), tmp_path / "run", progress=False)
    assert exc.value.filename == str(tmp_path / "run" / "log.jsonl") and exc.value.errno == errno.ENOSPC


def test_stale_temporaries_are_removed_on_resume_and_overwrite(tmp_path):
    cfg = tiny(**SMALL)
    run = tmp_path / "run"
    train(cfg, run, progress=False, stop_after=2)
    stale = [
        run / ".checkpoint.pt.tmp99999",
        run / ".summary.json.tmp99999.json",
        run / "samples" / ".step_000004.png.tmp99999.png",
    ]
    for p in stale:
        p.write_bytes(b"half a file")  # a torn temporary checkpoint does not verify: not recovered
    train(None, run, resume=True, progress=False)
    assert not any(p.exists() for p in stale)
    for p in stale:
        p.write_bytes(b"half a file")
    train(cfg.replace(steps=1), run, progress=False, overwrite=True)
    assert not any(p.exists() for p in stale)


# -- sample, config, folds ------------------------------------------------------------------------
def test_sample_errors_name_the_file_without_train_only_flags(tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny(**SMALL), run, progress=False)
    (run / "checkpoint.pt").unlink()
    rc = main(["sample", "--checkpoint", str(run), "--out", str(tmp_path / "g")])
    err = capsys.readouterr().err
    assert rc == 2 and "--from-previous" not in err and f"--checkpoint {run / 'checkpoint.prev.pt'}" in err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    save_checkpoint({"step": 1, "weights": torch.ones(2)}, foreign)  # valid checksum, not a run
    rc = main(["sample", "--checkpoint", str(foreign)])
    err = capsys.readouterr().err
    assert rc == 2 and "not of a normreg train run" in err and "'config'" in err and "KeyError" not in err
    with pytest.raises(CheckpointError, match="not of a normreg train run"):
        train(None, foreign, resume=True, progress=False)


def test_huge_seed_and_too_many_folds_are_refused_naming_the_option(tmp_path, capsys):
    (tmp_path / "c.toml").write_text("seed = 99999999999999999999999\n")
    rc = main(["train", "--config", str(tmp_path / "c.toml"), "-o", str(tmp_path / "r")])
    assert rc == 2 and "'seed' must be an integer in [0, 2**32)" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"'folds' = 2000 leaves 0 image\(s\)"):
        train(tiny(folds=2000, fold=3), tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


# -- progress ---------------------------------------------------------------------------------------
def test_progress_lines_without_a_terminal(tmp_path, capsys):
    train(tiny(**SMALL), tmp_path / "run", progress=True, progress_every=2)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"normreg train: run directory {tmp_path / 'run'} (4 steps)"
    steps = [ln for ln in err if ln.startswith("step ")]
    assert [ln.split()[1] for ln in steps] == ["2/4", "4/4"]
    assert all("g_total" in ln and "steps/s" in ln and "ETA" in ln for ln in steps)


def test_sweep_progress_lines_file_modes_and_single_run_rows(tmp_path, capsys):
    base, grid = {"task": "completion", "steps": 10, "seed": 0}, {"recon_weight": [1.0, 10.0]}
    sweep(base, grid, tmp_path / "s", progress=True, plot=False, backend=FakeTrainer().backend())
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"normreg sweep: 2 runs in {tmp_path / 's'}"
    assert "run 1/2 done" in err and "run 2/2 done" in err
    (tmp_path / "ref").write_text("x")
    mode = (tmp_path / "ref").stat().st_mode & 0o777  # what open() gives under this umask
    files = [p for p in (tmp_path / "s").rglob("*") if p.is_file()]
    assert files and {p.name: p.stat().st_mode & 0o777 for p in files} == {p.name: mode for p in files}
    assert fmt_pm(0.123456, 0.0, n=1) == "0.123" and "±" in fmt_pm(0.5, 0.01, n=2)


# -- sweeps: threads and resume -------------------------------------------------------------------------
class _ThreadsSeen(FakeTrainer):
    def train(self, cfg, run_dir, **kw):
        self.threads = [*getattr(self, "threads", []), torch.get_num_threads()]
        return super().train(cfg, run_dir, **kw)


def test_sweep_resume_reuses_the_recorded_threads(tmp_path):
    base, grid = {"task": "completion", "steps": 10, "seed": 0}, {"recon_weight": [1.0, 10.0, 100.0]}
    first = _ThreadsSeen(fail_after=1)
    with pytest.raises(KeyboardInterrupt):
        sweep(base, grid, tmp_path, threads=1, progress=False, plot=False, backend=first.backend())
    assert json.loads((tmp_path / "sweep.json").read_text())["threads"] == 1
    torch.set_num_threads(2)  # the resuming process would use another count
    again = _ThreadsSeen()
    sweep(None, None, tmp_path, resume=True, progress=False, plot=False, backend=again.backend())
    assert len(again.calls) == 2 and again.threads == [1, 1]
    with pytest.raises(ValueError, match=r"'threads' = 2 differs from the 1 torch thread"):
        sweep(None, None, tmp_path, resume=True, threads=2, progress=False, backend=FakeTrainer().backend())


def test_corrupt_sweep_files_are_named(tmp_path, capsys):
    base, grid = {"task": "completion", "steps": 10, "seed": 0}, {"recon_weight": [1.0, 10.0]}
    res = sweep(base, grid, tmp_path, progress=False, plot=False, backend=FakeTrainer().backend())
    rec = sorted((tmp_path / "points").glob("*.json"))[0]
    rec.write_text('{"key": "x", "metr')
    fake = FakeTrainer()
    again = sweep(base, grid, tmp_path, resume=True, progress=False, plot=False, backend=fake.backend())
    assert f"'{rec}' is corrupt" in capsys.readouterr().err and len(fake.calls) == 1
    assert again.best_options == res.best_options
    (tmp_path / "sweep.json").write_text("{")
    with pytest.raises(ValueError, match=r"sweep\.json' is corrupt"):
        sweep(None, None, tmp_path, resume=True, progress=False, backend=FakeTrainer().backend())


def test_resumed_sweep_equals_an_uninterrupted_one_on_the_real_trainer(tmp_path, monkeypatch):
    base = tiny(**{**SMALL, "steps": 2, "checkpoint_every": 1, "eval_every": 2, "sample_every": 2}).to_dict()
    grid = {"recon_weight": [10.0, 100.0]}
    straight = sweep(base, grid, tmp_path / "a", threads=1, progress=False, plot=False)
    real_step, n = Trainer.step, [0]

    def step(self):  # killed in the middle of the second point's run
        real_step(self)
        n[0] += 1
        if n[0] == 3:
            raise _Crash

    monkeypatch.setattr(Trainer, "step", step)
    with pytest.raises(_Crash):
        sweep(base, grid, tmp_path / "b", threads=1, progress=False, plot=False)
    monkeypatch.setattr(Trainer, "step", real_step)
    resumed = sweep(None, None, tmp_path / "b", resume=True, progress=False, plot=False)

    def metrics(res):
        return [(r["key"], r["metrics"]) for r in res.records]

    assert metrics(resumed) == metrics(straight) and resumed.best_options == straight.best_options


def test_diverged_sweep_point_is_stored_and_never_chosen(tmp_path):
    class Diverging(FakeTrainer):
        def train(self, cfg, run_dir, **kw):
            if cfg.recon_weight > 100:
                raise NonFiniteError(
                    "non-finite loss term 'w_g_recon'", 1, "w_g_recon", math.inf, {"steps": 1}
                )
            return super().train(cfg, run_dir, **kw)

    base, grid = {"task": "completion", "steps": 10, "seed": 0}, {"recon_weight": [1.0, 100.0, 1e300]}
    res = sweep(base, grid, tmp_path, progress=False, plot=False, backend=Diverging().backend())
    bad = [r for r in res.records if r["status"] == "diverged"]
    assert len(bad) == 1 and bad[0]["labels"]["recon_weight"] == 1e300 and bad[0]["metrics"] == {}
    assert res.best_options["recon_weight"] == 100.0  # psnr rises with the weight; 1e300 has none


# -- CLI ------------------------------------------------------------------------------------------------
def test_cli_flags_are_not_abbreviated_and_unknown_ones_get_a_hint(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--step", "10"])
    err = capsys.readouterr().err
    assert (
        exc.value.code == 2 and "unrecognized arguments: --step 10" in err and "did you mean --steps" in err
    )
    assert err.splitlines()[0].startswith("usage: normreg train")
    with pytest.raises(SystemExit):
        main(["sweep", "--out", "x", "--grid", "recon_weight=1,10", "--steps", "200"])
    assert "use --set steps=200" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert out.count("cosine_ramp") >= 2  # recon_schedule and penalty_schedule


def test_cli_resume_with_nothing_to_do_and_foreign_folders(tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny(**SMALL), run, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    assert main(["train", "--resume", str(run)]) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--steps", "3"]) == 2
    assert "already at step 4" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    # killed after the last checkpoint, before the summary: the resume finishes the job
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").unlink()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert "nothing to do" not in capsys.readouterr().err
    again = json.loads((run / "summary.json").read_text())
    assert again["status"] == "finished" and again["metrics"] == summary["metrics"]
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "cat.jpg").write_bytes(b"jpeg")
    with pytest.raises(RunDirError, match="holds no run"):
        train(tiny(**SMALL), mine, progress=False)
    assert sorted(p.name for p in mine.iterdir()) == ["cat.jpg"]
    train(tiny(**{**SMALL, "steps": 1}), mine, progress=False, force=True)
    assert (mine / "cat.jpg").read_bytes() == b"jpeg" and (mine / "summary.json").is_file()


def test_images_are_written_atomically(tmp_path, monkeypatch):
    """A sample grid or image whose write fails half way (a full disk) leaves the previous
    file as it was and no temporary beside it, and the error names the file."""
    from PIL import Image

    import normreg.gan.plots as plots

    grid, one = tmp_path / "grid.png", tmp_path / "one.png"
    imgs = torch.zeros(2, 1, 8, 8)
    plots.save_grid([imgs], grid)
    plots.save_image(imgs[0], one)
    before = {p: p.read_bytes() for p in (grid, one)}

    def full_disk(self, fp, *args, **kwargs):
        with open(fp, "wb") as fh:
            fh.write(b"half a PNG")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    for write, path in (
        (lambda: plots.save_grid([imgs + 1], grid), grid),
        (lambda: plots.save_image(imgs[1] + 1, one), one),
    ):
        with pytest.raises(OSError) as info:
            write()
        assert info.value.filename == str(path)
    assert {p: p.read_bytes() for p in (grid, one)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "one.png"]
