"""``normreg train``, ``sample`` and ``compress``: the command-line front of the GAN trainer
(the flags; what each command does is :mod:`normreg.gan.commands`).

Every ``TrainConfig`` field is a flag (``recon_weight`` -> ``--recon-weight``; booleans also
take ``--no-...``); ``--config run.toml`` reads the same keys from a file and flags given on
the command line override it.
"""

from __future__ import annotations

import argparse
import dataclasses

from normreg.gan.config import TrainConfig

from .commands import COMPRESS_METHODS_CLI, _flag, compress_main, sample_main, train_main
from .config import MASKS, PENALTIES, PENALTY_ON, PENALTY_SCHEDULES, RECONS, RESIZE, SCHEDULES, TASKS

__all__ = ["register", "train_main", "sample_main"]


def _alts(options) -> str:
    return " | ".join(options)


_HELP = {
    "task": _alts(TASKS),
    "dataset": "digits | textures | folder:PATH | mnist:PATH",
    "image_size": "0: native size of the data (8 for digits); else a power of 2 >= 8",
    "channels": "0: from the data; 1 or 3 to force gray or colour",
    "resize": f"folder images: {_alts(RESIZE)}; random_crop trains on random crops of the photos and "
    "evaluates on tiles, the others make one square per image (none: all images must have one size)",
    "crop_size": "random_crop: side of the crops cut from the photos (0: image_size); larger crops are scaled down",
    "crops_per_image": "random_crop: training crops cut from each photo per epoch",
    "device": "cpu | cuda | cuda:N | mps: models, data, penalties and metrics on that device",
    "tensorboard": "also log every scalar, the lambdas and the sample grids to RUN_DIR/tensorboard "
    "(needs: pip install 'normreg[tensorboard]')",
    "max_images": "use at most this many images (0: all)",
    "mask": f"completion: {_alts(MASKS)}",
    "noise_std": "denoise: noise std (images in [-1, 1])",
    "folds": "k-fold cross-validation: number of folds of the non-test images",
    "fold": "which fold is the validation set",
    "width": "channel multiplier of G and D",
    "z_dim": "unconditional: latent size",
    "dropout": "U-Net decoder dropout (pix2pix: 0.5)",
    "betas": "Adam betas (two numbers)",
    "adv_weight": "weight of the GAN term in G's loss; 0 trains the reconstruction alone (no D) "
    "(default: 1, or 0.01 for superres)",
    "conditional_d": "paired tasks: D sees G's input beside the image (cGAN)",
    "recon": _alts(RECONS),
    "recon_weight": "lambda of the reconstruction term (pix2pix: 100)",
    "recon_schedule": f"{_alts(SCHEDULES)} (cosine: 1 -> 0, cosine_ramp: 0 -> 1)",
    "tv_weight": "total variation of G's output",
    "r1_weight": "R1 gradient penalty on D (gamma)",
    "r1_every": "lazy R1 every k steps (scaled by k)",
    "weight_penalty": _alts(PENALTIES),
    "weight_penalty_strength": "lambda of the weight penalty",
    "l1_ratio": "elastic_net: share of the strength on the L1 part",
    "penalty_on": _alts(PENALTY_ON),
    "penalty_mode": "loss (autograd) | add_grad (fused gradient) | grad (gradient inside ProxAdam's update; old name fused) | prox (ProxAdam proximal step)",
    "penalty_schedule": f"{_alts(PENALTY_SCHEDULES)} (cosine: 1 -> 0, cosine_ramp: 0 -> 1; "
    "adaptive: D's penalty follows E[sign(D(x_real))], needs --penalty-on d)",
    "adaptive_target": "adaptive: the E[sign(D(x_real))] to hold, in (0, 1) (ADA: 0.6)",
    "adaptive_gain": "adaptive: log-change of lambda per unit of error per adjustment",
    "adaptive_interval": "adaptive: steps averaged per adjustment",
    "adaptive_max_factor": "adaptive: lambda stays within strength / this .. strength * this",
    "d_spectral_norm": "spectral normalization of D's conv / linear layers (torch parametrization)",
    "warmup_fraction": "linear_warmup: share of the steps spent ramping up",
    "seed": "random seed (an integer in [0, 2**32))",
    "ema_decay": "EMA of G's weights for samples and metrics (0 disables)",
    "eval_samples": "images per evaluation (0: the whole split)",
}


_METRICS_HELP = (
    "Metrics (test split in the summary, validation in metrics.csv): psnr and ssim beside "
    "baseline_psnr / baseline_ssim, the trivial answer (G's input: the masked or noisy image, "
    "bicubic upsampling for superres); kid is KID x 10^3 (unbiased MMD^2, cubic kernel) of G's "
    "outputs against the real split, and kid_floor the same for a real training sample of that "
    "size: what a perfect generator would score on this data, up to noise. It is not 0: it "
    "measures how far the training images differ from the split (and a small split makes it "
    "noisy; the unbiased estimate can be negative). Compare kid with kid_floor, not with 0."
)


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training options (defaults: TrainConfig; also readable from --config)")
    for f in dataclasses.fields(TrainConfig):
        default = f.default
        help_ = _HELP.get(f.name, "")
        if default is not None:
            help_ = f"{help_} (default: {list(default) if isinstance(default, tuple) else default})".strip()
        kw: dict = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_}
        if f.type == "bool":
            g.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kw)
        elif f.name == "betas":
            g.add_argument(_flag(f.name), nargs=2, type=float, metavar=("B1", "B2"), **kw)
        else:
            name = f.type.removesuffix(" | None")
            typ = {"int": int, "float": float, "str": str}[name]
            g.add_argument(_flag(f.name), type=typ, metavar=name.upper(), **kw)


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a GAN with norm regularization (default: digit completion, ~minutes on 2 cores)",
        description="Train a GAN (pix2pix-style paired tasks or an unconditional DCGAN) with normreg "
        "penalties. With no arguments: complete the bottom half of 8x8 digits.",
        epilog=_METRICS_HELP,
    )
    p.add_argument("--config", metavar="TOML", help="read options from a TOML file (flags override it)")
    p.add_argument("--run-dir", "-o", metavar="DIR", help="output folder (default: runs/TASK-DATASET-TIME)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --run-dir")
    p.add_argument(
        "--force",
        action="store_true",
        help="write the run into a non-empty --run-dir that holds no run (refused otherwise)",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    p.add_argument(
        "--from-previous", action="store_true", help="with --resume: start from checkpoint.prev.pt"
    )
    p.add_argument("--stop-after", type=int, metavar="STEP", help="stop (with a checkpoint) at this step")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="torch threads (default 1: the small models gain nothing from more; 0: torch's default)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar / progress lines")
    p.add_argument(
        "--progress-every",
        type=int,
        default=0,
        metavar="N",
        help="without a terminal: a progress line on stderr every N steps (default 0: about 20 a run)",
    )
    p.add_argument(
        "--on-nonfinite",
        choices=("stop", "continue"),
        default="stop",
        help="a NaN/inf loss term or weight: stop at that step, keeping the last good checkpoint "
        "(default), or warn once and train on",
    )
    # DDP hook (normreg.gan.distributed, docs/distributed.md)
    p.add_argument(
        "--nproc",
        type=int,
        default=0,
        metavar="N",
        help="train on N processes: runs torchrun --standalone --nproc_per_node N -m normreg train ...",
    )
    p.add_argument(
        "--backend",
        choices=("gloo", "nccl"),
        help="multi-process backend (default gloo: the trainer computes on the CPU)",
    )
    _add_config_flags(p)
    p.set_defaults(func=train_main)

    s = sub.add_parser("sample", help="write generated images from a checkpoint as PNG files")
    s.add_argument("--checkpoint", required=True, metavar="PATH", help="checkpoint file or run directory")
    s.add_argument("--out", metavar="DIR", help="output folder (default: RUN_DIR/generated)")
    s.add_argument("-n", type=int, default=16, help="number of images (default 16)")
    s.add_argument(
        "--split", default="test", choices=("train", "val", "test"), help="paired tasks: images to fill in"
    )
    s.add_argument("--inputs", metavar="FOLDER", help="paired tasks: fill in these images instead of a split")
    s.add_argument("--seed", type=int, default=0, help="latent seed (unconditional) / noise seed (denoise)")
    s.add_argument("--no-ema", action="store_true", help="use G instead of its EMA")
    s.set_defaults(func=sample_main)

    c = sub.add_parser(
        "compress",
        help="a smaller generator from a trained run: channel sparsity, pruning, fine-tuning, a report",
        description="Compress the generator of a normreg train run: sparse training with a channel penalty "
        "(ProxAdam's proximal step, lambda adapted toward the MAC budget) or magnitude pruning (the "
        "baseline), removal of the zero channels (checked: outputs equal to 1e-5), fine-tuning, and a "
        "report of parameters, MACs, CPU latency and test metrics, dense vs compressed. The output is a "
        "run directory that normreg sample and normreg.gan.evaluate load. See docs/compress.md.",
    )
    c.add_argument("run_dir", metavar="RUN_DIR", help="the run directory of a normreg train run")
    c.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder (new or empty)")
    c.add_argument(
        "--method",
        default="group_lasso",
        choices=COMPRESS_METHODS_CLI,
        help="channel penalty, or 'magnitude' (no regularization) (default group_lasso)",
    )
    c.add_argument(
        "--target-macs",
        type=float,
        default=0.25,
        metavar="F",
        help="fraction of the dense G's multiply-adds to keep, in (0, 1] (default 0.25)",
    )
    c.add_argument(
        "--sparse-steps", type=int, default=1000, metavar="N", help="sparse-training steps (default 1000)"
    )
    c.add_argument(
        "--finetune-steps", type=int, default=500, metavar="N", help="fine-tuning steps (default 500)"
    )
    c.add_argument(
        "--strength",
        type=float,
        default=5.0,
        metavar="L",
        help="lambda of the channel penalty before the controller's factor (default 5)",
    )
    c.add_argument(
        "--gain", type=float, default=1.0, help="the MAC controller's log-step per unit of error (default 1)"
    )
    c.add_argument(
        "--interval", type=int, default=10, metavar="N", help="steps between MAC measurements (default 10)"
    )
    c.add_argument(
        "--ramp",
        type=float,
        default=0.6,
        help="share of the sparse steps over which the budget falls from 1 to the target (default 0.6)",
    )
    c.add_argument("--lr", type=float, default=0.0, help="G's learning rate (default 0: the run's lr_g)")
    c.add_argument(
        "--latency-repeats", type=int, default=10, metavar="N", help="timed passes per case (default 10)"
    )
    c.add_argument(
        "--threads", type=int, default=1, metavar="N", help="torch threads for training (default 1)"
    )
    c.add_argument("--overwrite", action="store_true", help="replace the compressed run already in --out")
    c.add_argument("--no-progress", action="store_true", help="no progress lines")
    c.set_defaults(func=compress_main)
