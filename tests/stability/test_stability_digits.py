"""The image trainer's adaptive D penalty and spectral norm on D, class coverage of a digits run,
and the digits part of ``normreg study stability`` (tiny runs: a few steps, width 0.25)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from _gan_util import assert_same_checkpoints, tiny

from normreg.gan import TrainConfig, load_checkpoint, train, trainer_from_checkpoint
from normreg.stability import AdaptiveLambda

pytestmark = pytest.mark.usefixtures("one_thread_and_cache")

ADAPTIVE = dict(
    task="unconditional",
    weight_penalty="l2",
    weight_penalty_strength=1.0,
    penalty_on="d",
    penalty_schedule="adaptive",
    adaptive_target=0.6,
    adaptive_gain=0.5,
    adaptive_interval=1,
)


def _logs(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_adaptive_lambda_follows_the_sign_of_d_on_reals(tmp_path):
    """lam_d in the log obeys the controller's law, recomputed from the logged E[sign(D(x_real))]
    (prox mode here; the resume test below runs add_grad)."""
    cfg = tiny(steps=6, penalty_mode="prox", **ADAPTIVE)
    train(cfg, tmp_path / "run", progress=False)
    logs = _logs(tmp_path / "run")
    assert logs[0]["lam_d"] == 1.0 and all("d_real_sign" in r for r in logs)
    lam = 1.0
    for r in logs:
        assert r["lam_d"] == pytest.approx(lam, rel=1e-12) and r["lam_penalty"] == r["lam_d"]
        assert r["w_d_penalty"] == pytest.approx(lam * r["d_penalty"], rel=1e-6)
        lam = min(max(lam * math.exp(0.5 * (r["d_real_sign"] - 0.6)), 1e-3), 1e3)  # independent: the law
    trainer = trainer_from_checkpoint(tmp_path / "run")
    assert isinstance(trainer.penalty_schedule, AdaptiveLambda)
    assert trainer.penalty_schedule.strength == pytest.approx(lam, rel=1e-12)
    assert trainer.penalty_schedule.adjustments == cfg.steps


@pytest.mark.parametrize(
    "changes",
    [
        dict(ADAPTIVE, adaptive_interval=2, penalty_mode="add_grad"),
        dict(
            ADAPTIVE,
            adaptive_interval=2,
            d_spectral_norm=True,
            penalty_mode="prox",
            r1_weight=1.0,
            r1_every=2,
        ),
    ],
    ids=["adaptive-add_grad", "adaptive-prox-spectral-norm-r1"],
)
def test_resume_is_bit_exact(tmp_path, changes):
    # stop at step 3 with interval 2: the controller holds a half-filled average at the checkpoint
    cfg = tiny(steps=5, eval_every=5, sample_every=5, checkpoint_every=2, **changes)
    train(cfg, tmp_path / "straight", progress=False)
    train(cfg, tmp_path / "resumed", progress=False, stop_after=3)
    ctrl = load_checkpoint(tmp_path / "resumed")["schedules"]["penalty"]["controller"]
    assert ctrl["count"] == 1 and ctrl["adjustments"] == 1  # a half-filled average is in the checkpoint
    train(cfg, tmp_path / "resumed", progress=False, resume=True)
    assert_same_checkpoints(tmp_path / "straight", tmp_path / "resumed")
    assert (tmp_path / "straight" / "log.jsonl").read_text() == (
        tmp_path / "resumed" / "log.jsonl"
    ).read_text()
    lams = [r["lam_d"] for r in _logs(tmp_path / "straight")]
    assert len(set(lams)) > 1  # the controller moved λ, so the resumed run had state to restore


def test_spectral_norm_on_d(tmp_path):
    cfg = tiny(task="unconditional", d_spectral_norm=True, weight_penalty="none", steps=8, eval_every=8)
    train(cfg, tmp_path / "run", progress=False)
    trainer = trainer_from_checkpoint(tmp_path / "run")
    layers = [m for m in trainer.D.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert layers and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
    for m in layers:
        w = m.parametrizations.weight.original.detach().double()
        sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2)  # float64 reference
        with torch.no_grad():
            m.eval()
            eff = m.weight.detach().double()
        # W / sigma(W) from torch's power iteration: the top singular value of the effective weight
        # is 1 up to the iteration's accuracy after 8 steps of it; and it is W scaled, not changed
        top = torch.linalg.matrix_norm(eff.reshape(eff.shape[0], -1), ord=2)
        assert 1.0 - 1e-9 <= float(top) < 1.05  # the estimate u'Wv is a lower bound of sigma(W)
        assert torch.allclose(eff * sigma / top, w, rtol=1e-5, atol=1e-9)
    from normreg.gan.models import build_models

    _, d_plain = build_models(cfg.replace(d_spectral_norm=False), 1, 8, 0)
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in d_plain.modules())


def test_bad_adaptive_options_are_clear_errors(capsys):
    for target in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(ValueError, match=r"'adaptive_target'.*\(0, 1\)"):
            tiny(**{**ADAPTIVE, "adaptive_target": target})
    with pytest.raises(ValueError, match="'adaptive_gain'"):
        tiny(**{**ADAPTIVE, "adaptive_gain": 0.0})
    with pytest.raises(ValueError, match="'adaptive_interval'"):
        tiny(**{**ADAPTIVE, "adaptive_interval": 0})
    with pytest.raises(ValueError, match="penalty_on='d'"):
        tiny(**{**ADAPTIVE, "penalty_on": "both"})
    with pytest.raises(ValueError, match="penalty_on='d'"):
        tiny(**{**ADAPTIVE, "weight_penalty": "none"})
    with pytest.raises(ValueError, match="recon_schedule"):
        tiny(recon_schedule="adaptive")
    from normreg.cli import main

    assert (
        main(
            [
                "train",
                "--task",
                "unconditional",
                "--penalty-on",
                "d",
                "--weight-penalty",
                "l2",
                "--penalty-schedule",
                "adaptive",
                "--adaptive-target",
                "1.2",
                "--steps",
                "1",
            ]
        )
        == 2
    )
    assert "adaptive_target" in capsys.readouterr().err


def test_train_help_lists_the_d_options_briefly(capsys):
    from normreg.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--d-spectral-norm", "--adaptive-target", "--adaptive-gain", "--adaptive-interval"):
        assert flag in text
    assert "adaptive: D's penalty" in text
    for word in ("ring", "r1-gamma", "d-penalty"):  # the 2-D testbed's options stay out
        assert word not in text.lower()


def test_image_run_coverage_against_the_classifier(tmp_path):
    """image_run_coverage = the trainer's test KID + the entropy of the classifier's classes,
    the latter recomputed here with numpy from the classifier's predictions."""
    from normreg.stability.coverage import image_run_coverage

    cfg = tiny(task="unconditional", steps=3, eval_every=3, eval_samples=0, weight_penalty="none")
    summary = train(cfg, tmp_path / "run", progress=False)
    cov = image_run_coverage(tmp_path / "run", split="test")
    assert cov["kid"] == pytest.approx(summary["metrics"]["kid"], rel=1e-9)
    trainer = trainer_from_checkpoint(tmp_path / "run")
    x_test, _ = trainer.data.split("test")
    assert cov["n"] == x_test.shape[0]
    fake = trainer.generate(trainer.eval_inputs["test"])
    _, logits = trainer.classifier().predict(fake)
    pred = logits.argmax(1).numpy()
    p = np.bincount(pred, minlength=10) / pred.size
    ent = -sum(q * math.log(q) for q in p if q > 0)
    assert cov["class_entropy"] == pytest.approx(ent, rel=1e-12, abs=1e-12)
    assert cov["class_entropy_normalized"] == pytest.approx(ent / math.log(10), rel=1e-12, abs=1e-12)
    assert cov["class_classes_present"] == int((p >= 0.01).sum())
    assert np.allclose(cov["class_histogram"], p, rtol=0, atol=1e-12)
    train(tiny(steps=2, eval_every=2), tmp_path / "paired", progress=False)
    with pytest.raises(ValueError, match="unconditional"):
        image_run_coverage(tmp_path / "paired")


def test_digits_part_of_the_smoke_study(tmp_path):
    from normreg.stability.study import run_stability_study, study_runs

    runs = study_runs("full")
    parts = [r["part"] for r in runs]
    assert parts.count("ring") == 60 and parts.count("digits") == 36
    dig = [r for r in runs if r["part"] == "digits"]
    assert len({r["arm"] for r in dig}) == 12 and {r["seed"] for r in dig} == {0, 1, 2}
    for r in dig:  # the digits configs are valid trainer configs
        TrainConfig.from_dict(r["config"])
    out = tmp_path / "st"
    path = run_stability_study(
        out, mode="smoke", arms=["adaptive L2 (target 0.6)"], parts=("digits",), jobs=1, progress=False
    )
    rec = json.loads((out / "points" / "digits_adaptive_L2_target_0.6_s0.json").read_text())
    s = rec["summary"]
    assert rec["part"] == "digits" and s["steps"] == 3
    assert np.asarray(s["grid"]).shape == (64, 8, 8)
    assert sum(s["class_histogram"]) == pytest.approx(1.0)
    assert math.isfinite(s["metrics"]["kid"]) and "lam_d_final" in s
    text = path.read_text()
    assert "## Digits" in text and "adaptive L2 (target 0.6)" in text
    assert (out / "digits_samples.png").is_file() and (out / "digits_results.csv").read_text().count(
        "\n"
    ) == 2
    with pytest.raises(ValueError, match="'parts'"):
        study_runs("smoke", parts=("mnist",))
