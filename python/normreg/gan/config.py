"""``TrainConfig``: every option of the GAN trainer, validated, with TOML round-trip.

A config is a frozen dataclass of plain values (str, int, float, bool, a pair of floats),
so it is hashable, comparable, and written to the run directory as ``config.toml``.
Invalid values raise ``ValueError`` (or ``TypeError``) naming the field and saying how to
fix it, before anything is trained or written.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = [
    "TrainConfig",
    "TASKS",
    "PAIRED_TASKS",
    "PENALTIES",
    "PENALTY_MODES",
    "SCHEDULES",
    "PENALTY_SCHEDULES",
    "RECONS",
]

TASKS = ("unconditional", "completion", "denoise", "superres")
PAIRED_TASKS = ("completion", "denoise", "superres")
RECONS = ("l1", "l2", "ssim", "none")
PENALTIES = ("none", "l1", "l2", "elastic_net", "l0", "group_lasso")
PENALTY_ON = ("g", "d", "both")
PENALTY_MODES = ("loss", "add_grad", "grad", "prox")  # "grad", "prox": normreg.optim's penalty_mode
#: names accepted for configs written before the trainer took the optimizers' names
PENALTY_MODE_ALIASES = {"fused": "grad"}
SCHEDULES = ("constant", "linear_warmup", "cosine", "cosine_ramp")
PENALTY_SCHEDULES = (*SCHEDULES, "adaptive")  # adaptive: D's penalty only (normreg.stability.AdaptiveLambda)
MASKS = ("bottom_half", "right_half", "center")
RESIZE = ("random_crop", "center_crop", "stretch", "none")
DEVICES = ("cpu", "cuda", "mps")

# Fields that may differ between a run and its resumption (they do not change the math of a
# step): how long to train and how often to evaluate, sample and save.
RESUME_MUTABLE = (
    "steps",
    "eval_every",
    "sample_every",
    "checkpoint_every",
    "log_every",
    "eval_samples",
    "device",
    "tensorboard",
)


@dataclass(frozen=True)
class TrainConfig:
    """Every option of ``normreg train``; each field is also a ``--flag`` and a TOML key.

    The defaults are the ``normreg train`` default: a pix2pix-style completion of the bottom
    half of scikit-learn's 8x8 digits, L1 reconstruction with λ=100 beside the GAN loss and a
    light L1 weight penalty on G. docs/trainer.md describes every field.
    """

    # -- what to train --------------------------------------------------------------------
    task: str = "completion"  #: unconditional | completion | denoise | superres
    dataset: str = "digits"  #: digits | textures | folder:PATH | mnist:PATH
    image_size: int = 0  #: 0: the data set's native size (8 for digits); else a power of 2 >= 8
    channels: int = 0  #: 0: from the data (1 gray, 3 colour); else 1 or 3
    resize: str = "random_crop"  #: folder images: random_crop | center_crop | stretch | none (all same size)
    crop_size: int = 0  #: random_crop: side of the crops cut from the photos (0: image_size); larger crops are scaled down to image_size
    crops_per_image: int = 64  #: random_crop: training crops cut from each image per epoch
    max_images: int = 0  #: 0: all; else use at most this many images (first after shuffling by seed)
    mask: str = "bottom_half"  #: completion: bottom_half | right_half | center
    noise_std: float = 0.5  #: denoise: std of the Gaussian noise added to images in [-1, 1]
    # -- split ------------------------------------------------------------------------------
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.15
    folds: int = 1  #: k-fold CV: >1 splits the non-test images in k parts, part `fold` is validation
    fold: int = 0
    # -- models and optimisation -----------------------------------------------------------
    width: float = 1.0  #: channel multiplier of G and D
    z_dim: int = 64  #: unconditional: latent size
    dropout: float = 0.0  #: U-Net decoder dropout (pix2pix uses 0.5)
    steps: int = 2000
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    # -- losses -----------------------------------------------------------------------------
    #: weight of the GAN term in G's loss; 0 trains "L1 only" (no D). None: the task's default,
    #: 1 (pix2pix), or 0.01 for superres (PSNR-oriented; docs/trainer.md)
    adv_weight: float | None = None
    conditional_d: bool = True  #: paired tasks: D sees (input, image) (cGAN) or the image only
    recon: str = "l1"  #: paired tasks: l1 | l2 | ssim | none
    recon_weight: float = 100.0  #: λ of the reconstruction term (pix2pix: 100, mean reduction)
    recon_schedule: str = "constant"
    tv_weight: float = 0.0  #: total variation of G's output
    r1_weight: float = 0.0  #: R1 gradient penalty on D (gamma)
    r1_every: int = 16  #: lazy R1: every k steps, scaled by k
    d_spectral_norm: bool = (
        False  #: spectral normalization (torch's parametrization) of D's conv / linear layers
    )
    # -- weight penalty (normreg) -----------------------------------------------------------
    weight_penalty: str = "l1"  #: none | l1 | l2 | elastic_net | l0 | group_lasso
    weight_penalty_strength: float = 1e-5
    l1_ratio: float = 0.5  #: elastic_net: share of the strength that goes to the L1 part
    penalty_on: str = "g"  #: g | d | both
    penalty_mode: str = "grad"  #: loss (autograd) | add_grad (fused gradient) | grad (gradient inside ProxAdam's pass, ProxAdam(penalty_mode="grad")) | prox (ProxAdam's proximal step)
    penalty_schedule: str = (
        "constant"  #: constant | linear_warmup | cosine (1 -> 0) | cosine_ramp (0 -> 1) | adaptive (D only)
    )
    warmup_fraction: float = 0.1  #: linear_warmup: share of the steps spent ramping λ up
    adaptive_target: float = 0.6  #: adaptive: the E[sign(D(x_real))] to hold, in (0, 1) (ADA: 0.6)
    adaptive_gain: float = 0.5  #: adaptive: log-change of λ per unit of error per adjustment
    adaptive_interval: int = 4  #: adaptive: steps averaged per adjustment
    adaptive_max_factor: float = 1000.0  #: adaptive: λ stays in [strength / this, strength * this]
    # -- averaging, evaluation, output --------------------------------------------------------
    ema_decay: float = 0.999  #: EMA of G's weights (used for samples and metrics); 0 disables
    eval_every: int = 500
    eval_samples: int = 0  #: 0: the whole split; else at most this many images per evaluation
    sample_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 10
    device: str = "cpu"  #: cpu | cuda | cuda:N | mps: where models, data, penalties and metrics live
    tensorboard: bool = False  #: also log scalars, λ values and sample grids to RUN_DIR/tensorboard (needs normreg[tensorboard])

    # ------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        # Coerce lists (TOML arrays) to tuples and ints to floats where a float is expected.
        if isinstance(self.betas, list):
            object.__setattr__(self, "betas", tuple(self.betas))
        if self.adv_weight is None:
            object.__setattr__(self, "adv_weight", default_adv_weight(self.task))
        if self.penalty_mode in PENALTY_MODE_ALIASES:  # "fused", the old name of "grad"
            object.__setattr__(self, "penalty_mode", PENALTY_MODE_ALIASES[self.penalty_mode])
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("float", "float | None") and isinstance(v, int) and not isinstance(v, bool):
                object.__setattr__(self, f.name, float(v))
        self._validate()

    def _validate(self) -> None:
        def err(name: str, msg: str) -> None:
            raise ValueError(f"TrainConfig: '{name}' {msg}")

        for f in fields(self):
            v = getattr(self, f.name)
            want = {"str": str, "int": int, "float": float, "bool": bool}.get(f.type)
            if want is None:
                continue
            if want is not bool and isinstance(v, bool) or not isinstance(v, want):
                raise TypeError(f"TrainConfig: '{f.name}' must be {f.type}, got {type(v).__name__} {v!r}")
            if want is float and not math.isfinite(v):
                err(f.name, f"must be finite, got {v}")

        def choice(name: str, options: tuple) -> None:
            if getattr(self, name) not in options:
                err(name, f"must be one of {', '.join(options)}; got {getattr(self, name)!r}")

        choice("task", TASKS)
        if not (
            self.dataset in ("digits", "textures")
            or (self.dataset.startswith(("folder:", "mnist:")) and len(self.dataset.split(":", 1)[1]) > 0)
        ):
            err("dataset", f"must be digits, textures, folder:PATH or mnist:PATH; got {self.dataset!r}")
        if self.image_size != 0 and (self.image_size < 8 or self.image_size & (self.image_size - 1)):
            err("image_size", f"must be 0 (native size) or a power of 2 >= 8, got {self.image_size}")
        if self.channels not in (0, 1, 3):
            err("channels", f"must be 0 (from the data), 1 or 3, got {self.channels}")
        choice("resize", RESIZE)
        if self.crop_size != 0 and self.crop_size < 8:
            err("crop_size", f"must be 0 (image_size) or >= 8, got {self.crop_size}")
        if self.crops_per_image < 1:
            err("crops_per_image", f"must be >= 1, got {self.crops_per_image}")
        dev = self.device.split(":", 1)
        if dev[0] not in DEVICES or (len(dev) == 2 and (dev[0] != "cuda" or not dev[1].isdigit())):
            err("device", f"must be cpu, cuda, cuda:N or mps; got {self.device!r}")
        choice("mask", MASKS)
        choice("recon", RECONS)
        choice("recon_schedule", SCHEDULES)
        choice("weight_penalty", PENALTIES)
        choice("penalty_on", PENALTY_ON)
        choice("penalty_mode", PENALTY_MODES)
        choice("penalty_schedule", PENALTY_SCHEDULES)
        if not 0.0 < self.adaptive_target < 1.0:
            err(
                "adaptive_target",
                "is the value of E[sign(D(x_real))] the adaptive schedule holds and must lie "
                f"in (0, 1) (ADA uses 0.6); got {self.adaptive_target}",
            )
        if self.adaptive_gain <= 0:
            err("adaptive_gain", f"must be > 0, got {self.adaptive_gain}")
        if self.adaptive_max_factor < 1:
            err("adaptive_max_factor", f"must be >= 1, got {self.adaptive_max_factor}")
        if self.penalty_schedule == "adaptive":
            if self.penalty_on != "d" or self.weight_penalty == "none":
                err(
                    "penalty_schedule",
                    "'adaptive' scales D's weight penalty from D's outputs on real images: "
                    f"it needs penalty_on='d' and a weight_penalty (got penalty_on={self.penalty_on!r}, "
                    f"weight_penalty={self.weight_penalty!r})",
                )
            if not self.uses_d:
                err("penalty_schedule", "'adaptive' needs a discriminator (adv_weight > 0)")
        for name in ("max_images", "seed"):
            if getattr(self, name) < 0:
                err(name, f"must be >= 0, got {getattr(self, name)}")
        if self.seed >= 2**32:  # the trainer derives torch / numpy seeds from it
            err("seed", f"must be an integer in [0, 2**32) (at most 4294967295), got {self.seed}")
        for name in (
            "steps",
            "batch_size",
            "z_dim",
            "r1_every",
            "adaptive_interval",
            "eval_every",
            "sample_every",
            "checkpoint_every",
            "log_every",
        ):
            if getattr(self, name) < 1:
                err(name, f"must be >= 1, got {getattr(self, name)}")
        if self.eval_samples < 0:
            err("eval_samples", f"must be >= 0 (0: whole split), got {self.eval_samples}")
        for name in (
            "noise_std",
            "recon_weight",
            "tv_weight",
            "r1_weight",
            "weight_penalty_strength",
            "adv_weight",
        ):
            if getattr(self, name) < 0:
                err(name, f"must be >= 0 (a weight λ cannot be negative), got {getattr(self, name)}")
        for name in ("lr_g", "lr_d", "width"):
            if getattr(self, name) <= 0:
                err(name, f"must be > 0, got {getattr(self, name)}")
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 < getattr(self, name) < 0.5:
                err(name, f"must be in (0, 0.5), got {getattr(self, name)}")
        for name in ("dropout", "l1_ratio", "warmup_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                err(name, f"must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            err("ema_decay", f"must be in [0, 1) (0 disables the EMA), got {self.ema_decay}")
        if (
            not isinstance(self.betas, tuple)
            or len(self.betas) != 2
            or not all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and 0.0 <= b < 1.0 for b in self.betas
            )
        ):
            err("betas", f"must be two numbers in [0, 1), e.g. [0.5, 0.999]; got {self.betas!r}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.folds < 1:
            err("folds", f"must be >= 1 (1: a plain train/val split), got {self.folds}")
        if not 0 <= self.fold < self.folds:
            err("fold", f"must be in [0, folds={self.folds}), got {self.fold}")
        if self.task in PAIRED_TASKS:
            if self.recon == "none" and self.adv_weight == 0:
                err("adv_weight", "is 0 and recon is 'none': G would have no loss; set one of them")
        if self.weight_penalty == "l0" and self.penalty_mode != "prox" and self.weight_penalty_strength > 0:
            err("penalty_mode", "must be 'prox' for weight_penalty='l0' (L0 has no gradient)")
        if self.task == "unconditional" and self.adv_weight == 0:
            err("adv_weight", "must be > 0 for task 'unconditional' (the GAN term is its only loss)")

    # -- derived ----------------------------------------------------------------------------
    @property
    def paired(self) -> bool:
        return self.task in PAIRED_TASKS

    @property
    def uses_d(self) -> bool:
        return self.adv_weight > 0

    # -- conversions ------------------------------------------------------------------------
    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again).

        A change of ``task`` without an ``adv_weight`` re-derives ``adv_weight`` when it holds the
        old task's default (``TrainConfig().replace(task="superres")`` gets superres's default,
        not pix2pix's 1 that ``TrainConfig()`` resolved); an ``adv_weight`` other than the old
        task's default is kept."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise ValueError(
                f"TrainConfig: unknown field(s) {', '.join(map(repr, unknown))}; see docs/trainer.md"
            )
        if (
            "task" in changes
            and "adv_weight" not in changes
            and changes["task"] != self.task
            and self.adv_weight == default_adv_weight(self.task)
        ):
            changes = {**changes, "adv_weight": None}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a mapping of field names (unknown keys raise ``ValueError`` naming them)."""
        if not isinstance(d, dict):
            raise TypeError(f"TrainConfig.from_dict: 'd' must be a dict, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(
                f"TrainConfig: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(sorted(names))}"
            )
        return cls(**d)

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        """Read a TOML file of ``key = value`` lines (top level, or under a ``[train]`` table)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"TrainConfig: config file {str(path)!r} does not exist")
        try:
            d = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"TrainConfig: config file {str(path)!r} is not valid TOML: {exc}") from None
        if set(d) == {"train"} and isinstance(d["train"], dict):
            d = d["train"]
        return cls.from_dict(d)

    def to_toml(self, path: str | Path | None = None) -> str:
        """The config as TOML text; also written to ``path`` if given."""
        lines = ["# normreg train configuration (every key is a field of normreg.gan.TrainConfig)"]
        for k, v in self.to_dict().items():
            lines.append(f"{k} = {_toml_value(v)}")
        text = "\n".join(lines) + "\n"
        if path is not None:
            Path(path).write_text(text)
        return text

    def diff(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ: ``{name: (self_value, other_value)}``."""
        return {
            f.name: (getattr(self, f.name), getattr(other, f.name))
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        }


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def default_adv_weight(task: str) -> float:
    """``adv_weight`` when none is given: 0.01 for superres, else 1.

    pix2pix's 1 beside λ = 100 L1 adds texture that costs PSNR; on the 8 photos of
    docs/trainer.md it put G below bicubic on the held-out photo (31.6 vs 32.2 dB at 32 px),
    and 0.1 (SRGAN's ratio of 1e-3 to the content term) still did at 64 px (32.0 vs 32.04 dB).
    0.01 keeps the GAN term as a light texture prior on a PSNR-oriented model, the
    distortion end of the perception-distortion trade-off."""
    return 0.01 if task == "superres" else 1.0


def _field_names() -> list[str]:
    return [f.name for f in fields(TrainConfig)]
