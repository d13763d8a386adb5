"""Class coverage of generated images: the entropy of a classifier's predicted classes.

A mode-dropping generator of digits draws some classes rarely or never; the entropy of the
histogram of the classifier's predicted classes over generated samples measures that
(log K nats when every class is equally common, 0 when one class takes all samples). It is
reported beside KID for unconditional runs of the image trainer (``normreg train --task
unconditional``) by :func:`image_run_coverage`; the image trainer's own metrics are unchanged.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor

from normreg.gan import trainer_from_checkpoint

__all__ = ["class_coverage", "image_run_coverage"]


def class_coverage(logits: Tensor, num_classes: int | None = None, min_share: float = 0.01) -> dict:
    """Entropy of the predicted-class histogram of ``logits`` ((n, K) scores, or (n,) class indices).

    Returns ``entropy`` (nats), ``entropy_normalized`` (entropy / log K, in [0, 1]),
    ``classes_present`` (classes predicted for at least ``min_share`` of the samples) and
    ``histogram`` (the shares).
    """
    if not isinstance(logits, Tensor):
        raise TypeError(f"'logits' must be a tensor, got {type(logits).__name__}")
    if logits.ndim == 2:
        if num_classes is not None and num_classes != logits.shape[1]:
            raise ValueError(
                f"'num_classes' {num_classes} does not match the logits' {logits.shape[1]} columns"
            )
        k = logits.shape[1]
        if not bool(torch.isfinite(logits).all()):
            raise ValueError("'logits' holds NaN or Inf")
        pred = logits.argmax(1)
    elif logits.ndim == 1:
        if num_classes is None:
            raise ValueError("'num_classes' is required when 'logits' holds class indices")
        k = num_classes
        pred = logits.long()
        if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= k):
            raise ValueError(f"class indices must lie in [0, {k}), got {int(pred.min())}..{int(pred.max())}")
    else:
        raise ValueError(
            f"'logits' must be (n, K) scores or (n,) class indices, got shape {tuple(logits.shape)}"
        )
    if k < 2:
        raise ValueError(f"need at least 2 classes, got {k}")
    n = pred.numel()
    if n == 0:
        raise ValueError("'logits' is empty")
    hist = torch.bincount(pred, minlength=k).double() / n
    nz = hist > 0
    ent = float(-(hist[nz] * hist[nz].log()).sum())
    return {
        "entropy": ent,
        "entropy_normalized": ent / math.log(k),
        "classes_present": int((hist >= min_share).sum()),
        "histogram": hist.tolist(),
    }


def image_run_coverage(run_dir: str | os.PathLike, split: str = "val") -> dict:
    """KID and class coverage of a finished unconditional image-trainer run (its EMA generator)."""

    trainer = trainer_from_checkpoint(run_dir)
    if trainer.cfg.task != "unconditional":
        raise ValueError(f"class coverage is for unconditional runs; this run's task is {trainer.cfg.task!r}")
    clf = trainer.classifier()
    if clf is None:
        raise ValueError(
            f"the data set {trainer.cfg.dataset!r} has no labels: no classifier, no class coverage"
        )
    out = dict(trainer.evaluate(split))
    fake = trainer.generate(trainer.eval_inputs[split][: out["n"]])
    _, logits = clf.predict(fake)
    out.update({f"class_{k}": v for k, v in class_coverage(logits).items()})
    return out
