"""``normreg train`` / ``normreg sample``: flags, --config, errors before training, resume."""

from __future__ import annotations

import json

import pytest
from _gan_util import TINY, write_pngs

from normreg.cli import main
from normreg.gan import TrainConfig, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread_and_cache")

TINY_FLAGS = [
    "--steps",
    "2",
    "--batch-size",
    "16",
    "--width",
    "0.25",
    "--max-images",
    "96",
    "--eval-every",
    "2",
    "--sample-every",
    "2",
    "--checkpoint-every",
    "1",
    "--eval-samples",
    "24",
    "--no-progress",
]


def _err(capsys) -> str:
    return capsys.readouterr().err


def test_train_flags_and_config_file(tmp_path, capsys):
    toml = tmp_path / "run.toml"
    TrainConfig(**{**TINY, "task": "superres", "recon": "l2", "tv_weight": 0.01}).to_toml(toml)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                str(toml),
                "--recon-weight",
                "10",
                "--no-conditional-d",
                "-o",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    cfg = TrainConfig.from_toml(run / "config.toml")
    assert (cfg.task, cfg.recon, cfg.recon_weight, cfg.conditional_d, cfg.tv_weight) == (
        "superres",
        "l2",
        10.0,
        False,
        0.01,
    )
    assert "test metrics: psnr=" in capsys.readouterr().out
    assert json.loads((run / "summary.json").read_text())["steps"] == TINY["steps"]


@pytest.mark.parametrize("extra,expected", [([], 0.01), (["--adv-weight", "1"], 1.0)])
def test_task_flag_gets_the_tasks_adv_weight_default(tmp_path, capsys, extra, expected):
    # `--task superres` alone used to keep pix2pix's adv_weight 1 that TrainConfig() resolved
    run = tmp_path / "run"
    argv = ["train", "--task", "superres", *TINY_FLAGS, "--steps", "1", "-o", str(run), *extra]
    assert main(argv) == 0
    assert TrainConfig.from_toml(run / "config.toml").adv_weight == expected


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--task", "inpaint"], "'task'"),
        (["--dataset", "imagenet"], "'dataset'"),
        (["--recon-weight", "-1"], "'recon_weight'"),
        (["--weight-penalty-strength", "-0.1"], "'weight_penalty_strength'"),
        (["--weight-penalty", "l0", "--penalty-mode", "loss"], "'penalty_mode'"),
        (["--dataset", "folder:MISSING"], "does not exist"),
        (["--dataset", "folder:EMPTY"], "no PNG or JPEG"),
        (["--dataset", "folder:MIXED", "--resize", "none"], "different sizes"),
        (["--resume", "EMPTY"], "no checkpoint"),
        (["--resume", "MISSING"], "does not exist"),
        (["--config", "BADKEY"], "recon_wieght"),
        (["--threads", "-1"], "'--threads'"),
    ],
)
def test_errors_are_clear_and_nothing_is_written(tmp_path, capsys, argv, match):
    (tmp_path / "EMPTY").mkdir()
    write_pngs(tmp_path / "MIXED", n=4, sizes=[8, 16])
    (tmp_path / "BADKEY").write_text("recon_wieght = 1\n")
    argv = [
        a.replace("MISSING", str(tmp_path / "missing"))
        .replace("EMPTY", str(tmp_path / "EMPTY"))
        .replace("MIXED", str(tmp_path / "MIXED"))
        .replace("BADKEY", str(tmp_path / "BADKEY"))
        for a in argv
    ]
    run = tmp_path / "run"
    extra = ["--no-progress"] if "--resume" in argv else ["-o", str(run), *TINY_FLAGS]
    assert main(["train", *argv, *extra]) == 2
    err = _err(capsys)
    assert "normreg train: error:" in err and match in err
    assert not run.exists() and list((tmp_path / "EMPTY").iterdir()) == []


def test_existing_run_needs_overwrite_and_resume_continues(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "-o", str(run), "--stop-after", "1", *TINY_FLAGS]) == 0
    assert load_checkpoint(run)["step"] == 1
    before = (run / "config.toml").read_bytes()
    assert main(["train", "-o", str(run), "--seed", "3", *TINY_FLAGS]) == 2
    assert "--overwrite" in _err(capsys) and (run / "config.toml").read_bytes() == before
    assert main(["train", "--resume", str(run), "--recon-weight", "3"]) == 2
    assert "'recon_weight'" in _err(capsys)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert load_checkpoint(run)["step"] == 2
    assert main(["train", "-o", str(run), "--seed", "3", "--overwrite", *TINY_FLAGS]) == 0
    assert TrainConfig.from_toml(run / "config.toml").seed == 3


def test_corrupt_checkpoint_on_resume_offers_the_previous(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "-o", str(run), "--stop-after", "2", "--steps", "3", *TINY_FLAGS[2:]]) == 0
    (run / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:100])
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    err = _err(capsys)
    assert "checkpoint.pt" in err and "checkpoint.prev.pt" in err and "--from-previous" in err
    assert main(["train", "--resume", str(run), "--from-previous", "--no-progress"]) == 0
    assert load_checkpoint(run)["step"] == 3


@pytest.mark.parametrize("task", ["completion", "unconditional"])
def test_sample_writes_pngs(tmp_path, capsys, task):
    from PIL import Image

    run = tmp_path / "run"
    assert main(["train", "-o", str(run), "--task", task, *TINY_FLAGS]) == 0
    out = tmp_path / "gen"
    assert main(["sample", "--checkpoint", str(run), "--out", str(out), "-n", "3"]) == 0
    names = sorted(p.name for p in out.iterdir())
    if task == "completion":
        assert names == sorted(
            [f"{i:04d}_{t}.png" for i in range(3) for t in ("input", "output", "target")] + ["grid.png"]
        )
    else:
        assert names == ["0000.png", "0001.png", "0002.png", "grid.png"]
    assert Image.open(out / names[0]).size == (32, 32)  # 8x8 upscaled for viewing
    if task == "completion":
        folder = tmp_path / "mine"
        write_pngs(folder, n=2, size=8)
        assert (
            main(
                [
                    "sample",
                    "--checkpoint",
                    str(run / "checkpoint.pt"),
                    "--inputs",
                    str(folder),
                    "--out",
                    str(tmp_path / "g2"),
                ]
            )
            == 0
        )
        assert (tmp_path / "g2" / "0001_output.png").is_file()


def test_sample_errors(tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(tmp_path / "none")]) == 2
    assert "does not exist" in _err(capsys)
    (tmp_path / "bad.pt").write_bytes(b"nope")
    assert main(["sample", "--checkpoint", str(tmp_path / "bad.pt")]) == 2
    assert "not a normreg checkpoint" in _err(capsys)
