"""The performance report: terminal table, JSON, bar chart and the Markdown results section.

``normreg bench`` builds one results dictionary (see :func:`normreg.bench.cli.run_bench`)
and hands it to the functions here. They also work on a saved ``--json`` file, so a report
can be redrawn without re-running anything::
    python -m normreg.bench.report results.json                  # print the table
    python -m normreg.bench.report results.json --plot speedups.png
    python -m normreg.bench.report results.json --markdown docs/performance.md --plot docs/performance.png

``--markdown FILE`` rewrites only the part of FILE between the markers
``<!-- bench:results:begin -->`` and ``<!-- bench:results:end -->``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from normreg.bench.bandwidth import last_level_cache_bytes
from normreg.bench.compiled_step import format_compiled_step

__all__ = [
    "BEGIN",
    "END",
    "format_table",
    "format_threads",
    "format_training_step",
    "format_trainer_overhead",
    "overhead",
    "to_markdown",
    "save_json",
    "load_json",
    "plot_speedups",
    "update_markdown",
    "main",
]

BEGIN = "<!-- bench:results:begin -->"
END = "<!-- bench:results:end -->"


def _fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    if s >= 1e-6:
        return f"{s * 1e6:.1f} us"
    return f"{s * 1e9:.0f} ns"  # per-tensor costs: "0.3 us" would hide what the target is about


def _old_probe_in_cache_case(case: dict) -> bool:
    """A case of a run made before probes had the case's size (one memory probe for all),
    whose data fit in this machine's last-level cache: its share would compare a cache's
    speed with memory's, so none is shown."""

    if "probe_gbs" not in case or "probe_in_cache" in case:
        return False
    buffer = case["nbytes"] if case.get("bw_kind") == "read" else case["nbytes"] // 2
    return buffer <= last_level_cache_bytes()


def _probe_cell(case: dict) -> str:
    """The same-size probe's GB/s, and whether its buffer sat in the cache or in memory."""
    if "probe_gbs" not in case:
        return ""
    if _old_probe_in_cache_case(case):
        return f"{case['probe_gbs']:.1f} (memory; data in cache)"
    where = "cache" if case.get("probe_in_cache") else "memory"
    return f"{case['probe_gbs']:.1f} ({where})"


def _share_cell(r: dict, case: dict | None = None) -> str:
    if case is not None and ("probe_gbs" not in case or _old_probe_in_cache_case(case)):
        return ""  # no probe beside it (per-call overhead), or a cache case against memory
    return f"{100 * r['fraction_of_bandwidth']:.0f}%" if "fraction_of_bandwidth" in r else ""


def _rows(results: dict) -> list[list[str]]:
    rows = []
    for case in results.get("cases", []):
        for name, r in case["results"].items():
            sp = case["speedup"].get(name)
            rows.append(
                [
                    case["family"],
                    case["group"],
                    name,
                    _fmt_time(r["best_s"]),
                    f"{r['gbs']:.1f}",
                    _probe_cell(case),
                    _share_cell(r, case),
                    "" if sp is None else f"{sp:.2f}x",
                ]
            )
    return rows


HEADER = ["family", "op/workload", "implementation", "best time", "GB/s", "probe GB/s", "of probe", "normreg speed-up"]


def _text_table(header: Sequence[str], rows: list[list[str]], key: int = 1) -> str:
    widths = (
        [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
        if rows
        else [len(h) for h in header]
    )
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*header), line.format(*("-" * w for w in widths))]
    prev = None
    for r in rows:
        if prev is not None and r[key] != prev:
            out.append("")
        prev = r[key]
        out.append(line.format(*r))
    return "\n".join(out)


def _md_table(header: Sequence[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(out)


def format_table(results: dict) -> str:
    """The main table: one row per (case, implementation)."""
    return _text_table(HEADER, _rows(results))


def _thread_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    scal = results.get("threads") or []
    counts = scal[0]["counts"] if scal else []
    header = (
        ["op/workload", "implementation"]
        + [f"{n} thr" for n in counts]
        + [f"speed-up {counts[0]}->{counts[-1]}" if counts else ""]
    )
    rows = []
    for s in scal:
        for name, d in s["impls"].items():
            rows.append(
                [s["group"], name]
                + [_fmt_time(d["best_s"][str(n)]) for n in s["counts"]]
                + [f"{d['ratio'][str(s['counts'][-1])]:.2f}x"]
            )
    return header, rows


def format_threads(results: dict) -> str:
    header, rows = _thread_rows(results)
    return _text_table(header, rows, key=0) if rows else ""


def overhead(results: dict) -> list[dict]:
    """Fixed cost per call and cost per tensor, from the ``tiny1`` / ``tiny200`` cases:
    ``fixed = t(1 tensor)``, ``per_tensor = (t(200) - t(1)) / 199``."""
    by = {(c["op"], c["workload"]): c for c in results.get("cases", []) if c["family"] == "per-call overhead"}
    out = []
    for op in sorted({op for op, wl in by if wl == "tiny1"}):
        one, many = by.get((op, "tiny1")), by.get((op, "tiny200"))
        if not one or not many:
            continue
        for name in one["results"]:
            if name not in many["results"]:
                continue
            t1, t200 = one["results"][name]["best_s"], many["results"][name]["best_s"]
            out.append({"op": op, "impl": name, "fixed_s": t1, "per_tensor_s": (t200 - t1) / 199})
    return out


def _overhead_rows(results: dict) -> list[list[str]]:
    return [
        [o["op"], o["impl"], _fmt_time(o["fixed_s"]), _fmt_time(max(o["per_tensor_s"], 0.0))]
        for o in overhead(results)
    ]


OVERHEAD_HEADER = ["op", "implementation", "fixed cost per call", "cost per tensor"]


def _training_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    ts = results.get("training_step")
    header = ["penalty applied by", "step time", "step without penalty", "regularization share"]
    if not ts or "variants" not in ts:
        return header, []
    base = ts["variants"]["none"]["best_s"]
    rows = []
    for name, label in _TRAINING_LABELS.items():
        v = ts["variants"].get(name)
        if v:
            rows.append([label, _fmt_time(v["best_s"]), _fmt_time(base), f"{100 * ts['share'][name]:.2f}%"])
    return header, rows


_TRAINING_LABELS = {
    "normreg": "normreg (fused into ProxAdam's step)",
    "normreg-add_grad": "normreg add_grad_ + torch Adam",
    "torch-eager": "torch-eager",
}


def _ratio_lines(ts: dict) -> list[str]:
    ratios = ts.get("share_ratios") or ({"normreg": ts["share_ratio"]} if ts.get("share_ratio") is not None else {})
    out = []
    for name, ratio in ratios.items():
        if ratio > 0:
            out.append(
                f"{_TRAINING_LABELS.get(name, name)}: the penalty's share of a step is {ratio:.2f} times "
                f"the eager expression's ({1 / ratio:.1f}x less time spent on the penalty)"
            )
    if ts.get("share", {}).get("normreg", 0.0) < 0:
        out.append(
            "the fused penalty's measured cost is negative: its steps with the term were faster than "
            "without it, i.e. the term costs less than the noise of this measurement"
        )
    return out


def format_training_step(results: dict) -> str:
    ts = results.get("training_step")
    if not ts:
        return ""
    if "skipped" in ts:
        return f"training step: skipped ({ts['skipped']})"
    header, rows = _training_rows(results)
    lines = [f"training step: {ts['model']}, {ts['penalty']}", _text_table(header, rows, key=0)]
    lines += _ratio_lines(ts)
    return "\n".join(lines)


def format_trainer_overhead(results: dict) -> str:
    """The ``normreg train`` step against a bare loop over the same models and optimizers."""
    o = results.get("trainer_overhead")
    if not o:
        return ""
    if "skipped" in o:
        return f"trainer overhead: skipped ({o['skipped']})"
    return (
        f"trainer overhead: {o['model']}; blocks of {o['block_steps']} steps, best of {o['reps']}\n"
        f"  normreg train step (with its log line every {o['block_steps']} steps): {_fmt_time(o['trainer_step_s'])}\n"
        f"  bare loop, same G, D, losses and optimizers:                 {_fmt_time(o['bare_step_s'])}\n"
        f"  the trainer takes {o['ratio']:.3f} times the bare loop's time "
        f"({100 * (o['ratio'] - 1):+.1f}%)"
    )


def format_all(results: dict) -> str:
    """Everything ``normreg bench`` prints."""
    parts = [_header_text(results), format_table(results)]
    if results.get("threads"):
        parts.append(
            "thread scaling (time at each thread count; speed-up = time(1) / time(n)):\n"
            + format_threads(results)
        )
    if overhead(results):
        parts.append("per-call overhead:\n" + _text_table(OVERHEAD_HEADER, _overhead_rows(results), key=0))
    if results.get("training_step"):
        parts.append(format_training_step(results))
    if results.get("trainer_overhead"):
        parts.append(format_trainer_overhead(results))
    if results.get("compiled_step"):
        parts.append(format_compiled_step(results["compiled_step"]))
    if _notes(results):
        parts.append("notes:\n" + "\n".join(f"  {n}" for n in _notes(results)))
    if results.get("skipped"):
        parts.append("skipped: " + "; ".join(f"{k}: {v}" for k, v in results["skipped"].items()))
    if results.get("errors"):
        parts.append("ERRORS (not timed):\n" + "\n".join(f"  {e}" for e in results["errors"]))
    return "\n\n".join(p for p in parts if p)


def _notes(results: dict) -> list[str]:
    seen: dict[str, str] = {}
    for c in results.get("cases", []):
        for impl, note in c.get("notes", {}).items():
            seen.setdefault(note, impl)
            if impl not in seen[note].split(", "):
                seen[note] += f", {impl}"
    return [f"{impls}: {note}" for note, impls in seen.items()]


def _header_text(results: dict) -> str:
    m, bw = results.get("machine", {}), results.get("bandwidth", {})
    out = [
        f"normreg {m.get('normreg', '?')}, torch {m.get('torch', '?')}, {m.get('cpu', '?')}, "
        f"{m.get('threads', '?')} threads",
    ]
    if bw:
        out.append(
            f"measured memory bandwidth: read {bw['read_gbs']:.1f} GB/s, read+write {bw['rw_gbs']:.1f} GB/s "
            f"({bw['buffer_mb']:.0f} MB buffer)"
        )
    if any(_old_probe_in_cache_case(c) for c in results.get("cases", [])):
        out.append(
            "probe GB/s: this run timed one memory probe (a buffer larger than the cache) beside every "
            "case; for cases whose data fit in the cache no share is given (a cache against memory)"
        )
    elif any("probe_gbs" in c for c in results.get("cases", [])):
        out.append(
            "probe GB/s: a plain pass (torch sum, or in-place scale for read+write cases) over a buffer "
            "of the case's size, timed in the same rounds; (cache): that buffer fits in the last-level "
            "cache, (memory): it does not. 'of probe' = the implementation's GB/s / the probe's"
        )
    secs = results.get("settings", {}).get("seconds")
    if secs is not None:
        out.append(f"run took {secs:.0f} s")
    out.append(
        f"timing: best of {results.get('settings', {}).get('reps', '?')} after "
        f"{results.get('settings', {}).get('warmup', '?')} warm-up call(s); speed-up = peer time / normreg time"
    )
    return "\n".join(out)


def _compact(results: dict) -> tuple[list[str], list[list[str]]]:
    """One row per case: normreg's time, GB/s and bandwidth share, then its speed-up over each peer."""
    cases = results.get("cases", [])
    peers = list(dict.fromkeys(p for c in cases for p in c["results"] if p != "normreg"))
    probed = any("probe_gbs" in c for c in cases)
    header = ["family", "op/workload", "normreg time", "GB/s"]
    header += ["probe GB/s", "of probe"] if probed else []
    header += [f"vs {p}" for p in peers]
    rows = []
    for c in cases:
        r = c["results"]["normreg"]
        sp = [f"{c['speedup'][p]:.2f}x" if p in c["speedup"] else "" for p in peers]
        pr = [_probe_cell(c), _share_cell(r, c)] if probed else []
        rows.append([c["family"], c["group"], _fmt_time(r["best_s"]), f"{r['gbs']:.1f}", *pr, *sp])
    return header, rows


def to_markdown(results: dict, plot_path: str | None = None) -> str:
    """The Results section of docs/performance.md: the run's header, one table (normreg's
    time, GB/s, probe and speed-up over each peer per case), the chart, and the training-step
    figures in a few lines. Every implementation's row and the thread scaling are in the
    terminal output and the JSON."""
    parts = [
        "```text\n" + _header_text(results) + "\n```",
        "normreg's time, its GB/s, the same-size probe's GB/s (cache or memory) and normreg's share "
        "of it, and its speed-up over each peer (peer time / normreg time; above 1: normreg is faster):",
        _md_table(*_compact(results)),
    ]
    if plot_path:
        parts.append(f"![normreg speed-up over each peer]({plot_path})")
    lines = []
    for o in overhead(results):
        if o["impl"] == "normreg":
            lines.append(
                f"- per-call overhead of `{o['op']}`: {_fmt_time(o['fixed_s'])} a call "
                f"+ {_fmt_time(max(o['per_tensor_s'], 0.0))} a tensor"
            )
    ts = results.get("training_step")
    if ts and "variants" in ts:
        base = ts["variants"]["none"]["best_s"]
        lines.append(f"- a whole training step ({ts['model']}, {ts['penalty']}): {_fmt_time(base)} without the penalty")
        for name, label in _TRAINING_LABELS.items():
            if name in ts.get("share", {}):
                lines.append(f"  - {label}: the penalty takes {100 * ts['share'][name]:.2f}% of the step")
        lines += [f"  - {line}" for line in _ratio_lines(ts)]
    o = results.get("trainer_overhead")
    if o and "ratio" in o:
        lines.append(
            f"- the trainer's own cost: a `normreg train` step takes {o['ratio']:.3f} times a bare loop "
            f"over the same G, D, losses and optimizers ({_fmt_time(o['trainer_step_s'])} against "
            f"{_fmt_time(o['bare_step_s'])})"
        )
    if lines:
        parts.append("\n".join(lines))
    if _notes(results):
        parts.append("Notes: " + "; ".join(_notes(results)) + ".")
    if results.get("skipped"):
        parts.append(
            "Skipped families: " + "; ".join(f"{k} ({v})" for k, v in results["skipped"].items()) + "."
        )
    if results.get("errors"):
        parts.append("**Errors** (not timed): " + "; ".join(results["errors"]))
    cmd = results.get("settings", {}).get("command")
    if cmd:
        parts.append(f"Generated by `{cmd}`.")
    return "\n\n".join(parts)


def save_json(results: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, sort_keys=False)
        f.write("\n")


def load_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def plot_speedups(results: dict, path: str) -> None:
    """A horizontal bar chart of normreg's speed-up over each peer: one group of bars per
    case (only the peers it has), log scale, the line of parity at 1, values at the bar ends
    (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = [c for c in results.get("cases", []) if c.get("speedup")]
    if not cases:
        raise ValueError("plot_speedups: 'results' has no case with a speed-up to draw")
    peers = list(dict.fromkeys(p for c in cases for p in c["speedup"]))
    colors = {p: plt.get_cmap("tab10")(i % 10) for i, p in enumerate(peers)}
    ys, xs, cs, ticks, labels = [], [], [], [], []
    y = 0.0
    for c in cases:
        first = y
        for p in peers:
            if p in c["speedup"]:
                ys.append(y)
                xs.append(c["speedup"][p])
                cs.append(p)
                y += 1
        ticks.append((first + y - 1) / 2)
        labels.append(c["group"])
        y += 0.8  # gap between cases
    fig, ax = plt.subplots(figsize=(9, 0.19 * y + 1.6))
    for p in peers:
        sel = [i for i, q in enumerate(cs) if q == p]
        ax.barh([ys[i] for i in sel], [xs[i] for i in sel], height=0.9, color=colors[p], label=f"over {p}")
    for yy, xx in zip(ys, xs, strict=True):
        ax.text(xx, yy, f" {xx:.2g}x", va="center", fontsize=6)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    lo, hi = min(xs + [1.0]), max(xs + [1.0])
    ax.set_xlim(lo / 1.5, hi * 2.5)
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_ylim(y - 0.3, -1.0)
    ax.set_xlabel("normreg speed-up = peer time / normreg time (log scale; > 1: normreg faster)")
    m = results.get("machine", {})
    # the title heads the legend (a figure title over a legend above the axes overlapped it)
    leg = ax.legend(
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=3,
        fontsize=7,
        frameon=False,
        title=f"normreg vs torch: {m.get('cpu', '?')}, {m.get('threads', '?')} threads",
    )
    leg.get_title().set_fontsize(9)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_markdown(path: str, markdown: str) -> None:
    """Replace the text between :data:`BEGIN` and :data:`END` in ``path`` with ``markdown``."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < i:
        raise ValueError(
            f"'markdown' file {path} has no {BEGIN} ... {END} markers; add them where the results go"
        )
    text = text[: i + len(BEGIN)] + "\n" + markdown.rstrip() + "\n" + text[j:]
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_outputs(results: dict, *, json_path=None, plot_path=None, markdown_path=None) -> None:
    """Save JSON, draw the chart and update the Markdown file, as requested."""
    if json_path:
        save_json(results, json_path)
    if plot_path:
        plot_speedups(results, plot_path)
    if markdown_path:
        rel = None
        if plot_path:
            rel = os.path.relpath(plot_path, os.path.dirname(os.path.abspath(markdown_path)))
        update_markdown(markdown_path, to_markdown(results, rel))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m normreg.bench.report",
        description="Redraw a saved `normreg bench --json` run.",
        allow_abbrev=False,
    )
    p.add_argument("json", help="results saved by `normreg bench --json PATH`")
    p.add_argument("--plot", metavar="PNG", help="draw the speed-ups as a bar chart")
    p.add_argument(
        "--markdown",
        metavar="FILE",
        help="rewrite the results section of FILE (between the bench:results markers)",
    )
    args = p.parse_args(argv)
    results = load_json(args.json)
    print(format_all(results))
    write_outputs(results, plot_path=args.plot, markdown_path=args.markdown)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
