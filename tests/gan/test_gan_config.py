"""TrainConfig: validation names the field, TOML and dict round-trips."""

from __future__ import annotations

import dataclasses

import pytest

from normreg.gan import TrainConfig


def test_defaults_are_the_documented_default_run():
    cfg = TrainConfig()
    assert (cfg.task, cfg.dataset, cfg.recon, cfg.recon_weight) == ("completion", "digits", "l1", 100.0)
    assert cfg.weight_penalty == "l1" and cfg.penalty_on == "g" and cfg.paired and cfg.uses_d


@pytest.mark.parametrize(
    "field,value",
    [
        ("task", "inpaint"),
        ("dataset", "cifar10"),
        ("dataset", "folder:"),
        ("image_size", 12),
        ("recon_weight", -1.0),
        ("weight_penalty_strength", -1e-4),
        ("tv_weight", -0.5),
        ("r1_weight", -1.0),
        ("lr_g", 0.0),
        ("steps", 0),
        ("batch_size", 0),
        ("val_fraction", 0.0),
        ("test_fraction", 0.7),
        ("ema_decay", 1.0),
        ("weight_penalty", "l3"),
        ("penalty_mode", "hybrid"),
        ("penalty_on", "x"),
        ("recon", "l3"),
        ("penalty_schedule", "step"),
        ("fold", 3),
        ("folds", 0),
        ("betas", (0.5,)),
        ("betas", (0.5, 1.5)),
        ("mask", "top"),
        ("resize", "zoom"),
        ("channels", 2),
        ("dropout", 1.5),
        ("lr_d", float("nan")),
    ],
)
def test_invalid_value_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"'{field}'"):
        TrainConfig(**{field: value})


@pytest.mark.parametrize(
    "field,value", [("steps", 2.5), ("task", 3), ("conditional_d", "yes"), ("recon_weight", "100")]
)
def test_wrong_type_names_the_field(field, value):
    with pytest.raises(TypeError, match=f"'{field}'"):
        TrainConfig(**{field: value})


def test_combinations_that_cannot_train_are_refused():
    with pytest.raises(ValueError, match="'penalty_mode'"):
        TrainConfig(weight_penalty="l0", penalty_mode="add_grad")
    with pytest.raises(ValueError, match="'adv_weight'"):
        TrainConfig(task="unconditional", adv_weight=0.0)
    with pytest.raises(ValueError, match="'adv_weight'"):
        TrainConfig(recon="none", adv_weight=0.0)


def test_int_is_accepted_where_a_float_is_expected():
    assert TrainConfig(recon_weight=10).recon_weight == 10.0


def test_toml_round_trip(tmp_path):
    cfg = TrainConfig(
        task="superres",
        dataset='folder:some dir/with "quotes"',
        betas=(0.0, 0.99),
        conditional_d=False,
        tv_weight=1e-3,
    )
    path = tmp_path / "run.toml"
    cfg.to_toml(path)
    assert TrainConfig.from_toml(path) == cfg
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_toml_with_train_table_and_partial_keys(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[train]\ntask = 'denoise'\nnoise_std = 0.3\nbetas = [0.5, 0.9]\n")
    cfg = TrainConfig.from_toml(path)
    assert cfg == TrainConfig(task="denoise", noise_std=0.3, betas=(0.5, 0.9))


def test_unknown_and_invalid_toml_keys(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("recon_wieght = 3\n")
    with pytest.raises(ValueError, match="recon_wieght"):
        TrainConfig.from_toml(path)
    path.write_text("recon_weight = -3\n")
    with pytest.raises(ValueError, match="'recon_weight'"):
        TrainConfig.from_toml(path)
    path.write_text("recon_weight = = 3\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        TrainConfig.from_toml(path)
    with pytest.raises(ValueError, match="does not exist"):
        TrainConfig.from_toml(tmp_path / "missing.toml")


def test_replace_validates_and_rejects_unknown_fields():
    cfg = TrainConfig()
    assert cfg.replace(steps=7).steps == 7
    with pytest.raises(ValueError, match="'stepz'"):
        cfg.replace(stepz=7)
    with pytest.raises(ValueError, match="'recon_weight'"):
        cfg.replace(recon_weight=-2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 3  # type: ignore[misc]


def test_adv_weight_default_depends_on_the_task(tmp_path):
    from normreg.gan.config import default_adv_weight

    assert TrainConfig().adv_weight == 1.0 == default_adv_weight("completion")
    assert TrainConfig(task="superres").adv_weight == 0.01 == default_adv_weight("superres")
    assert TrainConfig(task="superres", adv_weight=1).adv_weight == 1.0  # given: kept (as a float)
    assert TrainConfig(task="superres", adv_weight=0.0).adv_weight == 0.0
    c = TrainConfig(task="superres")
    c.to_toml(tmp_path / "c.toml")
    assert "adv_weight = 0.01" in (tmp_path / "c.toml").read_text()  # the effective value is written
    assert TrainConfig.from_toml(tmp_path / "c.toml").adv_weight == 0.01
    # a task changed by replace() (the CLI's path: TrainConfig() then the flags) re-derives the
    # default, and keeps a weight that is not the old task's default
    assert TrainConfig().replace(task="superres").adv_weight == 0.01
    assert TrainConfig(task="superres").replace(task="denoise").adv_weight == 1.0
    assert TrainConfig().replace(task="superres", adv_weight=1.0).adv_weight == 1.0
    assert TrainConfig(adv_weight=0.5).replace(task="superres").adv_weight == 0.5
    assert TrainConfig(task="superres").replace(steps=3).adv_weight == 0.01


def test_penalty_mode_takes_the_optimizers_names(tmp_path):
    # the trainer's modes are normreg.optim's ("grad", "prox") plus "loss" and "add_grad";
    # "fused", the name before, still loads (configs and checkpoints of older runs)
    assert TrainConfig().penalty_mode == "grad"
    assert TrainConfig(penalty_mode="fused").penalty_mode == "grad"
    (tmp_path / "old.toml").write_text('penalty_mode = "fused"\n')
    assert TrainConfig.from_toml(tmp_path / "old.toml").penalty_mode == "grad"
    with pytest.raises(ValueError, match="'penalty_mode'"):
        TrainConfig(penalty_mode="fuse")
