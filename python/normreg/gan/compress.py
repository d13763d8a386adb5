"""``normreg compress RUN_DIR --out DIR``: a trained run's generator with fewer channels.

1. **Sparse training** (``group_lasso``, ``slimming``, ``l0``): the run's G and D train on, G
   under ``ProxAdam``'s proximal step on :func:`normreg.compress.channel_groups`, with λ
   scaled by a :class:`normreg.compress.MacController` toward the MAC budget
   (``target_macs`` of the dense G's multiply-adds, measured on the pruned model).
   ``magnitude`` (the baseline) skips it: the same share of every layer's smallest channels
   is zeroed (:func:`normreg.compress.magnitude_to_macs`), no regularization.
2. **Pruning**: the zero channels' BatchNorm running means are settled
   (:func:`normreg.compress.settle_zero_channels`), the channels removed
   (:func:`normreg.compress.prune_zero_channels`), and the pruned G's outputs are checked against
   the sparse G's on the validation inputs (max abs difference ≤ 1e-5) before anything is saved.
3. **Fine-tuning** of the pruned G against D, with a fresh EMA.
4. **Output**: a run directory (``config.toml``, ``checkpoint.pt`` with the pruned widths,
   which ``normreg sample`` and ``normreg.gan.evaluate`` load, ``summary.json``, samples) and
   ``report.json`` / ``report.md``: parameters, MACs, CPU latency (batch 1 and 64, 1 and 2
   threads, the two generators taking turns) and the test metrics, dense vs compressed;
   ``compress.png`` (MACs and λ over the sparse steps) and ``compare.png`` (samples).

This module runs the phases in turn, times the generators and writes the output; the options
are ``normreg.gan.compress_config``, phases 1 and 2 ``normreg.gan.compress_methods``, the
report's figures and page ``normreg.gan.compress_report``.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

import normreg
from normreg.compress import count_macs, count_zero_channels, prunable_layers, prune_zero_channels

from ._files import _naming, _write_text
from .checkpoint import CHECKPOINT, find_checkpoint, save_checkpoint
from .compress_config import COMPRESS_METHODS, CompressConfig
from .compress_methods import _say, prune_and_check, sparsify, train_steps
from .compress_report import compare_grid, plot_sparsity, report_markdown
from .rundir import RunDirError, _json_safe, _prepare_run_dir
from .train import trainer_from_checkpoint
from .trainer import Trainer

__all__ = ["CompressConfig", "compress", "COMPRESS_METHODS", "measure_latency"]

REPORT = "report.json"


def _example(trainer: Trainer, n: int) -> torch.Tensor:
    return trainer.eval_inputs["val"][:n]


def _check_out_dir(out: Path, source: Path, overwrite: bool) -> None:
    """The checks of ``_prepare_run_dir`` made before any work, so a bad --out costs nothing."""
    if out.resolve() == source.resolve():
        raise RunDirError(f"'out' {str(out)!r} is the run being compressed; pick another folder")
    if out.exists() and not out.is_dir():
        raise RunDirError(f"'out' {str(out)!r} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / REPORT).exists():
            raise RunDirError(
                f"'out' {str(out)!r} is not empty and holds no compressed run; pick a new or empty folder"
            )
        if not overwrite:
            raise RunDirError(
                f"'out' {str(out)!r} already holds a compressed run; pass overwrite=True (--overwrite) to replace it"
            )


@torch.no_grad()
def measure_latency(
    models: dict[str, nn.Module],
    make_input,
    batches: tuple[int, ...] = (1, 64),
    threads: tuple[int, ...] = (1, 2),
    repeats: int = 10,
) -> list[dict[str, Any]]:
    """Median forward time (ms, eval mode, ``no_grad``) of each model per batch size and thread
    count; the models take turns (the order alternates every round), after one warm-up pass
    each, so that a change in the machine's load hits them alike."""
    saved = torch.get_num_threads()
    rows = []
    modes = {name: m.training for name, m in models.items()}
    try:
        for m in models.values():
            m.eval()
        for nt in threads:
            torch.set_num_threads(nt)
            for b in batches:
                x = make_input(b)
                times: dict[str, list[float]] = {name: [] for name in models}
                names = list(models)
                for name in names:
                    models[name](x)
                for r in range(repeats):
                    for name in names if r % 2 == 0 else names[::-1]:
                        t0 = time.perf_counter()
                        models[name](x)
                        times[name].append(time.perf_counter() - t0)
                row: dict[str, Any] = {"threads": nt, "batch": b}
                for name in names:
                    row[f"{name}_ms"] = 1e3 * statistics.median(times[name])
                rows.append(row)
    finally:
        torch.set_num_threads(saved)
        for name, m in models.items():
            m.train(modes[name])
    return rows


def compress(
    run_dir: str | Path,
    out_dir: str | Path,
    config: CompressConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    device: str | None = None,
    latency: bool = True,
) -> dict[str, Any]:
    """Compress the generator of the trained run in ``run_dir`` into ``out_dir``.

    ``latency=False`` skips the timing (the report's ``latency`` is empty): for callers that
    run several compressions at once and time them afterwards, one at a time
    (``normreg study compression``).

    See the module docstring for the phases. Everything is checked before the work starts
    (a run directory without a checkpoint, a bad config, a model that cannot be pruned, an
    ``out_dir`` that is not new, empty or a compressed run: ``ValueError`` and nothing
    written); the output is written only once the pruned G has passed its check.

    Returns the report (also ``out_dir/report.json``).
    """
    config = config or CompressConfig()
    if not isinstance(config, CompressConfig):
        raise TypeError(f"'config' must be a CompressConfig, got {type(config).__name__}")
    source, out = Path(run_dir), Path(out_dir)
    if not source.is_dir():
        raise RunDirError(
            f"'run_dir' {str(source)!r} is not a folder: give the run directory of a normreg train run"
        )
    find_checkpoint(source)  # CheckpointError (a ValueError) naming what is missing
    _check_out_dir(out, source, overwrite)
    t_start = time.perf_counter()
    trainer = trainer_from_checkpoint(source, device=device)
    cfg = trainer.cfg
    if trainer.dist is not None:
        raise ValueError("normreg compress runs on one process")
    G = trainer.G
    if not prunable_layers(G):
        raise ValueError(
            f"the run's generator ({type(G).__name__}) has no layer whose channels can be removed"
        )
    example = _example(trainer, 8)
    try:
        prune_zero_channels(G, example)  # can torch-pruning trace this model at all?
    except (ValueError, TypeError) as e:
        raise ValueError(f"the run's generator ({type(G).__name__}) cannot be pruned: {e}") from e
    if progress:
        _say(f"{source} -> {out}: method {config.method}, keep {config.target_macs:g} of the MACs")
    one = tuple(example[:1].shape)
    dense_sampler = copy.deepcopy(trainer.sampler).requires_grad_(False)
    dense_macs = count_macs(G, one)
    dense_params = sum(p.numel() for p in G.parameters())
    dense_metrics = trainer.evaluate("test")
    dense_val = trainer.evaluate("val")
    lr = config.lr or cfg.lr_g
    log: list[dict] = []
    step0 = trainer.step_
    trainer.pen_g = False  # G's own weight penalty (if any) gives way to the channel penalty
    # -- 1. sparse training / magnitude (normreg.gan.compress_methods) -------------------------
    sparse, sparse_info, settled = sparsify(trainer, config, example, lr, log, progress)
    # -- 2. prune, and check ------------------------------------------------------------------
    small, diff = prune_and_check(trainer, sparse, example)
    macs = count_macs(small, one)
    zero, total = count_zero_channels(sparse)
    if progress:
        _say(
            f"pruned {zero} of {total} channels: {macs / dense_macs:.3f} of the dense MACs "
            f"(target {config.target_macs:g}), outputs equal to {diff:.2g}"
        )
    # -- 3. fine-tune ---------------------------------------------------------------------------
    trainer.G = small.train()
    trainer.opt_g = torch.optim.Adam(
        [p for p in small.parameters() if p.requires_grad], lr=lr, betas=cfg.betas
    )
    if trainer.G_ema is not None:
        trainer.G_ema = copy.deepcopy(small).requires_grad_(False)
        trainer.ema_start = trainer.step_
    if config.finetune_steps:
        train_steps(trainer, config.finetune_steps, "finetune", log, None, config.interval, progress)
    metrics = trainer.evaluate("test")
    val = trainer.evaluate("val")

    # -- 4. latency and report ------------------------------------------------------------------
    def make_input(b: int) -> torch.Tensor:
        x = trainer.eval_inputs["val"]
        return x[torch.arange(b) % x.shape[0]]

    rows: list[dict[str, Any]] = []
    if latency:
        if progress:
            _say("timing the dense and the compressed G (batch 1 and 64, 1 and 2 threads)")
        rows = measure_latency(
            {"dense": dense_sampler, "compressed": trainer.sampler},
            make_input,
            repeats=config.latency_repeats,
        )
        for row in rows:
            row["speedup"] = row["dense_ms"] / row["compressed_ms"]
    params = sum(p.numel() for p in small.parameters())
    # the compressed run's config: no weight penalty on G (the checkpoint's G is plain Adam's)
    if cfg.penalty_on == "g":
        new_cfg = cfg.replace(weight_penalty="none", steps=trainer.step_)
    elif cfg.penalty_on == "both":
        new_cfg = cfg.replace(penalty_on="d", steps=trainer.step_)
    else:
        new_cfg = cfg.replace(steps=trainer.step_)
    trainer.cfg = new_cfg
    info = {
        "source": str(source),
        "source_step": step0,
        "config": asdict(config),
        "dense_macs": dense_macs,
        "macs": macs,
        "mac_fraction": macs / dense_macs,
        "target_met": macs / dense_macs <= config.target_macs + 1e-12,
        "dense_params": dense_params,
        "params": params,
        "pruned_channels": zero,
        "prunable_channels": total,
        "settled_running_means": settled,
        "check_max_abs_diff": diff,
        **sparse_info,
    }
    trainer.compressed = {k: v for k, v in info.items() if k != "config"} | {"method": config.method}
    report = _json_safe(
        {
            **info,
            "task": cfg.task,
            "dataset": cfg.dataset,
            "image_size": trainer.data.image_size,
            "dense": {"test": dense_metrics, "val": dense_val},
            "compressed": {"test": metrics, "val": val},
            "latency": rows,
            "log": log,
            "seconds": round(time.perf_counter() - t_start, 1),
            "normreg_version": normreg.__version__,
        }
    )
    if not report["target_met"]:
        _say(
            f"warning: the pruned G keeps {report['mac_fraction']:.3f} of the MACs, above the target "
            f"{config.target_macs:g}: give more 'sparse_steps' or a larger 'gain'"
        )
    # -- write ------------------------------------------------------------------------------------
    with _naming(out):
        _prepare_run_dir(out, overwrite=(out / REPORT).exists())  # _check_out_dir allowed it
        _write_text(out / "config.toml", new_cfg.to_toml())
        save_checkpoint(trainer.state_dict(), out)
        trainer.sample_grid(out / "samples" / "final.png")
        compare_grid(trainer, dense_sampler, out / "compare.png")
        plot_sparsity(log, config.target_macs, out / "compress.png")
        summary = {
            "status": "finished",
            "task": cfg.task,
            "dataset": cfg.dataset,
            "steps": trainer.step_,
            "finished": True,
            "compressed_from": str(source),
            "params_g": params,
            "params_d": sum(p.numel() for p in trainer.D.parameters()) if trainer.D is not None else 0,
            "metrics": metrics,
            "val_metrics": val,
            "checkpoint": CHECKPOINT,
        }
        _write_text(out / "summary.json", json.dumps(_json_safe(summary), indent=2) + "\n")
        _write_text(out / "report.md", report_markdown(report))
        _write_text(out / REPORT, json.dumps(report, indent=2) + "\n")
    if progress:
        _say(f"done in {report['seconds']:.0f} s: {out / 'report.md'}")
    return report
