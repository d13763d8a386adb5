"""The report of ``normreg study stability``: tables, figures and a generated answer.

Statements are generated from the numbers by the rule of the other studies
(normreg.study.report): a difference between two arms counts only when it exceeds twice
its standard error over seeds, ``|d| > 2 sqrt(s_a²/n_a + s_b²/n_b)``; divergence counts
are compared by a one-sided Fisher exact test (p < 0.05; with 5 seeds an arm must fail at least 4
times more than the other, e.g. 4/5 against 0/5).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
from pathlib import Path

from normreg.stability.arms import ARMS, BASE, SEEDS, SMOKE, arm_names

from ..study._io import atomic_write_text
from .report_common import (  # noqa: F401
    _SCALE,
    METRICS,
    _adaptive_lines,
    _f,
    _groups,
    _ms,
    _plt,
    _seed_table,
    _values,
    arm_table,
    more_divergences,
    verdict,
)
from .report_digits import digits_section  # noqa: F401
from .report_ring_figures import _curves_figure, _scatter_grid, _summary_figure

__all__ = ["write_report", "arm_table", "verdict"]


def _compare_lines(by_arm: dict[str, list[dict]], ref: str) -> list[str]:
    out = []
    if ref not in by_arm:
        return out
    for arm, recs in by_arm.items():
        if arm == ref:
            continue
        parts = []
        for m in ("modes_covered", "hq_fraction", "kl_uniform", "late_modes"):
            v, d, se = verdict(_values(recs, m), _values(by_arm[ref], m), METRICS[m][1])
            sc = _SCALE.get(m, 1.0)
            label = (
                "modes, last 5 evals"
                if m == "late_modes"
                else METRICS[m][0].split(" (")[0].split(" ↑")[0].split(" ↓")[0]
            )
            parts.append(f"{label} {v}" + (f" ({d * sc:+.2f} ± {se * sc:.2f})" if math.isfinite(d) else ""))
        div = sum(bool(r["summary"]["diverged"]) for r in recs)
        div_ref = sum(bool(r["summary"]["diverged"]) for r in by_arm[ref])
        out.append(
            f"- **{arm}** vs {ref}: "
            + "; ".join(parts)
            + f"; diverged {div}/{len(recs)} vs {div_ref}/{len(by_arm[ref])}."
        )
    return out


def _answer(by_arm: dict[str, list[dict]]) -> list[str]:
    norm_arms = [a.name for a in ARMS if a.group in ("norm", "adaptive") and a.name in by_arm]
    refs = [a for a in ("none", "R1 γ=1", "spectral norm") if a in by_arm]
    lines = []
    for arm in norm_arms:
        recs = by_arm[arm]
        div = sum(bool(r["summary"]["diverged"]) for r in recs)
        bits = []
        for ref in refs:
            v_modes = verdict(_values(recs, "modes_covered"), _values(by_arm[ref], "modes_covered"))[0]
            v_hq = verdict(_values(recs, "hq_fraction"), _values(by_arm[ref], "hq_fraction"))[0]
            v_late = verdict(_values(recs, "late_modes"), _values(by_arm[ref], "late_modes"))[0]
            dref = sum(bool(r["summary"]["diverged"]) for r in by_arm[ref])
            bits.append(
                f"vs {ref}: modes {v_modes}, high-quality {v_hq}, modes over the last 5 evals {v_late}, "
                f"diverged {div} vs {dref}"
            )
        lines.append(f"- {arm}: " + "; ".join(bits) + ".")

    def n_div(a: str) -> int:
        return sum(bool(r["summary"]["diverged"]) for r in by_arm[a])

    def verdicts(a: str, ref: str) -> list[str]:
        return [
            verdict(_values(by_arm[a], m), _values(by_arm[ref], m), METRICS[m][1])[0]
            for m in ("modes_covered", "hq_fraction", "late_modes")
        ]

    def any_better(a: str, ref: str) -> str:
        vs = verdicts(a, ref)
        if "better" in vs and "worse" not in vs:
            return "better"
        if "worse" in vs and "better" not in vs:
            return "worse"
        return "mixed" if "better" in vs else "within spread"

    has_none = "none" in by_arm
    better_than_none = [
        a
        for a in norm_arms
        if has_none
        and any_better(a, "none") == "better"
        and not more_divergences(n_div(a), len(by_arm[a]), n_div("none"), len(by_arm["none"]))
    ]

    def diverges_more(a: str, ref: str) -> bool:
        return more_divergences(n_div(a), len(by_arm[a]), n_div(ref), len(by_arm[ref]))

    worse_than_none = [
        a for a in norm_arms if has_none and ("worse" in verdicts(a, "none") or diverges_more(a, "none"))
    ]

    head = []
    if better_than_none:
        head.append(
            "Norm-penalty arms better than no regularization (modes covered, high-quality fraction or "
            "modes over the last 5 evals beyond the seeds' spread, none worse, no more divergences): "
            + ", ".join(better_than_none)
            + "."
        )
    else:
        head.append(
            "**No** norm-penalty arm is better than no regularization beyond the seeds' spread (modes "
            "covered, high-quality fraction, modes over the last 5 evals) without more divergences."
        )
    if worse_than_none:
        head.append(
            "Norm-penalty arms worse than no regularization (a metric worse beyond the spread, or more "
            "divergences by a one-sided Fisher exact test, p < 0.05): " + ", ".join(worse_than_none) + "."
        )
    for ref in ("R1 γ=1", "spectral norm"):
        if ref not in by_arm:
            continue
        groups: dict[str, list[str]] = {}
        for a in norm_arms:
            groups.setdefault(any_better(a, ref), []).append(a)
        head.append(
            f"Against {ref} (modes covered, high-quality fraction, modes over the last 5 evals): "
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in groups.items())
            + "."
        )
    return [x for h in head for x in (h, "")] + ["Per arm:", ""] + lines


def write_report(out_dir: str | os.PathLike, *, mode: str = "full") -> Path:
    out = Path(out_dir)
    all_records = [json.loads(p.read_text()) for p in sorted((out / "points").glob("*.json"))]
    if not all_records:
        raise ValueError(f"no finished runs in {os.fspath(out / 'points')!r}")
    records = [r for r in all_records if r.get("part", "ring") == "ring"]
    digit_records = [r for r in all_records if r.get("part") == "digits"]
    by_arm = _groups(records)
    manifest = json.loads((out / "study.json").read_text()) if (out / "study.json").is_file() else {}
    if not records:  # the digits part alone (parts=("digits",))
        d_lines, d_answer = digits_section(digit_records, out, mode)
        L = [
            "# Study: does norm regularization of D stabilize GAN training?",
            "",
            f"Generated by `normreg study stability{' --smoke' if mode == 'smoke' else ''}`; nothing below was "
            "edited by hand. **Not in this run:** the ring of 8 Gaussians.",
            "",
            f"Wall time {manifest.get('elapsed_s', math.nan) / 60:.1f} min.",
            "",
            *d_lines,
            "",
            "## Does a norm penalty on D stabilize training here, compared with R1 and spectral norm?",
            "",
            *d_answer,
        ]
        path = out / "report.md"
        atomic_write_text(path, "\n".join(L))
        return path
    base = {**BASE, **(SMOKE if mode == "smoke" else {})}
    # results.csv: one row per run
    buf = io.StringIO()
    w = csv.writer(buf)
    cols = [
        "arm",
        "group",
        "seed",
        "diverged",
        "modes_covered",
        "hq_fraction",
        "kl_uniform",
        "late_modes",
        "d_weight_norm",
        "d_zero_fraction",
        "lam_d_final",
        "steps",
        "ms_per_step",
        "cpu_seconds",
    ]
    w.writerow(cols)
    for arm, recs in by_arm.items():
        for r in recs:
            row = [arm, r["group"], r["seed"], int(bool(r["summary"]["diverged"]))]
            for m in cols[4:]:
                v = _values([r], m)[0] if m != "steps" else r["summary"]["steps"]
                row.append(
                    ""
                    if isinstance(v, float) and math.isnan(v)
                    else (f"{v:.6g}" if isinstance(v, float) else v)
                )
            w.writerow(row)
    atomic_write_text(out / "results.csv", buf.getvalue())
    figs = []
    if _scatter_grid(by_arm, out / "samples_grid.png"):
        figs.append(
            (
                "samples_grid.png",
                "G's samples at steps "
                + ", ".join(map(str, base["snapshots"]))
                + " of seed 0, one row per arm.",
            )
        )
    _summary_figure(by_arm, out / "final_state.png")
    figs.append(
        (
            "final_state.png",
            "Divergence counts, and each seed's final modes covered and high-quality fraction.",
        )
    )
    _curves_figure(by_arm, out / "curves.png")
    figs.append(("curves.png", "Modes covered and high-quality fraction during training, mean over seeds."))
    n_runs = len(records)
    cpu = sum(_f(r["summary"].get("cpu_seconds", math.nan)) for r in records)
    missing = [a for a in arm_names() if a not in by_arm] if mode == "full" else []
    L = [
        "# Study: does norm regularization of D stabilize GAN training?",
        "",
        f"Generated by `normreg study stability{' --smoke' if mode == 'smoke' else ''}`; nothing below was edited by hand.",
        "",
        "**Question.** Does a norm penalty on the discriminator (normreg.SquaredL2, normreg.L1, "
        "normreg.ElasticNet, as ProxAdam's proximal step; or SquaredL2 scaled by an adaptive controller) "
        "stabilize GAN training, compared with R1 and spectral normalization? Testbeds: the ring of 8 Gaussians "
        "(radius 2, σ = 0.02; Metz et al. 2017) and unconditional 8x8 digits with the image trainer (section "
        "Digits). The Dirac-GAN analysis of the same regularizers is in docs/stability.md.",
        "",
        "**Setup.** "
        f"G and D: MLPs with {base['hidden']} ReLU units in each of 2 hidden layers, z ∈ R^16 ~ N(0, I); "
        "non-saturating GAN loss, one D step then one G step, Adam (lr 1e-3, betas (0.5, 0.999)) for both "
        "(ProxAdam for D when it carries a norm penalty; biases unpenalized); "
        f"batch {base['batch_size']}, {base['steps']} steps. R1 = (γ/2) E|∇_x D(x_real)|² every step. "
        "Adaptive: AdaptiveLambda(target 0.6, gain 0.5, every 4 steps) scales SquaredL2(1) on D from "
        "r_t = E[sign(D(x_real))]. "
        f"Metrics on {base['eval_samples']} samples of G at the end: a sample is high quality if within 3σ of a mode, "
        "a mode is covered if ≥ 1% of all samples are high-quality samples of it, KL is that of the "
        "high-quality samples' mode histogram to uniform (undefined without any); a run **diverged** if a loss "
        "became non-finite or < 5% of its final samples are high quality.",
        "",
        f"**Runs.** {n_runs} ring runs ({len(by_arm)} arms × up to {max(len(v) for v in by_arm.values())} seeds), "
        f"{manifest.get('jobs', '?')} at once, one torch thread each; "
        f"wall time of the whole study{' (both parts, summed over resumed sessions)' if digit_records else ''} "
        f"{manifest.get('elapsed_s', math.nan) / 60:.1f} min, CPU time of the ring runs {cpu / 60:.1f} min "
        f"({platform.machine()}, {os.cpu_count()} cores; the machine was shared with other jobs, so wall times "
        "and ms / step are not comparable between arms).",
        "",
    ]
    if missing:
        L += [f"**Not run:** {', '.join(missing)}.", ""]

    short = {a: len(v) for a, v in by_arm.items() if len(v) < SEEDS}
    if mode == "full" and short:
        L += [
            f"**Incomplete:** the study plans {SEEDS} seeds per arm; this run was stopped before all of them "
            "finished (seed-major order: every arm's seed k runs before any seed k + 1). Finished seeds per arm: "
            + ", ".join(f"{a} {n}" for a, n in short.items())
            + ". Continue it with `--resume`.",
            "",
        ]
    if not digit_records:
        L += ["**Not in this run:** the digits part (the image trainer on unconditional 8x8 digits).", ""]
    L += [
        "## Ring of 8 Gaussians: results" if digit_records else "## Results",
        "",
        "Mean ± std over seeds (final step). ‖W_D‖: Frobenius norm of D's weight matrices at the end.",
        "",
        arm_table(by_arm),
        "",
        "Each seed: modes covered / high-quality fraction (**div**: diverged).",
        "",
        _seed_table(by_arm),
        "",
        *_adaptive_lines(by_arm),
    ]
    for name, cap in figs:
        L += [f"![{name}]({name})", "", cap, ""]
    L += [
        "## Ring: against no regularization" if digit_records else "## Against no regularization",
        "",
        "The 2-se rule per metric (difference ± its standard error).",
        "",
    ]
    L += _compare_lines(by_arm, "none")
    d_lines, d_answer = digits_section(digit_records, out, mode) if digit_records else ([], [])
    L += ["", *d_lines]
    L += ["", "## Does a norm penalty on D stabilize training here, compared with R1 and spectral norm?", ""]
    if digit_records:
        L += ["### Ring of 8 Gaussians", ""]
    L += _answer(by_arm)
    if digit_records:
        L += ["", "### Digits", "", *d_answer]
    L.append("")
    path = out / "report.md"
    atomic_write_text(path, "\n".join(L))
    return path
