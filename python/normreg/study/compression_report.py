"""The report of ``normreg study compression``: tables, Pareto figures, the targets checked.

Every statement in "Targets" and "Against magnitude pruning" follows from the numbers by a
fixed rule, so the report says what was measured whichever way it comes out:

* *within the dense seeds' spread*: the compressed mean is no worse than the dense mean by
  more than twice the dense seeds' standard deviation;
* *better / worse than magnitude*: the difference of the means exceeds twice its standard
  error over seeds (:func:`normreg.study.report.compare`); else "within spread".
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import torch

import normreg

from ._io import atomic_savefig, atomic_write_text, read_json
from .compression_records import (
    METHODS,
    METRICS,
    SETUP,
    TRIVIAL_DB,
    _f,
    _lat,
    grid_target,
    load_records,
    summarize,
)
from .report_parts import _plt, compare, fmt_pm

__all__ = ["write_report", "summarize"]

HIGHER = {"psnr": True, "ssim": True, "classifier_score": True, "kid": False}
LABEL = {
    "psnr": "test PSNR (dB) ↑",
    "ssim": "test SSIM ↑",
    "classifier_score": "classifier score ↑",
    "kid": "KID × 10³ ↓",
}
COLORS = {"group_lasso": "tab:blue", "slimming": "tab:orange", "l0": "tab:green", "magnitude": "tab:gray"}
SPEEDUP_TARGET = 2.5


def _pm(row: dict, q: str, scale: float = 1.0) -> str:
    return fmt_pm(
        row["mean"].get(q, math.nan), row["std"].get(q, math.nan), scale=scale, n=row["n"].get(q, 0)
    )


def _table(part_sum: dict, metrics: Sequence[str]) -> list[str]:
    d = part_sum["dense"]
    head = [
        "method",
        "target",
        "MACs kept",
        "params kept",
        *[LABEL[m] for m in metrics],
        "speed-up b64 1t",
        "speed-up b64 2t",
        "speed-up b1 1t",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines.append("| dense | 1 | 1 | 1 | " + " | ".join(_pm(d, m) for m in metrics) + " | 1 | 1 | 1 |")
    for (method, target), row in sorted(
        part_sum["points"].items(), key=lambda kv: (-kv[0][1], METHODS.index(kv[0][0]))
    ):
        cells = [
            method,
            f"{target:g}",
            _pm(row, "mac_fraction"),
            _pm(row, "param_fraction"),
            *[_pm(row, m) for m in metrics],
            *[
                (_pm(row, k) + "x") if row["n"].get(k) else "–"
                for k in ("speedup_b64_t1", "speedup_b64_t2", "speedup_b1_t1")
            ],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _metrics_of(part_sum: dict) -> list[str]:
    return [m for m in METRICS if part_sum["dense"]["n"].get(m)]


def _pareto(part_sum: dict, metrics: Sequence[str], x: str, path: Path, title: str) -> None:
    """One panel per metric: mean ± std over seeds per (method, target), joined per method;
    the dense G as a band (mean ± std) or a point at x = 1 (MACs) / its latency."""
    plt = _plt()
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    cols = 2 if len(metrics) > 2 else len(metrics)
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.3 * rows + 0.4), squeeze=False)
    flat = [a for r in axes for a in r]
    for ax in flat[len(metrics) :]:
        ax.axis("off")
    d = part_sum["dense"]
    for ax, m in zip(flat, metrics):
        for method in METHODS:
            pts = sorted((k[1], v) for k, v in part_sum["points"].items() if k[0] == method)
            if not pts:
                continue
            xs = [v["mean"][x] for _, v in pts]
            xe = [v["std"][x] if math.isfinite(v["std"][x]) else 0 for _, v in pts]
            ys = [v["mean"][m] for _, v in pts]
            ye = [v["std"][m] if math.isfinite(v["std"][m]) else 0 for _, v in pts]
            ax.errorbar(
                xs,
                ys,
                xerr=xe,
                yerr=ye,
                marker="o",
                ms=4,
                lw=1,
                capsize=2,
                color=COLORS[method],
                label=method,
            )
        dm, ds, _ = d["mean"][m], d["std"][m], d["n"][m]
        dx = 1.0 if x == "mac_fraction" else part_sum["dense_ms_b64_t1"][0]
        if math.isfinite(dm) and math.isfinite(dx):
            ax.errorbar(
                [dx], [dm], yerr=[ds if math.isfinite(ds) else 0], marker="*", ms=10, color="k", label="dense"
            )
            if math.isfinite(ds):
                ax.axhspan(dm - 2 * ds, dm + 2 * ds, color="k", alpha=0.08, lw=0)
        if x == "mac_fraction":
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.xaxis.set_major_locator(FixedLocator([2.0**-k for k in range(0, 12, 2)]))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: "1" if v >= 1 else f"1/{round(1 / v)}"))
        else:
            ax.set_xlim(left=0)
        ax.set_xlabel(
            "MACs kept (fraction of dense)" if x == "mac_fraction" else "latency, batch 64, 1 thread (ms)"
        )
        ax.set_ylabel(LABEL[m])
        ax.grid(True, which="both", alpha=0.3)
    flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def _within_dense(d: dict, row: dict, m: str) -> tuple[bool | None, float]:
    """Is the compressed mean no worse than the dense mean by more than 2 dense stds?"""
    dm, ds, cm = d["mean"].get(m, math.nan), d["std"].get(m, math.nan), row["mean"].get(m, math.nan)
    if not (math.isfinite(dm) and math.isfinite(cm)):
        return None, math.nan
    gap = (cm - dm) if HIGHER[m] else (dm - cm)  # > 0: better than dense
    ds = ds if math.isfinite(ds) else 0.0
    return gap >= -2 * ds, gap


def _targets(part_sum: dict, metrics: Sequence[str], t: float) -> list[str]:
    d = part_sum["dense"]
    lines = [
        f"At {t:g} of the dense MACs (dense {', '.join(f'{LABEL[m]} {_pm(d, m)}' for m in metrics)}; "
        f"a method passes a quality target when its mean is within 2 dense standard deviations "
        f"of the dense mean, and the speed target when its batch-64 one-thread speed-up is ≥ {SPEEDUP_TARGET:g}x):",
        "",
    ]
    lines += [
        "| method | MACs kept | classifier score | KID | speed-up ≥ 2.5x (b64 1t) | all met |",
        "|---|---|---|---|---|---|",
    ]
    any_row = False
    for method in METHODS:
        row = part_sum["points"].get((method, t))
        if row is None:
            continue
        any_row = True
        cells = []
        ok_all = True
        for m in ("classifier_score", "kid"):
            ok, _ = _within_dense(d, row, m)
            ok_all &= bool(ok)
            cells.append("–" if ok is None else f"{'yes' if ok else 'no'} ({_pm(row, m)})")
        sp = row["mean"].get("speedup_b64_t1", math.nan)
        ok = math.isfinite(sp) and sp >= SPEEDUP_TARGET
        ok_all &= ok
        cells.append(f"{'yes' if ok else 'no'} ({sp:.2f}x)" if math.isfinite(sp) else "–")
        lines.append(
            f"| {method} | {_pm(row, 'mac_fraction')} | "
            + " | ".join(cells)
            + f" | {'**yes**' if ok_all else 'no'} |"
        )
    return lines if any_row else []


def _vs_magnitude(part_sum: dict, metrics: Sequence[str]) -> list[str]:
    lines, worse = [], []
    targets = sorted({k[1] for k in part_sum["points"]}, reverse=True)
    head = ["method", "target", *[LABEL[m] for m in metrics]]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in targets:
        base = part_sum["points"].get(("magnitude", t))
        if base is None:
            continue
        for method in METHODS:
            row = part_sum["points"].get((method, t))
            if method == "magnitude" or row is None:
                continue
            cells = []
            for m in metrics:
                verdict, diff, se = compare(row, base, m)
                shown = (
                    ""
                    if not math.isfinite(diff)
                    else f" ({diff:+.3g}" + (f" ± {se:.2g})" if math.isfinite(se) else ")")
                )
                cells.append(verdict + shown)
                if verdict == "worse":
                    worse.append(f"{method} at {t:g} on {m}")
            lines.append(f"| {method} | {t:g} | " + " | ".join(cells) + " |")
    if len(lines) == 2:
        return []
    lines += [
        "",
        (
            "**Where a regularized method is worse than magnitude pruning** (beyond 2 standard errors): "
            + "; ".join(worse)
            + "."
        )
        if worse
        else "No regularized method is worse than magnitude pruning beyond 2 standard errors at any target.",
    ]
    return lines


def write_report(out_dir: str | os.PathLike, *, mode: str = "full") -> Path:
    """``report.md``, ``results.csv`` and the figures from the study's records in ``out_dir``."""

    out = Path(out_dir)
    records = load_records(out)
    for r in records:
        if r["kind"] == "compress":
            lat = out / "latency" / f"{r['key']}.json"
            r["latency"] = read_json(lat) if lat.is_file() else None
    if not records:
        raise ValueError(f"'out_dir' {os.fspath(out)!r} holds no records (points/*.json)")
    manifest = read_json(out / "study.json") if (out / "study.json").is_file() else {}
    summ = summarize(records)
    comp = [r for r in records if r["kind"] == "compress"]
    seeds = sorted({r["seed"] for r in records})
    repeats = next((r["latency"]["repeats"] for r in comp if r.get("latency")), "?")
    lines = [
        "# Compressing the generator: channel penalties against magnitude pruning",
        "",
        f"Generated by `normreg study compression --out DIR{' --smoke' if mode == 'smoke' else ''}` on "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}: {len(records) - len(comp)} dense runs and {len(comp)} "
        f"compressions, seeds {seeds}, {manifest.get('elapsed_s', math.nan) / 60:.0f} min of wall time "
        f"({manifest.get('jobs', '?')} run(s) at once, one torch thread each, then the latencies one at a time), "
        f"on {os.cpu_count()} cores ({platform.machine()}, torch {torch.__version__}, normreg {normreg.__version__}).",
        "",
    ]
    if mode == "smoke":
        lines += [
            "> **Smoke mode**: a few steps and one seed, to test the machinery. These numbers measure nothing.",
            "",
        ]
    lines += [
        "Each dense run is a `normreg train` run of the part's config; each compression is "
        "`normreg compress DENSE --method M --target-macs F` (docs/compress.md) from its seed's dense run: "
        "sparse training under ProxAdam's proximal step with λ adapted toward the MAC budget (no sparse "
        "training for `magnitude`, the baseline: the smallest channels of every layer zeroed), removal of "
        "the zero channels (outputs checked equal to 1e-5), fine-tuning. Every number is the mean ± sample "
        "standard deviation over seeds (a seed changes the dense run, its data split and its scoring "
        "classifier); metrics on the test split. Latency: median of "
        + str(repeats)
        + " forward passes, the seed's dense G "
        "and the compressed G taking turns, measured after all training, one model pair at a time.",
        "",
    ]
    csv = [
        "part,kind,seed,method,target,mac_fraction,param_fraction,"
        + ",".join(METRICS)
        + ",speedup_b64_t1,speedup_b64_t2,speedup_b1_t1,seconds"
    ]
    for r in records:
        if r["kind"] == "dense":
            vals = [str(_f((r.get("metrics") or {}).get(m))) for m in METRICS]
            csv.append(
                f"{r['part']},dense,{r['seed']},,,1,1," + ",".join(vals) + f",,,,{_f(r.get('seconds')):.1f}"
            )
        else:
            vals = [str(_f(r["compressed"]["test"].get(m))) for m in METRICS]
            csv.append(
                f"{r['part']},compress,{r['seed']},{r['method']},{r['target']:g},{r['mac_fraction']:.4f},"
                f"{r['params'] / r['dense_params']:.4f},"
                + ",".join(vals)
                + f",{_lat(r, 64, 1):.3f},{_lat(r, 64, 2):.3f},{_lat(r, 1, 1):.3f},{_f(r.get('seconds')):.1f}"
            )
    atomic_write_text(out / "results.csv", "\n".join(csv) + "\n")
    for part, ps in summ.items():
        metrics = _metrics_of(ps)
        dcfg = next(r["config"] for r in records if r["part"] == part and r["kind"] == "dense")
        ccfg = next(
            (r["compress_config"] for r in comp if r["part"] == part and r["method"] != "magnitude"), None
        )
        lines += [f"## {SETUP[part]['title']}", ""]
        lines.append(
            f"Dense runs: `task={dcfg['task']}`, `dataset={dcfg['dataset']}`, {dcfg['steps']} steps"
            + (
                f"; compressions: {ccfg['sparse_steps']} sparse-training and {ccfg['finetune_steps']} fine-tuning steps "
                f"(strength {ccfg['strength']:g}, gain {ccfg['gain']:g})."
                if ccfg
                else "."
            )
        )
        dense_ms = ps["dense_ms_b64_t1"]
        if dense_ms[2]:
            lines.append(f"The dense G takes {dense_ms[0]:.3g} ms per batch of 64 on one thread.")
        lines += ["", *_table(ps, metrics), ""]
        for x, name in (("mac_fraction", "macs"), ("ms_b64_t1", "latency")):
            fig = f"pareto-{name}-{part}.png"
            have = any(v["n"].get(x) for v in ps["points"].values())
            if not have:
                continue
            _pareto(
                ps,
                metrics,
                x,
                out / fig,
                f"{SETUP[part]['title']}: quality against {'MACs kept' if x == 'mac_fraction' else 'CPU latency'} "
                "(mean ± std over seeds; grey band: dense mean ± 2 std)",
            )
            lines += [f"![quality against {'MACs' if name == 'macs' else 'latency'}]({fig})", ""]
        if (out / f"samples-{part}.png").is_file():
            t = grid_target([k[1] for k in ps["points"]])
            lines += [
                f"Samples (seed {seeds[0]}, target {t:g}):",
                "",
                f"![dense vs compressed](samples-{part}.png)",
                "",
            ]
        t = grid_target([k[1] for k in ps["points"]])
        tl = _targets(ps, metrics, t)
        if tl:
            lines += ["### Targets", "", *tl, ""]
        vm = _vs_magnitude(ps, metrics)
        if vm:
            lines += [
                "### Against magnitude pruning, at equal target",
                "",
                "Difference of the means (method − magnitude) ± its standard error; a verdict counts beyond 2 "
                "standard errors. The MACs actually kept are in the table above (a method that overshoots "
                "its budget is compared at its target, not at its MACs).",
                "",
                *vm,
                "",
            ]
        trivial = [
            f"{m} at {t:g} ({ps['points'][(m, t)]['mean']['trivial'] * ps['points'][(m, t)]['n']['trivial']:.0f} "
            f"of {ps['points'][(m, t)]['n']['trivial']} seeds)"
            for (m, t) in sorted(ps["points"], key=lambda k: (METHODS.index(k[0]), -k[1]))
            if ps["points"][(m, t)]["mean"]["trivial"] > 0
        ]
        if trivial:
            lines += [
                f"**Collapsed to the trivial answer** (the compressed G's test PSNR within {TRIVIAL_DB:g} dB of its "
                "input's, i.e. it returns its input): " + "; ".join(trivial) + ".",
                "",
            ]
        missed = [
            f"{m} at {t:g} ({ps['points'][(m, t)]['mean']['target_met'] * 100:.0f}% of seeds met)"
            for (m, t) in ps["points"]
            if ps["points"][(m, t)]["mean"]["target_met"] < 1
        ]
        if missed:
            lines += ["Budgets not met (MACs kept above the target): " + "; ".join(missed) + ".", ""]
    lines += [
        "Files: `results.csv` (one row per run), `points/` (the records), `latency/` (the timings).",
        "",
    ]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
