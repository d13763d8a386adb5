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

from normreg.bench.compiled_step import format_compiled_step
from normreg.bench.tables import (  # noqa: F401  (part of this module's API)
    _TRAINING_LABELS,
    HEADER,
    OVERHEAD_HEADER,
    _fmt_time,
    _md_table,
    _old_probe_in_cache_case,
    _overhead_rows,
    _probe_cell,
    _ratio_lines,
    _rows,
    _share_cell,
    _text_table,
    _thread_rows,
    _training_rows,
    format_table,
    format_threads,
    format_trainer_overhead,
    format_training_step,
    overhead,
)

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
        lines.append(
            f"- a whole training step ({ts['model']}, {ts['penalty']}): {_fmt_time(base)} without the penalty"
        )
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
