"""The tables of the performance report, as text and as Markdown: the case table (time,
GB/s, the probe and normreg's share of it, speed-ups), the thread scaling, the per-call
overhead fit, the training step and the trainer's own cost. ``normreg.bench.report`` puts
them together with the header, notes, chart and JSON."""

from __future__ import annotations

from collections.abc import Sequence

from normreg.bench.bandwidth import last_level_cache_bytes


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


HEADER = [
    "family",
    "op/workload",
    "implementation",
    "best time",
    "GB/s",
    "probe GB/s",
    "of probe",
    "normreg speed-up",
]


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
    ratios = ts.get("share_ratios") or (
        {"normreg": ts["share_ratio"]} if ts.get("share_ratio") is not None else {}
    )
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
