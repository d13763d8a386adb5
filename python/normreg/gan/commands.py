"""What ``normreg train``, ``sample`` and ``compress`` do once their flags are parsed
(:mod:`normreg.gan.cli` defines the flags): checks, the torchrun relaunch for several
processes (the argv rebuilt from the parsed config), the run, its summary."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

from normreg.gan import distributed as _dist
from normreg.gan.checkpoint import CHECKPOINT, PREVIOUS, CheckpointError, load_checkpoint
from normreg.gan.compress import CompressConfig, compress
from normreg.gan.config import TrainConfig
from normreg.gan.rundir import _check_state, recover_run
from normreg.gan.sample import sample
from normreg.gan.train import train
from normreg.gan.trainer import NonFiniteError

__all__ = ["train_main", "sample_main", "compress_main", "COMPRESS_METHODS_CLI"]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _launch_torchrun(args) -> int:
    """``normreg train --nproc N ...``: the same command under torchrun, minus ``--nproc``.

    The argument list is rebuilt from the parsed ``args`` (so it works however ``normreg`` was
    called), and a fresh run gets its default ``--run-dir`` here, once, so that every rank
    writes to the same folder.
    """

    if isinstance(args.nproc, bool) or not isinstance(args.nproc, int) or args.nproc < 1:
        raise ValueError(f"'--nproc' must be a positive integer, got {args.nproc!r}")
    argv: list[str] = []
    if args.config:
        argv += ["--config", str(args.config)]
    if args.resume:
        argv += ["--resume", str(args.resume)]
    else:
        run_dir = args.run_dir
        if not run_dir:
            cfg = TrainConfig.from_toml(args.config) if args.config else TrainConfig()
            ds = str(getattr(args, "dataset", cfg.dataset)).split(":")[0]
            task = getattr(args, "task", cfg.task)
            run_dir = os.path.join("runs", f"{task}-{ds}-{time.strftime('%Y%m%d-%H%M%S')}")
        argv += ["--run-dir", str(run_dir)]
    for flag in ("overwrite", "from_previous", "no_progress"):
        if getattr(args, flag, False):
            argv.append(_flag(flag))
    if getattr(args, "stop_after", None) is not None:
        argv += ["--stop-after", str(args.stop_after)]
    if getattr(args, "threads", 0):
        argv += ["--threads", str(args.threads)]
    for f in dataclasses.fields(TrainConfig):
        if not hasattr(args, f.name):
            continue
        v = getattr(args, f.name)
        if f.type == "bool":
            argv.append(_flag(f.name) if v else "--no-" + f.name.replace("_", "-"))
        elif f.name == "betas":
            argv += [_flag(f.name), *(repr(float(b)) for b in v)]
        else:
            argv += [_flag(f.name), repr(v) if isinstance(v, float) else str(v)]
    return _dist.launch(args.nproc, argv, getattr(args, "backend", None))


def _error(cmd: str, exc: BaseException | str, code: int = 2) -> int:
    if isinstance(exc, OSError) and exc.filename is not None:
        exc = f"cannot write or read {exc.filename!r}: {exc.strerror or exc}"
    print(f"normreg {cmd}: error: {exc}", file=sys.stderr)
    return code


def train_main(args: argparse.Namespace) -> int:

    if args.threads < 0:
        return _error("train", ValueError(f"'--threads' must be >= 0, got {args.threads}"))
    if args.progress_every < 0:
        return _error("train", ValueError(f"'--progress-every' must be >= 0, got {args.progress_every}"))
    if args.threads:
        torch.set_num_threads(args.threads)
    # DDP hooks: --nproc relaunches this command under torchrun; under torchrun (WORLD_SIZE > 1)
    # the default process group is set up here and the Trainer trains with DDP.

    try:
        if args.nproc:
            return _launch_torchrun(args)
        _dist.init_from_env(args.backend)
    except ValueError as exc:
        return _error("train", exc)
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    given = {k: getattr(args, k) for k in names if hasattr(args, k)}
    if "betas" in given:
        given["betas"] = tuple(given["betas"])
    common = dict(
        progress=not args.no_progress, progress_every=args.progress_every, on_nonfinite=args.on_nonfinite
    )
    try:
        if args.resume:
            if args.overwrite:
                raise ValueError("'--resume' and '--overwrite' cannot be used together")
            if args.force:
                raise ValueError("'--force' only applies to a new run, not with '--resume'")
            if args.config:
                raise ValueError("'--config' cannot be used with '--resume' (the run's own config is used)")
            if args.run_dir and Path(args.run_dir) != Path(args.resume):
                raise ValueError("'--run-dir' must not differ from '--resume'")
            run_dir = Path(args.resume)
            if not run_dir.is_dir():
                raise ValueError(f"'--resume': run directory {str(run_dir)!r} does not exist")
            recover_run(run_dir)
            cfg = None
            state = load_checkpoint(run_dir, previous=args.from_previous)
            saved = _check_state(state, run_dir / (PREVIOUS if args.from_previous else CHECKPOINT))
            cfg = saved.replace(**given) if given else None
            steps = (cfg or saved).steps
            if state["step"] == steps and _finished(run_dir, steps):
                if _dist.is_main_process():
                    more = "" if "steps" in given else f" (the run's steps = {steps})"
                    print(
                        f"normreg train: nothing to do: {str(run_dir)!r} is already at step {steps}{more}; "
                        f"pass --steps N with N > {steps} to train further",
                        file=sys.stderr,
                    )
                return 0
            summary = train(
                cfg,
                run_dir,
                resume=True,
                stop_after=args.stop_after,
                from_previous=args.from_previous,
                **common,
            )
        else:
            if args.from_previous:
                raise ValueError("'--from-previous' only applies with '--resume'")
            cfg = TrainConfig.from_toml(args.config) if args.config else TrainConfig()
            if given:
                cfg = cfg.replace(**given)
            if args.run_dir:
                run_dir = Path(args.run_dir)
            else:
                ds = cfg.dataset.split(":")[0]
                run_dir = Path("runs") / f"{cfg.task}-{ds}-{time.strftime('%Y%m%d-%H%M%S')}"
            summary = train(
                cfg,
                run_dir,
                overwrite=args.overwrite,
                force=args.force,
                stop_after=args.stop_after,
                **common,
            )
    except KeyboardInterrupt:
        return 130
    except NonFiniteError as exc:
        if _dist.is_main_process():
            _error("train", exc)
            print(f"summary: {run_dir / 'summary.json'}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, CheckpointError, OSError) as exc:
        return _error("train", exc)
    if _dist.is_main_process():  # DDP hook: rank 0 reports
        _print_summary(run_dir, summary)
    return 0


def _finished(run_dir: Path, steps: int) -> bool:
    """``summary.json`` says the run finished its ``steps`` (a kill after the last checkpoint
    but before the summary leaves it missing or stale: the resume then evaluates and writes it)."""

    try:
        s = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(s, dict)
        and s.get("steps") == steps
        and s.get("status", "finished") == "finished"
        and bool(s.get("finished"))
    )


def _print_summary(run_dir: Path, summary: dict) -> None:
    print(f"run directory: {run_dir}")
    print(
        f"steps: {summary['steps']}  time: {summary['seconds']:.1f} s  "
        f"status: {summary.get('status', 'finished' if summary['finished'] else 'stopped')}"
    )
    m = summary.get("metrics")
    if m:
        keys = [
            k
            for k in (
                "psnr",
                "baseline_psnr",
                "ssim",
                "baseline_ssim",
                "classifier_score",
                "real_classifier_score",
                "kid",
                "kid_floor",
            )
            if m.get(k) is not None
        ]
        print(
            "test metrics: "
            + "  ".join(f"{k}={m[k]:.4g}" if isinstance(m[k], float) else f"{k}={m[k]}" for k in keys)
        )
        if m.get("baseline_psnr") is not None:
            print("  (baseline_*: the trivial answer, G's input itself; kid and kid_floor are x 10^3)")
        for note in m.get("notes") or []:
            print(f"  {note}")
    print(f"samples: {run_dir / 'samples'}   curves: {run_dir / 'curves.png'}")


def sample_main(args: argparse.Namespace) -> int:
    ck = Path(args.checkpoint)
    out = Path(args.out) if args.out else (ck if ck.is_dir() else ck.parent) / "generated"
    try:
        paths = sample(
            ck, out, n=args.n, split=args.split, inputs=args.inputs, seed=args.seed, use_ema=not args.no_ema
        )
    except (ValueError, TypeError, CheckpointError, OSError) as exc:
        return _error("sample", exc)
    print(f"wrote {len(paths)} PNG files to {out}")
    return 0


COMPRESS_METHODS_CLI = (
    "group_lasso",
    "slimming",
    "l0",
    "magnitude",
)  # = normreg.gan.compress.COMPRESS_METHODS


def compress_main(args: argparse.Namespace) -> int:

    if args.threads < 0:
        return _error("compress", ValueError(f"'--threads' must be >= 0, got {args.threads}"))
    try:
        cfg = CompressConfig(
            method=args.method,
            target_macs=args.target_macs,
            sparse_steps=args.sparse_steps,
            finetune_steps=args.finetune_steps,
            strength=args.strength,
            gain=args.gain,
            interval=args.interval,
            ramp=args.ramp,
            lr=args.lr,
            latency_repeats=args.latency_repeats,
        )
    except ValueError as exc:
        msg = str(exc).replace("CompressConfig: ", "")
        for name in CompressConfig.__dataclass_fields__:
            msg = msg.replace(f"'{name}'", "--" + name.replace("_", "-"))
        return _error("compress", msg)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        report = compress(
            args.run_dir, args.out, cfg, overwrite=args.overwrite, progress=not args.no_progress
        )
    except (ValueError, TypeError, CheckpointError, OSError, FloatingPointError, ImportError) as exc:
        return _error("compress", exc)
    dense, comp = report["dense"]["test"], report["compressed"]["test"]
    print(f"compressed run: {args.out}")
    print(
        f"MACs {report['mac_fraction']:.3f} of the dense G, parameters {report['params'] / report['dense_params']:.3f}"
    )
    for key in ("psnr", "ssim", "classifier_score", "kid"):
        if dense.get(key) is not None:
            print(f"  test {key}: dense {dense[key]:.4g}  compressed {comp[key]:.4g}")
    for row in report["latency"]:
        print(
            f"  latency, {row['threads']} thread(s), batch {row['batch']}: {row['dense_ms']:.3g} -> {row['compressed_ms']:.3g} ms (speed-up {row['speedup']:.2f}x)"
        )
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0
