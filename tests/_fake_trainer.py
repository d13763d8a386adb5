"""A test double of normreg.gan's train/evaluate, for the sweep's bookkeeping tests only.

It trains nothing: ``train`` writes a marker file and ``evaluate`` returns metrics that are
a fixed, known function of the config, so tests can check resume, selection and the
best-config round trip against values computed independently. Nothing here measures the
trainer; the smoke tests in test_sweep.py/test_study.py run the real one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from normreg.study.sweep import Backend


@dataclass
class FakeConfig:
    task: str = "completion"
    steps: int = 10
    seed: int = 0
    recon: str = "l1"
    recon_weight: float = 100.0
    weight_penalty: str = "none"
    weight_penalty_strength: float = 0.0
    folds: int = 1
    fold: int = 0

    def __post_init__(self):
        if self.recon_weight < 0:
            raise ValueError(f"'recon_weight' must be >= 0, got {self.recon_weight}")
        if self.weight_penalty not in {"none", "l1", "l2"}:
            raise ValueError(f"'weight_penalty' must be none, l1 or l2, got {self.weight_penalty!r}")
        if not 0 <= self.fold < max(self.folds, 1):
            raise ValueError(f"'fold' must be in [0, folds), got {self.fold}")

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}")
        return cls(**d)

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return "".join(f"{k} = {json.dumps(v)}\n" for k, v in self.to_dict().items())

    @classmethod
    def from_toml(cls, path):
        return cls.from_dict(tomllib.loads(Path(path).read_text()))


def fake_metrics(cfg: FakeConfig) -> dict:
    """PSNR rises with the reconstruction weight (the blurriest model has the best
    distortion), classifier score and KID are best at recon_weight = 10, weight penalties
    shift the quality a little; seeds and folds add a small known offset."""
    lw = math.log10(cfg.recon_weight) if cfg.recon_weight > 0 else -1.0
    noise = 0.01 * cfg.seed + 0.001 * cfg.fold
    pen = {"none": 0.0, "l1": 0.05, "l2": -0.02}[cfg.weight_penalty]
    return {
        "psnr": 10.0 + 2.0 * lw + noise,
        "classifier_score": 0.9 - 0.1 * (lw - 1.0) ** 2 + pen + noise,
        "kid": 0.01 + 0.005 * (lw - 1.0) ** 2 - pen / 10 + noise / 100,
        "label": "not a number",
    }


class FakeTrainer:
    """Counts calls; ``fail_after=n`` raises on the (n+1)-th train call (a crash mid-sweep)."""

    def __init__(self, fail_after: int | None = None):
        self.calls: list[FakeConfig] = []
        self.fail_after = fail_after

    def train(self, cfg, run_dir, overwrite=False, resume=False, progress=True):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls.append(cfg)
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict()))
        return {"steps": cfg.steps, "time_per_step_s": 0.001}

    def evaluate(self, run_dir, split="val"):
        assert split == "val"
        cfg = FakeConfig.from_dict(json.loads((Path(run_dir) / "config.json").read_text()))
        return fake_metrics(cfg)

    def backend(self) -> Backend:
        return Backend(config_cls=FakeConfig, train=self.train, evaluate=self.evaluate)
