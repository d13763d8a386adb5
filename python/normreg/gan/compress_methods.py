"""The methods of ``normreg compress`` (``normreg.gan.compress``), its phases 1 and 2:
making channels of a run's G exactly zero (``sparsify``: sparse training under ProxAdam's
proximal step on the channel groups, λ steered to the MAC budget, for ``group_lasso``,
``slimming`` and ``l0``, then the top-up to the budget; or the ``magnitude`` baseline), and
removing them, checked against the sparse G (``prune_and_check``). ``train_steps`` runs the
trainer's steps of sparse training and fine-tuning with a log row and progress lines.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch
from torch import nn

import normreg
from normreg.compress import (
    TOLERANCE,
    MacController,
    PruneError,
    channel_groups,
    count_zero_channels,
    magnitude_to_macs,
    prune_zero_channels,
    settle_zero_channels,
    top_up_to_macs,
)

from .compress_config import CompressConfig
from .trainer import Trainer

__all__ = ["sparsify", "prune_and_check", "train_steps"]


def _say(msg: str) -> None:
    print(f"normreg compress: {msg}", file=sys.stderr, flush=True)


def train_steps(
    trainer: Trainer,
    n: int,
    phase: str,
    log: list[dict],
    extra=None,
    log_every: int = 10,
    progress: bool = True,
) -> None:
    """``n`` trainer steps; a row in ``log`` every ``log_every`` steps, a progress line on stderr
    about every tenth of the way."""
    say_every = max(1, n // 10)
    t0 = time.perf_counter()
    for i in range(n):
        trainer.step()
        bad = trainer.first_nonfinite()
        if bad is not None:
            raise FloatingPointError(
                f"{phase}: non-finite {bad[0]} = {bad[1]} at step {i + 1}; nothing was written. "
                "Lower 'strength' or 'gain', or the learning rate ('lr')"
            )
        last = i + 1 == n
        if (i + 1) % log_every == 0 or last:
            terms = trainer.loss_terms()
            row = {
                "phase": phase,
                "step": i + 1,
                **{k: terms[k] for k in ("g_total", "d_total", "g_recon") if k in terms},
            }
            if extra is not None:
                row.update(extra())
            log.append(row)
        if progress and ((i + 1) % say_every == 0 or last):
            rate = (i + 1) / max(time.perf_counter() - t0, 1e-9)
            row = log[-1]
            shown = "  ".join(
                f"{k} {v:.4g}" for k, v in row.items() if k not in ("phase", "step") and isinstance(v, float)
            )
            _say(f"{phase} step {i + 1}/{n}  {shown}  {rate:.2f} steps/s  ETA {(n - i - 1) / rate:.0f}s")


def sparsify(
    trainer: Trainer,
    config: CompressConfig,
    example: torch.Tensor,
    lr: float,
    log: list[dict],
    progress: bool,
) -> tuple[nn.Module, dict[str, Any], int]:
    """Phase 1: G (``trainer.G``) with channels exactly zero within the MAC budget, by
    ``config.method``; the rows of sparse training go to ``log``. Returns the sparse G, what
    the report says of the phase, and the number of zero channels whose BatchNorm running
    means were settled."""
    cfg = trainer.cfg
    G = trainer.G
    if config.method == "magnitude":
        sparse, share = magnitude_to_macs(G, example[:1], config.target_macs)
        sparse_info: dict[str, Any] = {"share_zeroed_per_layer": share}
    else:
        ctl = MacController(
            G,
            example[:1],
            config.target_macs,
            gain=config.gain,
            interval=config.interval,
            ramp_steps=int(round(config.ramp * config.sparse_steps)),
        )
        groups = channel_groups(G, config.method, config.strength)
        for g in groups:  # elementwise prox in Adam's metric: a channel's own gradients defend it
            if g.get("penalty") is not None and g["penalty"].__class__.__name__ in ("L1", "L0"):
                g["precondition_prox"] = True
        trainer.opt_g = normreg.optim.ProxAdam(
            groups, lr=lr, betas=cfg.betas, penalty_mode="prox", penalty_schedule=ctl
        )

        def state() -> dict[str, Any]:
            zero, total = count_zero_channels(G, running_stats=False)
            return {
                "mac_fraction": ctl.last_fraction,
                "budget": ctl.current_target(),
                "lambda": config.strength * ctl.factor,
                "zero_channels": zero,
                "channels": total,
            }

        train_steps(trainer, config.sparse_steps, "sparse", log, state, config.interval, progress)
        sparse = G
        sparse_info = {"final_lambda": config.strength * ctl.factor, "controller": ctl.state_dict()}
    settled = settle_zero_channels(sparse)
    topped = 0
    if config.method != "magnitude":
        # λ steers the exact zeros to the budget; what is left above it (a controller that did
        # not settle in time) goes by the method's own criterion, one threshold over all layers.
        sparse, topped = top_up_to_macs(
            sparse, example[:1], config.target_macs, "scale" if config.method == "slimming" else "norm"
        )
        sparse_info["topped_up_channels"] = topped
        if topped and progress:
            _say(
                f"{topped} more channel(s) zeroed by {'|scale|' if config.method == 'slimming' else 'norm'} "
                "to meet the MAC budget"
            )
    return sparse, sparse_info, settled


def prune_and_check(trainer: Trainer, sparse: nn.Module, example: torch.Tensor) -> tuple[nn.Module, float]:
    """Phase 2: the sparse G with its zero channels removed, and the largest difference of
    its outputs from the sparse G's on the validation inputs (``PruneError`` above
    ``TOLERANCE``)."""
    small = prune_zero_channels(sparse, example)
    check_inputs = trainer.eval_inputs["val"][:256]
    ref = trainer.generate(check_inputs, sparse)
    got = trainer.generate(check_inputs, small)
    diff = float((ref.double() - got.double()).abs().max())
    if not diff <= TOLERANCE:
        raise PruneError(
            f"the pruned G differs from the sparse G by {diff:.3g} (> {TOLERANCE:g}) on the validation inputs; nothing was written"
        )
    return small, diff
