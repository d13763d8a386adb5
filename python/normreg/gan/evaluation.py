"""Evaluation of a GAN run: the metrics of a trainer's generator on a held-out split
(``evaluate_trainer``, called by ``Trainer.evaluate``), what is absent and why
(``metric_notes``), and what a user should know about the data before a run
(``data_warnings``). The metrics themselves are in ``normreg.gan.metrics``."""

from __future__ import annotations

import torch

from .config import TrainConfig
from .data import ImageData
from .metrics import kid, pixel_features, psnr, ssim
from .tasks import baseline

__all__ = ["METRIC_FIELDS", "KID_SCALE", "evaluate_trainer", "metric_notes", "data_warnings"]

METRIC_FIELDS = (
    "psnr",
    "ssim",
    "baseline_psnr",
    "baseline_ssim",
    "classifier_score",
    "real_classifier_score",
    "class_confidence",
    "real_class_confidence",
    "kid",
    "kid_floor",
)
KID_SCALE = 1000.0  # KID is reported x 10^3, as in the literature


def data_warnings(cfg: TrainConfig, data: ImageData) -> list[str]:
    """Things about the data a user should know before waiting for a run (not errors)."""
    out = []
    n = int(data.splits["train"].numel())
    if n < cfg.batch_size:
        what = "crops" if data.crop_source is not None else "images"
        hint = (
            "raise crops_per_image"
            if data.crop_source is not None
            else "use more images, or (for a folder of photos) resize='random_crop' to train on many crops per photo"
        )
        out.append(
            f"the training split has {n} {what}, fewer than batch_size={cfg.batch_size}: every step "
            f"trains on all {n} and G will memorize them; {hint}"
        )
    return out


def metric_notes(cfg: TrainConfig, data: ImageData, has_classifier: bool, sizes: dict[str, int]) -> list[str]:
    """One line for each metric that is absent, saying why."""
    notes = []
    if not has_classifier:
        why = "the data set has no labels" if data.labels is None else "the data set has only one class"
        notes.append(
            f"classifier_score, class_confidence: absent: {why} (images in 2 or more sub-folders of a "
            "folder are labelled by them); KID uses pixel features instead"
        )
    elif not cfg.paired:
        notes.append(
            "classifier_score: absent for unconditional runs (no target labels); see class_confidence"
        )
    small = {k: v for k, v in sizes.items() if v < 2}
    if small:
        sets = ", ".join(f"{k} has {v}" for k, v in small.items())
        notes.append(f"kid, kid_floor: absent: KID needs at least 2 images in each set ({sets})")
    return notes


@torch.no_grad()
def evaluate_trainer(trainer, split: str = "val") -> dict[str, float | None]:
    """Metrics of a :class:`~normreg.gan.trainer.Trainer`'s EMA generator on ``split`` ("val"
    or "test"): PSNR / SSIM against the targets and the task's baseline (paired tasks), the
    frozen classifier's scores and KID (``METRIC_FIELDS``), and ``notes`` on what is absent."""
    if split not in ("val", "test"):
        raise ValueError(f"'split' must be 'val' or 'test', got {split!r}")
    cfg = trainer.cfg
    real, labels = trainer.data.split(split)
    real = real.to(trainer.device)
    labels = labels.to(trainer.device) if labels is not None else None
    inputs = trainer.eval_inputs[split]
    if cfg.eval_samples and real.shape[0] > cfg.eval_samples:
        real, inputs = real[: cfg.eval_samples], inputs[: cfg.eval_samples]
        labels = labels[: cfg.eval_samples] if labels is not None else None
    fake = trainer.generate(inputs)
    out: dict[str, float | None] = dict.fromkeys(METRIC_FIELDS)
    if cfg.paired:
        out["psnr"] = psnr(fake, real)
        out["ssim"] = ssim(fake, real)
        base = baseline(cfg, inputs, trainer.data.channels)
        out["baseline_psnr"] = psnr(base, real)
        out["baseline_ssim"] = ssim(base, real)
    clf = trainer.classifier()
    train_real = trainer.train_x[: real.shape[0]]
    if clf is not None:
        f_fake, l_fake = clf.predict(fake)
        f_real, l_real = clf.predict(real)
        f_train, _ = clf.predict(train_real)
        if cfg.paired:
            out["classifier_score"] = float((l_fake.argmax(1) == labels).double().mean())
        out["real_classifier_score"] = float((l_real.argmax(1) == labels).double().mean())
        out["class_confidence"] = float(l_fake.softmax(1).max(1).values.double().mean())
        out["real_class_confidence"] = float(l_real.softmax(1).max(1).values.double().mean())
    else:
        f_fake, f_real, f_train = pixel_features(fake), pixel_features(real), pixel_features(train_real)
    if min(f_fake.shape[0], f_real.shape[0], f_train.shape[0]) >= 2:  # KID needs 2 samples a set
        out["kid"] = KID_SCALE * kid(f_fake, f_real)
        out["kid_floor"] = KID_SCALE * kid(f_train, f_real)
    out["kid_features"] = "classifier" if clf is not None else "pixels"
    out["n"] = int(real.shape[0])
    sizes = {"generated": f_fake.shape[0], split: f_real.shape[0], "train sample": f_train.shape[0]}
    out["notes"] = metric_notes(cfg, trainer.data, clf is not None, sizes)
    return out
