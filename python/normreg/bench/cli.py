"""``normreg bench``: time every op family against its torch peers on this machine.

It runs the shared workloads (:mod:`normreg.bench.workloads`) through the cases of
:mod:`normreg.bench.cases`, checks that every peer agrees with normreg before timing it,
and prints one table (best time, GB/s, share of the measured memory bandwidth, normreg's
speed-up over each peer), then thread scaling, the per-call overhead and the share of a
whole GAN training step that the L1 penalty costs.

    normreg bench --quick                      # one workload, few repetitions
    normreg bench --json run.json --plot speedups.png
    normreg bench --compile                    # add torch.compile peers (slow to compile)
    normreg bench --markdown docs/performance.md --plot docs/performance.png
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

import normreg
from normreg.bench import report, runner
from normreg.bench import train_step as ts
from normreg.bench.bandwidth import Probe, measure_bandwidth
from normreg.bench.cases import FAMILIES, build_cases
from normreg.bench.compiled_step import measure_compiled_step
from normreg.bench.runner import AgreementError
from normreg.bench.trainer_overhead import measure_trainer_overhead
from normreg.bench.workloads import SHAPES

__all__ = ["register", "run_bench", "main"]

#: settings of each mode: workloads, repetitions, bandwidth probe, thread scaling, training step
MODES = {
    "full": {
        "workloads": ("dcgan", "small200", "big25m"),
        "warmup": 2,
        "reps": 10,
        "bandwidth_mb": 256,
        "bandwidth_reps": 7,
        "scaling": "all",
        "train_reps": 30,  # steps are ~20 ms; the fused term's cost is a difference of bests
        "overhead_reps": 20,  # blocks of log_every (10) steps of the trainer and of a bare loop
        "train_warmup": 2,
        "image_shape": None,
        "train_setup": None,
        "train_config": {},
    },
    "quick": {
        "workloads": ("dcgan",),
        "warmup": 1,
        "reps": 3,
        "bandwidth_mb": 64,
        "bandwidth_reps": 3,
        "scaling": "first-per-family",
        "train_reps": 3,
        "train_warmup": 1,
        "overhead_reps": 3,
        "image_shape": (32, 3, 64, 64),
        "train_setup": None,
        "train_config": {},
    },
    # a smoke run of the machinery in seconds (tests, CI); its figures mean nothing
    "tiny": {
        "workloads": ("tiny200",),
        "warmup": 1,
        "reps": 1,
        "bandwidth_mb": 4,
        "bandwidth_reps": 1,
        "scaling": "first-per-family",
        "train_reps": 1,
        "train_warmup": 1,
        "overhead_reps": 1,
        "image_shape": (2, 3, 8, 8),
        "train_setup": {"size": 8, "batch": 4, "width": 4, "nz": 8},
        "train_config": {"batch_size": 8, "width": 0.25},
    },
}


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="time normreg against torch on this machine (table, JSON, chart)",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="one workload, few repetitions")
    mode.add_argument(
        "--tiny", action="store_true", help="seconds-long smoke run on tiny inputs (figures mean nothing)"
    )
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the eager expressions")
    p.add_argument(
        "--compile-backend",
        metavar="NAME",
        default="inductor",
        help="torch.compile backend of the compiled training step (with --compile; default inductor, "
        "aot_eager compiles in seconds)",
    )
    p.add_argument("--json", metavar="PATH", help="save the raw results as JSON")
    p.add_argument("--plot", metavar="PATH", help="draw normreg's speed-ups as a bar chart (PNG)")
    p.add_argument(
        "--markdown",
        metavar="PATH",
        help="rewrite the results section of a Markdown file (between the bench:results markers)",
    )
    p.add_argument(
        "--families", metavar="LIST", help="comma-separated op families (default: all); see --list"
    )
    p.add_argument("--workloads", metavar="LIST", help="comma-separated workloads (default: the mode's)")
    p.add_argument(
        "--reps", type=int, metavar="N", help="timed repetitions per implementation (best is kept)"
    )
    p.add_argument(
        "--threads",
        metavar="LIST",
        help="thread counts for the scaling table (default: 1, 2, 4, ... up to the machine's)",
    )
    p.add_argument("--no-scaling", action="store_true", help="skip the thread-scaling table")
    p.add_argument("--no-train-step", action="store_true", help="skip the whole-training-step measurement")
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="on a disagreement, report it and go on with the other cases (exit status 1 at the end)",
    )
    p.add_argument("--list", action="store_true", help="list the families, workloads and cases, then exit")
    p.set_defaults(func=_cli)


def _csv(text: str | None, arg: str, cast=str) -> list | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"'{arg}' is empty; give a comma-separated list")
    try:
        return [cast(t) for t in items]
    except ValueError:
        raise ValueError(f"'{arg}' must be a comma-separated list of {cast.__name__}, got {text!r}") from None


def _machine() -> dict:

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = normreg.build_info()
    return {
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "normreg": normreg.__version__,
        "threads": torch.get_num_threads(),
        "build": {k: str(v) for k, v in info.items()},
    }


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_bench(
    mode: str = "quick",
    *,
    families: list[str] | None = None,
    workloads: list[str] | None = None,
    compile: bool = False,
    reps: int | None = None,
    thread_list: list[int] | None = None,
    scaling: bool = True,
    train_step: bool = True,
    keep_going: bool = False,
    command: str | None = None,
    compile_backend: str = "inductor",
) -> dict:
    """Run the benchmark and return the results dictionary (what ``--json`` saves).

    Raises :class:`normreg.bench.runner.AgreementError` on the first disagreement unless
    ``keep_going``; then the disagreements are listed in ``results["errors"]``.
    """

    if mode not in MODES:
        raise ValueError(f"'mode' must be one of {', '.join(MODES)}, got {mode!r}")
    cfg = MODES[mode]
    if reps is not None and reps < 1:
        raise ValueError(f"'reps' must be >= 1, got {reps}")
    reps = reps or cfg["reps"]
    wls = workloads or list(cfg["workloads"])
    t_start = time.perf_counter()

    phases: dict[str, float] = {}
    _log("measuring memory bandwidth ...")
    bw = measure_bandwidth(mb=cfg["bandwidth_mb"], reps=cfg["bandwidth_reps"])
    probe = Probe  # a probe of each case's size is timed alongside it (see runner.run_case)
    phases["bandwidth"] = time.perf_counter() - t_start
    cases = build_cases(families, wls, compile=compile, image_shape=cfg["image_shape"])
    results: dict = {
        "machine": _machine(),
        "bandwidth": {
            "read_gbs": bw.read_gbs,
            "rw_gbs": bw.rw_gbs,
            "buffer_mb": bw.buffer_mb,
            "threads": bw.threads,
        },
        "settings": {
            "mode": mode,
            "workloads": wls,
            "warmup": cfg["warmup"],
            "reps": reps,
            "compile": compile,
            "command": command,
        },
        "cases": [],
        "errors": [],
    }

    ok_cases = []
    for case in cases:
        _log(f"{case.family:>17}  {case.group}")
        try:
            # the overhead cases are microsecond calls: many more repetitions cost nothing
            # and make their best (a difference of two cases) steadier on a noisy machine
            overhead = case.family == "per-call overhead"
            n = reps * OVERHEAD_REPS_FACTOR if overhead else reps
            res = runner.run_case(case, warmup=cfg["warmup"], reps=n, probe=None if overhead else probe)
        except runner.AgreementError as exc:
            if not keep_going:
                raise
            results["errors"].append(str(exc))
            _log(f"  ERROR: {exc}")
            continue
        ok_cases.append(case)
        results["cases"].append(res.as_dict(bw))

    phases["cases"] = time.perf_counter() - t_start - sum(phases.values())
    if scaling and ok_cases:
        counts = thread_list or runner.thread_counts()
        results["settings"]["thread_counts"] = counts
        chosen = ok_cases
        if cfg["scaling"] == "first-per-family":
            seen: set[str] = set()
            chosen = [c for c in ok_cases if not (c.family in seen or seen.add(c.family))]
        chosen = [c for c in chosen if c.family != "per-call overhead"]
        results["threads"] = []
        for case in chosen:
            _log(f"threads {counts}  {case.group}")
            # torch.compile recompiles for each thread count (tens of seconds a case): it joins
            # the scaling where the comparison is a target, the penalty values
            impls = ("normreg", "torch-eager") + (
                ("torch-compile",) if case.family == "penalty value" else ()
            )
            results["threads"].append(
                runner.thread_scaling(case, counts, impls=impls, warmup=cfg["warmup"], reps=reps)
            )

    phases["threads"] = time.perf_counter() - t_start - sum(phases.values())
    if train_step:
        _log("whole training step (one thread, as normreg train) ...")
        with runner.threads(1):
            results["training_step"] = _training_step(ts, cfg)
    phases["training_step"] = time.perf_counter() - t_start - sum(phases.values())
    if train_step:
        _log("the trainer's own cost (normreg train step against a bare loop, one thread) ...")
        with runner.threads(1):
            if ts.gan_available():
                results["trainer_overhead"] = measure_trainer_overhead(
                    cfg["train_config"], warmup=cfg["train_warmup"], reps=cfg["overhead_reps"]
                )
            else:
                results["trainer_overhead"] = {"skipped": "normreg.gan is not part of this build"}
    phases["trainer_overhead"] = time.perf_counter() - t_start - sum(phases.values())
    if train_step and compile:
        _log(
            f"compiled training step, normreg against plain torch (torch.compile backend={compile_backend}) ..."
        )
        with runner.threads(1):
            results["compiled_step"] = measure_compiled_step(
                backend=compile_backend, warmup=cfg["train_warmup"], reps=cfg["train_reps"]
            )
        phases["compiled_step"] = time.perf_counter() - t_start - sum(phases.values())
    results["settings"]["seconds"] = time.perf_counter() - t_start
    results["settings"]["phase_seconds"] = phases
    return results


def _training_step(ts, cfg: dict) -> dict:
    if ts.gan_available():
        return ts.measure_trainer_step(
            cfg["train_config"], warmup=cfg["train_warmup"], reps=cfg["train_reps"]
        )
    setup = ts.standin_setup(**cfg["train_setup"]) if cfg["train_setup"] else ts.default_setup()
    return ts.measure_training_step(setup, warmup=cfg["train_warmup"], reps=cfg["train_reps"])


#: the per-call overhead cases run this many times the mode's repetitions
OVERHEAD_REPS_FACTOR = 5


def _cli(args) -> int:
    mode = "quick" if args.quick else "tiny" if args.tiny else "full"
    try:
        families = _csv(args.families, "--families")
        workloads = _csv(args.workloads, "--workloads")
        thread_list = _csv(args.threads, "--threads", int)
        for f in families or ():
            if f not in FAMILIES:
                raise ValueError(f"'--families' has unknown family {f!r}; choose from {', '.join(FAMILIES)}")
        for w in workloads or ():
            if w not in SHAPES:
                raise ValueError(f"'--workloads' has unknown workload {w!r}; choose from {', '.join(SHAPES)}")
        if thread_list and min(thread_list) < 1:
            raise ValueError(f"'--threads' counts must be >= 1, got {args.threads}")
    except ValueError as exc:
        print(f"normreg bench: {exc}", file=sys.stderr)
        return 2
    if args.list:
        cases = build_cases(families, workloads or MODES[mode]["workloads"], compile=args.compile)
        for c in cases:
            print(f"{c.family:>17}  {c.group:<28} normreg vs {', '.join(p.name for p in c.peers)}")
        return 0
    command = "normreg bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else None
    try:
        results = run_bench(
            mode,
            families=families,
            workloads=workloads,
            compile=args.compile,
            reps=args.reps,
            thread_list=thread_list,
            scaling=not args.no_scaling,
            train_step=not args.no_train_step,
            keep_going=args.keep_going,
            command=command,
            compile_backend=args.compile_backend,
        )
    except AgreementError as exc:
        print(f"normreg bench: {exc}", file=sys.stderr)
        print(
            "normreg bench: stopped; a wrong implementation is never timed (--keep-going to go on)",
            file=sys.stderr,
        )
        return 1
    print(report.format_all(results))
    report.write_outputs(results, json_path=args.json, plot_path=args.plot, markdown_path=args.markdown)
    for label, path in (("results", args.json), ("chart", args.plot), ("report", args.markdown)):
        if path:
            _log(f"{label} written to {path}")
    return 1 if results["errors"] else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m normreg.bench.cli ...`` = ``normreg bench ...``."""
    parser = argparse.ArgumentParser(prog="normreg", allow_abbrev=False)
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
