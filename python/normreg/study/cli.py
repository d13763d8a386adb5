"""``normreg sweep`` and ``normreg study`` subcommands."""

from __future__ import annotations

import argparse
import difflib
import math
import sys

from normreg.gan import TrainConfig
from normreg.stability.study import DIGITS_SEEDS, SEEDS, arm_names, run_cli
from normreg.study.compression import METHODS, PARTS, TARGETS
from normreg.study.compression import SEEDS as C_SEEDS
from normreg.study.compression import run_cli as run_compression
from normreg.study.report import fmt_pm
from normreg.study.studies import STUDIES, get_study, run_study
from normreg.study.sweep import load_sweep, parse_grid, parse_value, sweep

__all__ = ["register"]

_SWEEP_EPILOG = """\
examples:
  normreg sweep --grid recon_weight=1,10,100,1000 --seeds 3 --criterion classifier_score+kid --out runs/lam
  normreg sweep --config base.toml --set steps=500 --grid weight_penalty=l1,l2,elastic_net \\
                --grid weight_penalty_strength=log:1e-5:1e-3:3 --folds 5 --out runs/pen
  normreg sweep --out runs/lam --resume                      # continue an interrupted sweep
  normreg sweep --out runs/lam --reselect --criterion kid    # choose again, no training
  normreg train --config runs/lam/best.toml                  # train the chosen config

criteria: psnr, ssim, classifier_score (higher is better), kid (lower is better), or a
weighted sum such as '2*classifier_score+kid' (each metric z-scored over the grid, signs
automatic). PSNR alone picks the blurriest model; see docs/choosing_lambda.md.
"""


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="grid search / cross-validation over trainer options (λ, penalty, ...)",
        description="Grid over trainer options with seeds and k-fold CV or a held-out split; resumable; "
        "writes results.csv, summary.csv, sweep.png and best.toml.",
        epilog=_SWEEP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="base TrainConfig TOML (default: the trainer's defaults)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change one base option (repeatable), e.g. --set steps=500",
    )
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="an option to sweep and its values (repeatable); also log:LO:HI:N and lin:LO:HI:N",
    )
    p.add_argument("--seeds", type=int, default=1, help="seeds per point (base seed, +1, ...); default 1")
    p.add_argument(
        "--folds",
        type=int,
        default=1,
        help="k-fold cross-validation with k folds; 1 (default): the held-out validation split",
    )
    p.add_argument(
        "--criterion",
        default=None,
        help="selection criterion (default psnr, or the sweep's own when resuming)",
    )
    p.add_argument("--out", required=True, help="output directory")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="keep finished runs in --out and run the rest")
    g.add_argument("--overwrite", action="store_true", help="delete --out's previous results first")
    g.add_argument(
        "--reselect",
        action="store_true",
        help="select again from a finished sweep in --out (with --criterion); trains nothing",
    )
    p.add_argument("--no-plot", action="store_true", help="skip sweep.png")
    p.add_argument(
        "--drop-runs",
        action="store_true",
        help="delete each run's directory (checkpoints, samples) once its results are stored",
    )
    p.add_argument("--jobs", type=int, default=1, help="runs at once in worker processes (default 1)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per run (default: 1 with --jobs > 1, else torch's; "
        "recorded in sweep.json and reused by --resume)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_sweep)

    s = sub.add_parser(
        "study",
        help="named reproducible experiments with a markdown report (loss-ablation, weight-penalty, stability, compression)",
        description="Run a named study and write DIR/report.md with tables and figures.",
    )
    s.add_argument("name", nargs="?", help="loss-ablation | weight-penalty | stability | compression")
    s.add_argument("--out", help="output directory (default: study-NAME)")
    s.add_argument(
        "--smoke", action="store_true", help="a few steps, one seed, few arms: tests the machinery only"
    )
    g = s.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue an interrupted study in --out")
    g.add_argument("--overwrite", action="store_true", help="delete --out's previous results first")
    s.add_argument(
        "--keep-runs", action="store_true", help="keep every run's directory (checkpoints, samples)"
    )
    s.add_argument(
        "--jobs", type=int, default=None, help="runs at once in worker processes (default: 2 on 2+ cores)"
    )
    s.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per run (default: 1 with several jobs; recorded and reused by --resume)",
    )
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--list", action="store_true", help="list the studies and their arms")
    s.set_defaults(func=_study)


def _err(msg: str, cmd: str = "sweep") -> int:
    print(f"normreg {cmd}: error: {msg}", file=sys.stderr)
    return 2


def _sweep(args) -> int:
    try:
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"'--threads' must be >= 1, got {args.threads}")
        threads = args.threads  # None: the sweep's recorded count on --resume, else 1 with --jobs > 1
        if args.reselect:
            if args.criterion is None:
                raise ValueError("'--criterion' is required with --reselect")
            res = load_sweep(args.out, args.criterion, plot=not args.no_plot)
        else:
            grid = parse_grid(args.grid) if args.grid else None
            base = None
            if args.config or args.set:
                d = TrainConfig.from_toml(args.config).to_dict() if args.config else TrainConfig().to_dict()
                for item in args.set:
                    if "=" not in item:
                        raise ValueError(f"'--set': {item!r} is not NAME=VALUE")
                    k, v = item.split("=", 1)
                    if k.strip() not in d:
                        close = difflib.get_close_matches(k.strip(), list(d), n=2)
                        hint = f"; did you mean {' or '.join(close)}?" if close else ""
                        raise ValueError(f"'--set': unknown option {k.strip()!r}{hint}")
                    d[k.strip()] = parse_value(v)
                base = d
            res = sweep(
                base,
                grid,
                args.out,
                seeds=args.seeds,
                folds=args.folds,
                criterion=args.criterion,
                resume=args.resume,
                overwrite=args.overwrite,
                progress=not args.quiet,
                plot=not args.no_plot,
                keep_runs=not args.drop_runs,
                jobs=args.jobs,
                threads=threads,
            )
    except OSError as exc:
        return _err(
            f"cannot write or read {exc.filename!r}: {exc.strerror or exc}" if exc.filename else str(exc)
        )
    except (ValueError, TypeError) as exc:
        return _err(str(exc))
    _print_sweep(res)
    return 0


def _print_sweep(res) -> None:
    names = list(res.grid)
    metrics = res.criterion.metrics
    order = sorted(range(len(res.summary)), key=lambda i: -res.summary[i]["score"])
    width = max(len(n) for n in names)
    print(f"\n{len(res.records)} runs, {len(res.summary)} points; ranked by {res.criterion}:")
    for rank, i in enumerate(order[:10], 1):
        row = res.summary[i]
        opts = "  ".join(f"{n}={row['labels'][n]}" for n in names)
        vals = "  ".join(
            f"{m} {fmt_pm(row['mean'].get(m, math.nan), row['std'].get(m, math.nan), n=row['n'].get(m, 0))}"
            for m in metrics
        )
        print(f"  {rank:>2}. {opts:<{width + 12}}  {vals}")
    diverged = [r for r in res.records if r.get("status") == "diverged"]
    if diverged:
        print(
            f"{len(diverged)} run(s) diverged (non-finite loss or weight; never selected): "
            + "; ".join(
                " ".join(f"{k}={v}" for k, v in r["labels"].items()) + f" seed={r['seed']}"
                for r in diverged[:5]
            )
        )
    print("best:", ", ".join(f"{k}={v}" for k, v in res.best_options.items()))
    for k, path in res.files.items():
        print(f"  {k:<8} {path}")


def _study(args) -> int:
    if args.name == "stability" and not args.list:  # the 2-D GAN study: normreg.stability.study
        return run_cli(args)
    if args.name == "compression" and not args.list:  # normreg compress over methods x targets x seeds
        return run_compression(args)
    if args.list or not args.name:
        for name in STUDIES:
            st = get_study(name)
            print(f"{name}: {st.title}")
            print(f"  {len(st.arms)} arms x {st.seeds} seeds: " + "; ".join(a.name for a in st.arms))

        print(
            f"stability: does a norm penalty on D stabilize GAN training? (ring of 8 Gaussians; 8x8 digits)\n"
            f"  ring: {len(arm_names())} arms x {SEEDS} seeds: " + "; ".join(arm_names()) + "\n"
            f"  digits (unconditional, the image trainer): the same {len(arm_names())} arms x {DIGITS_SEEDS} seeds"
        )

        print(
            f"compression: channel penalties against magnitude pruning (normreg compress)\n"
            f"  {' and '.join(PARTS)}: {len(METHODS)} methods ({', '.join(METHODS)}) x target MACs "
            f"{', '.join(map(str, TARGETS))} x {C_SEEDS} seeds"
        )
        return 0 if args.list else 2
    try:
        path = run_study(
            args.name,
            args.out or f"study-{args.name}",
            mode="smoke" if args.smoke else "full",
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.quiet,
            keep_runs=args.keep_runs,
            jobs=args.jobs,
            threads=args.threads,
        )
    except OSError as exc:
        return _err(
            f"cannot write or read {exc.filename!r}: {exc.strerror or exc}" if exc.filename else str(exc),
            "study",
        )
    except (ValueError, TypeError) as exc:
        return _err(str(exc), "study")
    print(f"report: {path}")
    return 0
