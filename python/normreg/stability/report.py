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
from collections.abc import Sequence
from pathlib import Path

from ..study._io import atomic_savefig, atomic_write_text, from_jsonable_float
from ..study.report import fmt_pm
from .ring import ring_modes

__all__ = ["write_report", "arm_table", "verdict"]

METRICS = {  # name: (label, higher is better)
    "modes_covered": ("modes covered (of 8) ↑", True),
    "hq_fraction": ("high-quality samples (%) ↑", True),
    "kl_uniform": ("KL to uniform (nats) ↓", False),
    "late_modes": ("modes, mean of last 5 evals ↑", True),
}
_SCALE = {"hq_fraction": 100.0}


def _f(v) -> float:
    return from_jsonable_float(v)


def _values(recs: Sequence[dict], metric: str) -> list[float]:
    out = []
    for r in recs:
        s = r["summary"]
        if metric == "late_modes":
            c = s.get("curve") or []
            v = sum(p["modes_covered"] for p in c[-5:]) / len(c[-5:]) if c else math.nan
        elif metric in ("d_weight_norm", "d_zero_fraction"):
            v = _f(s.get("d_weights", {}).get(metric))
        elif metric in ("ms_per_step", "cpu_seconds", "seconds"):
            v = _f(s.get(metric))
        elif metric == "lam_d_final":
            v = _f(s.get("lam_d_final"))
        else:
            v = _f(s["metrics"].get(metric))
        out.append(v)
    return out


def _ms(vals: Sequence[float]) -> tuple[float, float, int]:
    v = [x for x in vals if math.isfinite(x)]
    if not v:
        return math.nan, math.nan, 0
    mu = sum(v) / len(v)
    sd = math.sqrt(sum((x - mu) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return mu, sd, len(v)


def verdict(a: Sequence[float], b: Sequence[float], higher_better: bool = True) -> tuple[str, float, float]:
    """"better" / "worse" / "within spread" / "n/a" for arm ``a`` against ``b`` (the studies' 2-se rule)."""
    ma, sa, na = _ms(a)
    mb, sb, nb = _ms(b)
    if na == 0 or nb == 0:
        return "n/a", math.nan, math.nan
    d = ma - mb
    se = math.sqrt(sa**2 / na + sb**2 / nb)
    if na < 2 or nb < 2 or abs(d) <= 2 * se:
        return "within spread", d, se
    return ("better" if (d > 0) == higher_better else "worse"), d, se


def more_divergences(k_a: int, n_a: int, k_b: int, n_b: int, alpha: float = 0.05) -> bool:
    """One-sided Fisher exact test: does arm a diverge more often than arm b (p < alpha)?"""
    total_k, total_n = k_a + k_b, n_a + n_b
    if k_a * n_b <= k_b * n_a:
        return False
    denom = math.comb(total_n, total_k)
    p = sum(math.comb(n_a, i) * math.comb(n_b, total_k - i) for i in range(k_a, min(n_a, total_k) + 1)) / denom
    return p < alpha


def _groups(records: Sequence[dict]) -> dict[str, list[dict]]:
    from .arms import arm_names

    order = {n: i for i, n in enumerate(arm_names())}
    out: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: (order.get(r["arm"], 99), r["seed"])):
        out.setdefault(r["arm"], []).append(r)
    return out


def arm_table(by_arm: dict[str, list[dict]]) -> str:
    head = ["arm", "seeds", "diverged", "non-finite", "all 8 modes", *[METRICS[m][0] for m in METRICS], "‖W_D‖", "D zeros (%)",
            "ms / step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, recs in by_arm.items():
        div = sum(bool(r["summary"]["diverged"]) for r in recs)
        full = sum(_f(r["summary"]["metrics"]["modes_covered"]) == 8 for r in recs)
        nonfinite = sum(r["summary"].get("nonfinite_at") is not None or not r["summary"]["metrics"]["finite"]
                        for r in recs)
        cells = [arm, str(len(recs)), f"{div}/{len(recs)}", f"{nonfinite}/{len(recs)}", f"{full}/{len(recs)}"]
        for m in METRICS:
            mu, sd, n = _ms(_values(recs, m))
            s = fmt_pm(mu, sd, _SCALE.get(m, 1.0))
            cells.append(s + (f" (n={n})" if 0 < n < len(recs) else ""))
        mu, sd, _ = _ms(_values(recs, "d_weight_norm"))
        cells.append(fmt_pm(mu, sd))
        mu, sd, _ = _ms(_values(recs, "d_zero_fraction"))
        cells.append(fmt_pm(mu, sd, 100.0, digits=1))
        mu, sd, _ = _ms(_values(recs, "ms_per_step"))
        cells.append(f"{mu:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _seed_table(by_arm: dict[str, list[dict]]) -> str:
    seeds = sorted({r["seed"] for recs in by_arm.values() for r in recs})
    head = ["arm", *[f"seed {s}" for s in seeds]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, recs in by_arm.items():
        by = {r["seed"]: r for r in recs}
        cells = [arm]
        for s in seeds:
            r = by.get(s)
            if r is None:
                cells.append("–")
                continue
            m = r["summary"]["metrics"]
            tag = " **div**" if r["summary"]["diverged"] else ""
            cells.append(f"{int(_f(m['modes_covered']))} / {100 * _f(m['hq_fraction']):.0f}%{tag}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _adaptive_lines(by_arm: dict[str, list[dict]]) -> list[str]:
    out = []
    for arm, recs in by_arm.items():
        lams = [_f(r["summary"].get("lam_d_final")) for r in recs]
        if not any(math.isfinite(v) for v in lams):
            continue
        rs = [_f(r["summary"].get("losses", {}).get("r_sign")) for r in recs]
        out.append(f"{arm}: D's penalty strength at the end " + ", ".join(f"{v:.3g}" for v in lams)
                   + " (seeds in order); E[sign(D(x_real))] of the last batch "
                   + ", ".join(f"{v:.2f}" for v in rs) + ".")
    return [*out, ""] if out else []


# ---- figures --------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _scatter_grid(by_arm: dict[str, list[dict]], path: Path, seed: int = 0) -> bool:
    plt = _plt()
    rows = [(arm, next((r for r in recs if r["seed"] == seed), None)) for arm, recs in by_arm.items()]
    rows = [(a, r) for a, r in rows if r is not None and r["summary"].get("snapshots")]
    if not rows:
        return False
    steps = sorted({int(k) for _, r in rows for k in r["summary"]["snapshots"]})
    modes = ring_modes().numpy()
    fig, axes = plt.subplots(len(rows), len(steps), figsize=(1.6 * len(steps) + 1.2, 1.6 * len(rows)), squeeze=False)
    for i, (arm, r) in enumerate(rows):
        snaps = r["summary"]["snapshots"]
        for j, s in enumerate(steps):
            ax = axes[i][j]
            ax.scatter(modes[:, 0], modes[:, 1], s=14, marker="x", c="tab:red", linewidths=0.8, zorder=3)
            pts = snaps.get(str(s))
            if pts:
                xy = [(p[0], p[1]) for p in pts if all(map(math.isfinite, p))]
                if xy:
                    xs, ys = zip(*xy)
                    ax.scatter(xs, ys, s=1.5, c="tab:blue", alpha=0.5, linewidths=0)
            ax.set_xlim(-3, 3)
            ax.set_ylim(-3, 3)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_aspect("equal")
            if i == 0:
                ax.set_title(f"step {s}", fontsize=8)
            if j == 0:
                ax.set_ylabel(arm, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"G's samples over training (seed {seed}; red x: the 8 modes)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / len(rows)))
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return True


def _summary_figure(by_arm: dict[str, list[dict]], path: Path) -> None:
    plt = _plt()
    arms = list(by_arm)
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.35 * len(arms) + 1.6), sharey=True)
    y = range(len(arms))
    div = [sum(bool(r["summary"]["diverged"]) for r in by_arm[a]) for a in arms]
    n = [len(by_arm[a]) for a in arms]
    axes[0].barh(list(y), div, color="tab:red")
    for yi, d, k in zip(y, div, n):
        axes[0].text(d + 0.05, yi, f"{d}/{k}", va="center", fontsize=7)
    axes[0].set_xlim(0, max(n) + 0.8)
    axes[0].set_xlabel("diverged runs")
    for ax, m, scale in ((axes[1], "modes_covered", 1.0), (axes[2], "hq_fraction", 100.0)):
        for yi, a in zip(y, arms):
            vals = [v * scale for v in _values(by_arm[a], m)]
            ax.scatter(vals, [yi] * len(vals), s=14, c="tab:blue", alpha=0.7)
            mu, _, k = _ms(vals)
            if k:
                ax.plot([mu, mu], [yi - 0.3, yi + 0.3], c="k", lw=1.2)
        ax.set_xlabel(METRICS[m][0] + " (dots: seeds, bar: mean)")
    axes[1].set_xlim(-0.3, 8.3)
    axes[2].set_xlim(-3, 103)
    axes[0].set_yticks(list(y))
    axes[0].set_yticklabels(arms, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("Final state of every run", fontsize=10)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def _curves_figure(by_arm: dict[str, list[dict]], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    cmap = plt.get_cmap("tab20")
    for k, (arm, recs) in enumerate(by_arm.items()):
        curves = [r["summary"].get("curve") or [] for r in recs]
        if not curves or not curves[0]:
            continue
        steps = [p["step"] for p in curves[0]]
        for ax, m, scale in ((axes[0], "modes_covered", 1.0), (axes[1], "hq_fraction", 100.0)):
            mean = []
            for i in range(len(steps)):
                vals = [scale * _f(c[i][m]) for c in curves if len(c) > i]
                mean.append(sum(vals) / len(vals))
            ax.plot(steps, mean, label=arm, color=cmap(k % 20), lw=1.3, ls="-" if k < 10 else "--")
    axes[0].set_ylabel("modes covered (mean over seeds)")
    axes[1].set_ylabel("high-quality samples, % (mean over seeds)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


# ---- the answer -----------------------------------------------------------------------------
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
            label = "modes, last 5 evals" if m == "late_modes" else METRICS[m][0].split(" (")[0].split(" ↑")[0].split(" ↓")[0]
            parts.append(f"{label} {v}"
                         + (f" ({d * sc:+.2f} ± {se * sc:.2f})" if math.isfinite(d) else ""))
        div = sum(bool(r["summary"]["diverged"]) for r in recs)
        div_ref = sum(bool(r["summary"]["diverged"]) for r in by_arm[ref])
        out.append(f"- **{arm}** vs {ref}: " + "; ".join(parts) + f"; diverged {div}/{len(recs)} vs {div_ref}/{len(by_arm[ref])}.")
    return out


def _answer(by_arm: dict[str, list[dict]]) -> list[str]:
    from .arms import ARMS

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
            bits.append(f"vs {ref}: modes {v_modes}, high-quality {v_hq}, modes over the last 5 evals {v_late}, "
                        f"diverged {div} vs {dref}")
        lines.append(f"- {arm}: " + "; ".join(bits) + ".")
    def n_div(a: str) -> int:
        return sum(bool(r["summary"]["diverged"]) for r in by_arm[a])

    def verdicts(a: str, ref: str) -> list[str]:
        return [verdict(_values(by_arm[a], m), _values(by_arm[ref], m), METRICS[m][1])[0]
                for m in ("modes_covered", "hq_fraction", "late_modes")]

    def any_better(a: str, ref: str) -> str:
        vs = verdicts(a, ref)
        if "better" in vs and "worse" not in vs:
            return "better"
        if "worse" in vs and "better" not in vs:
            return "worse"
        return "mixed" if "better" in vs else "within spread"

    has_none = "none" in by_arm
    better_than_none = [a for a in norm_arms if has_none and any_better(a, "none") == "better"
                        and not more_divergences(n_div(a), len(by_arm[a]), n_div("none"), len(by_arm["none"]))]
    def diverges_more(a: str, ref: str) -> bool:
        return more_divergences(n_div(a), len(by_arm[a]), n_div(ref), len(by_arm[ref]))

    worse_than_none = [a for a in norm_arms if has_none and ("worse" in verdicts(a, "none") or diverges_more(a, "none"))]

    head = []
    if better_than_none:
        head.append("Norm-penalty arms better than no regularization (modes covered, high-quality fraction or "
                    "modes over the last 5 evals beyond the seeds' spread, none worse, no more divergences): "
                    + ", ".join(better_than_none) + ".")
    else:
        head.append("**No** norm-penalty arm is better than no regularization beyond the seeds' spread (modes "
                    "covered, high-quality fraction, modes over the last 5 evals) without more divergences.")
    if worse_than_none:
        head.append("Norm-penalty arms worse than no regularization (a metric worse beyond the spread, or more "
                    "divergences by a one-sided Fisher exact test, p < 0.05): " + ", ".join(worse_than_none) + ".")
    for ref in ("R1 γ=1", "spectral norm"):
        if ref not in by_arm:
            continue
        groups: dict[str, list[str]] = {}
        for a in norm_arms:
            groups.setdefault(any_better(a, ref), []).append(a)
        head.append(f"Against {ref} (modes covered, high-quality fraction, modes over the last 5 evals): " + "; ".join(
            f"{k}: {', '.join(v)}" for k, v in groups.items()) + ".")
    return [x for h in head for x in (h, "")] + ["Per arm:", ""] + lines


def write_report(out_dir: str | os.PathLike, *, mode: str = "full") -> Path:
    from .arms import BASE, SMOKE, arm_names

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
        L = ["# Study: does norm regularization of D stabilize GAN training?", "",
             f"Generated by `normreg study stability{' --smoke' if mode == 'smoke' else ''}`; nothing below was "
             "edited by hand. **Not in this run:** the ring of 8 Gaussians.", "",
             f"Wall time {manifest.get('elapsed_s', math.nan) / 60:.1f} min.", "",
             *d_lines, "", "## Does a norm penalty on D stabilize training here, compared with R1 and spectral norm?",
             "", *d_answer]
        path = out / "report.md"
        atomic_write_text(path, "\n".join(L))
        return path
    base = {**BASE, **(SMOKE if mode == "smoke" else {})}
    # results.csv: one row per run
    buf = io.StringIO()
    w = csv.writer(buf)
    cols = ["arm", "group", "seed", "diverged", "modes_covered", "hq_fraction", "kl_uniform", "late_modes",
            "d_weight_norm", "d_zero_fraction", "lam_d_final", "steps", "ms_per_step", "cpu_seconds"]
    w.writerow(cols)
    for arm, recs in by_arm.items():
        for r in recs:
            row = [arm, r["group"], r["seed"], int(bool(r["summary"]["diverged"]))]
            for m in cols[4:]:
                v = _values([r], m)[0] if m != "steps" else r["summary"]["steps"]
                row.append("" if isinstance(v, float) and math.isnan(v) else (f"{v:.6g}" if isinstance(v, float) else v))
            w.writerow(row)
    atomic_write_text(out / "results.csv", buf.getvalue())
    figs = []
    if _scatter_grid(by_arm, out / "samples_grid.png"):
        figs.append(("samples_grid.png", "G's samples at steps " + ", ".join(map(str, base["snapshots"]))
                     + " of seed 0, one row per arm."))
    _summary_figure(by_arm, out / "final_state.png")
    figs.append(("final_state.png", "Divergence counts, and each seed's final modes covered and high-quality fraction."))
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
    from .arms import SEEDS

    short = {a: len(v) for a, v in by_arm.items() if len(v) < SEEDS}
    if mode == "full" and short:
        L += [f"**Incomplete:** the study plans {SEEDS} seeds per arm; this run was stopped before all of them "
              "finished (seed-major order: every arm's seed k runs before any seed k + 1). Finished seeds per arm: "
              + ", ".join(f"{a} {n}" for a, n in short.items()) + ". Continue it with `--resume`.", ""]
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
    L += ["## Ring: against no regularization" if digit_records else "## Against no regularization", "",
          "The 2-se rule per metric (difference ± its standard error).", ""]
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


# ---- the digits part ------------------------------------------------------------------------
DIGITS_METRICS = {  # name: (label, higher is better, scale)
    "kid": ("KID ×10³ ↓", False),
    "class_entropy_normalized": ("class entropy / log 10 ↑", True),
    "classes_present": ("classes present (of 10) ↑", True),
}


def _dvalues(recs: Sequence[dict], metric: str) -> list[float]:
    out = []
    for r in recs:
        s = r["summary"]
        if metric in ("ms_per_step", "cpu_seconds", "lam_d_final"):
            out.append(_f(s.get(metric)))
        else:
            out.append(_f(s["metrics"].get(metric)))
    return out


def _dgroups(records: Sequence[dict]) -> dict[str, list[dict]]:
    from .arms import DIGITS_ARMS

    order = {a.name: i for i, a in enumerate(DIGITS_ARMS)}
    out: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: (order.get(r["arm"], 99), r["seed"])):
        out.setdefault(r["arm"], []).append(r)
    return out


def _n_div(recs: Sequence[dict]) -> int:
    return sum(bool(r["summary"]["diverged"]) for r in recs)


def digits_table(by_arm: dict[str, list[dict]]) -> str:
    head = ["arm", "seeds", "diverged", "non-finite", *[DIGITS_METRICS[m][0] for m in DIGITS_METRICS],
            "KID floor ×10³", "class confidence", "ms / step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, recs in by_arm.items():
        nonfinite = sum(r["summary"].get("nonfinite_at") is not None for r in recs)
        cells = [arm, str(len(recs)), f"{_n_div(recs)}/{len(recs)}", f"{nonfinite}/{len(recs)}"]
        for m in (*DIGITS_METRICS, "kid_floor", "class_confidence"):
            mu, sd, n = _ms(_dvalues(recs, m))
            digits = 0 if m in ("kid", "kid_floor") else (1 if m == "classes_present" else 2)
            cells.append(fmt_pm(mu, sd, digits=digits, n=n) + (f" (n={n})" if 0 < n < len(recs) else ""))
        mu, _, _ = _ms(_dvalues(recs, "ms_per_step"))
        cells.append(f"{mu:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _digits_seed_table(by_arm: dict[str, list[dict]]) -> str:
    seeds = sorted({r["seed"] for recs in by_arm.values() for r in recs})
    lines = ["| arm | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|" + "---|" * (len(seeds) + 1)]
    for arm, recs in by_arm.items():
        by = {r["seed"]: r for r in recs}
        cells = [arm]
        for s in seeds:
            r = by.get(s)
            if r is None:
                cells.append("–")
                continue
            m = r["summary"]["metrics"]
            tag = " **div**" if r["summary"]["diverged"] else ""
            kid, cp = _f(m.get("kid")), _f(m.get("classes_present"))
            cells.append((f"{kid:.0f} / {cp:.0f}" if math.isfinite(kid) else "non-finite") + tag)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _digits_grid(by_arm: dict[str, list[dict]], path: Path, seed: int = 0) -> bool:
    plt = _plt()
    import numpy as np

    rows = [(a, next((r for r in recs if r["seed"] == seed), None)) for a, recs in by_arm.items()]
    rows = [(a, r) for a, r in rows if r is not None and r["summary"].get("grid")]
    if not rows:
        return False
    ncol = min(4, len(rows))
    nrow = math.ceil(len(rows) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.6 * ncol, 2.9 * nrow), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (arm, r) in enumerate(rows):
        g = np.asarray(r["summary"]["grid"], dtype=float)  # (n, 8, 8) in [-1, 1]
        n, h, w = g.shape
        side = int(math.ceil(math.sqrt(n)))
        canvas = np.full((side * (h + 1) - 1, side * (w + 1) - 1), 0.2)  # light grey gaps
        for i in range(n):
            y, x = divmod(i, side)
            canvas[y * (h + 1): y * (h + 1) + h, x * (w + 1): x * (w + 1) + w] = (g[i] + 1) / 2
        ax = axes.flat[k]
        ax.imshow(1 - canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        m = r["summary"]["metrics"]
        kid, cp = _f(m.get("kid")), _f(m.get("classes_present"))
        ax.set_title(f"{arm}\nKID {kid:.0f}, {cp:.0f} classes" if math.isfinite(kid) else f"{arm}\nnon-finite",
                     fontsize=8)
    fig.suptitle(f"Digits: {len(rows[0][1]['summary']['grid'])} samples of the final EMA generator per arm "
                 f"(seed {seed}, the same latents for every arm)", fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return True


def _digits_final(by_arm: dict[str, list[dict]], path: Path, floor: float) -> None:
    plt = _plt()
    arms = list(by_arm)
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.35 * len(arms) + 1.6), sharey=True)
    y = list(range(len(arms)))
    div = [_n_div(by_arm[a]) for a in arms]
    n = [len(by_arm[a]) for a in arms]
    axes[0].barh(y, div, color="tab:red")
    for yi, d, k in zip(y, div, n):
        axes[0].text(d + 0.05, yi, f"{d}/{k}", va="center", fontsize=7)
    axes[0].set_xlim(0, max(n) + 0.8)
    axes[0].set_xlabel("diverged runs (non-finite, or < 5 classes)")
    seeds = sorted({r["seed"] for recs in by_arm.values() for r in recs})
    colors = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(seeds)}
    for ax, m in ((axes[1], "kid"), (axes[2], "class_entropy_normalized")):
        for yi, a in zip(y, arms):
            recs = [r for r in by_arm[a] if math.isfinite(_dvalues([r], m)[0])]
            ax.scatter([_dvalues([r], m)[0] for r in recs], [yi] * len(recs), s=16, alpha=0.85,
                       c=[colors[r["seed"]] for r in recs])
            mu, _, k = _ms(_dvalues(recs, m))
            if k:
                ax.plot([mu, mu], [yi - 0.3, yi + 0.3], c="k", lw=1.2)
        ax.set_xlabel(DIGITS_METRICS[m][0] + " (dots: seeds, bar: mean)")
    for s in seeds:  # each seed's KID floor (its split's real-vs-real KID), in the seed's colour
        f = next((_f(r["summary"]["metrics"].get("kid_floor")) for recs in by_arm.values() for r in recs
                  if r["seed"] == s), math.nan)
        if math.isfinite(f) and f > 0:
            axes[1].axvline(f, color=colors[s], ls="--", lw=1)
            axes[1].text(f, 1.01, f"floor s{s}", color=colors[s], fontsize=7, ha="center",
                         transform=axes[1].get_xaxis_transform())
    from matplotlib.lines import Line2D

    axes[2].legend(handles=[Line2D([], [], ls="", marker="o", color=colors[s], label=f"seed {s}") for s in seeds],
                   fontsize=7, loc="lower left")
    axes[1].set_xscale("log")
    from matplotlib.ticker import LogLocator, NullFormatter

    axes[1].xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes[1].xaxis.set_minor_formatter(NullFormatter())
    axes[2].set_xlim(-0.03, 1.03)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(arms, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("Digits: final state of every run (KID of the EMA generator on the test split)", fontsize=10)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def _digits_curves(by_arm: dict[str, list[dict]], path: Path) -> bool:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    cmap = plt.get_cmap("tab20")
    drawn = False
    for k, (arm, recs) in enumerate(by_arm.items()):
        curves = [r["summary"].get("curve") or [] for r in recs]
        curves = [c for c in curves if c]
        if not curves:
            continue
        steps = [p["step"] for p in curves[0]]
        mean = []
        for i in range(len(steps)):
            vals = [_f(c[i]["kid"]) for c in curves if len(c) > i]
            mean.append(sum(vals) / len(vals))
        ax.plot(steps, mean, label=arm, color=cmap(k % 20), lw=1.3, ls="-" if k < 10 else "--", marker="o", ms=3)
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("validation KID ×10³ (mean over seeds, log scale)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return True


def _digits_compare(by_arm: dict[str, list[dict]], ref: str) -> list[str]:
    out = []
    if ref not in by_arm:
        return out
    for arm, recs in by_arm.items():
        if arm == ref:
            continue
        parts = []
        for m, (label, hb) in DIGITS_METRICS.items():
            v, d, se = verdict(_dvalues(recs, m), _dvalues(by_arm[ref], m), hb)
            parts.append(f"{label.split(' ↑')[0].split(' ↓')[0]} {v}" + (f" ({d:+.3g} ± {se:.2g})" if math.isfinite(d) else ""))
        out.append(f"- **{arm}** vs {ref}: " + "; ".join(parts)
                   + f"; diverged {_n_div(recs)}/{len(recs)} vs {_n_div(by_arm[ref])}/{len(by_arm[ref])}.")
    return out


def _digits_answer(by_arm: dict[str, list[dict]]) -> list[str]:
    from .arms import DIGITS_ARMS

    norm_arms = [a.name for a in DIGITS_ARMS if a.group in ("norm", "adaptive") and a.name in by_arm]

    def verdicts(a: str, ref: str) -> list[str]:
        return [verdict(_dvalues(by_arm[a], m), _dvalues(by_arm[ref], m), hb)[0] for m, (_, hb) in DIGITS_METRICS.items()]

    def overall(a: str, ref: str) -> str:
        vs = verdicts(a, ref)
        if "better" in vs and "worse" not in vs:
            return "better"
        if "worse" in vs and "better" not in vs:
            return "worse"
        return "mixed" if "better" in vs else "within spread"

    def diverges_more(a: str, ref: str) -> bool:
        return more_divergences(_n_div(by_arm[a]), len(by_arm[a]), _n_div(by_arm[ref]), len(by_arm[ref]))

    head = []
    if "none" in by_arm:
        better = [a for a in norm_arms if overall(a, "none") == "better" and not diverges_more(a, "none")]
        worse = [a for a in norm_arms if "worse" in verdicts(a, "none") or diverges_more(a, "none")]
        if better:
            head.append("Digits: norm-penalty arms better than no regularization (KID, class entropy or classes "
                        "present beyond the seeds' spread, none worse, no more divergences): " + ", ".join(better) + ".")
        else:
            head.append("Digits: **no** norm-penalty arm is better than no regularization beyond the seeds' spread "
                        "(KID, class entropy, classes present) without more divergences.")
        if worse:
            head.append("Digits: norm-penalty arms worse than no regularization (a metric worse beyond the spread, or "
                        "more divergences by the one-sided Fisher test, p < 0.05): " + ", ".join(worse) + ".")
        others = [a for a in ("R1 γ=0.1", "R1 γ=1", "R1 γ=10", "spectral norm", "R1 γ=1 + L2 λ=1") if a in by_arm]
        if others:
            head.append("Digits, the other regularizers against none: " + "; ".join(
                f"{a}: {overall(a, 'none')}" + (" (more divergences)" if diverges_more(a, "none") else "")
                for a in others) + ".")
    for ref in ("R1 γ=1", "spectral norm"):
        if ref not in by_arm:
            continue
        groups: dict[str, list[str]] = {}
        for a in norm_arms:
            groups.setdefault(overall(a, ref), []).append(a)
        head.append(f"Digits, against {ref} (KID, class entropy, classes present): " + "; ".join(
            f"{k}: {', '.join(v)}" for k, v in groups.items()) + ".")
    if any(math.isfinite(v) for recs in by_arm.values() for v in _dvalues(recs, "lam_d_final")):
        for arm, recs in by_arm.items():
            lams = _dvalues(recs, "lam_d_final")
            if any(math.isfinite(v) for v in lams):
                rs = [_f(r["summary"].get("losses", {}).get("d_real_sign")) for r in recs]
                head.append(f"Digits, {arm}: D's penalty strength at the last step " + ", ".join(f"{v:.3g}" for v in lams)
                            + " (seeds in order); E[sign(D(x_real))] of the last batch " + ", ".join(f"{v:.2f}" for v in rs) + ".")
    return [x for h in head for x in (h, "")]


def digits_section(records: Sequence[dict], out: Path, mode: str) -> tuple[list[str], list[str]]:
    """The report's digits section (markdown lines) and the answer's digits lines; writes its figures."""
    from .arms import DIGITS_ARMS, DIGITS_BASE, DIGITS_SEEDS, DIGITS_SMOKE
    from .digits import COLLAPSE_CLASSES

    by_arm = _dgroups(records)
    buf = io.StringIO()
    w = csv.writer(buf)
    cols = ["kid", "kid_floor", "class_entropy", "class_entropy_normalized", "classes_present", "class_confidence",
            "lam_d_final", "ms_per_step", "cpu_seconds"]
    w.writerow(["arm", "group", "seed", "diverged", "nonfinite", *cols, "steps"])
    for arm, recs in by_arm.items():
        for r in recs:
            vals = [_dvalues([r], m)[0] for m in cols]
            w.writerow([arm, r["group"], r["seed"], int(bool(r["summary"]["diverged"])),
                        int(r["summary"].get("nonfinite_at") is not None),
                        *("" if math.isnan(v) else f"{v:.6g}" for v in vals), r["summary"]["steps"]])
    atomic_write_text(out / "digits_results.csv", buf.getvalue())
    base = {**DIGITS_BASE, **(DIGITS_SMOKE if mode == "smoke" else {})}
    cpu = sum(_f(r["summary"].get("cpu_seconds", math.nan)) for r in records)
    floors = [v for recs in by_arm.values() for v in _dvalues(recs, "kid_floor") if math.isfinite(v)]
    floor = sum(floors) / len(floors) if floors else math.nan
    by_seed = {r["seed"]: _f(r["summary"]["metrics"].get("kid_floor")) for r in records}
    floor_text = ", ".join(f"{v:.0f}" for _, v in sorted(by_seed.items()) if math.isfinite(v))
    L = [
        "## Digits: the same arms on unconditional 8x8 digits",
        "",
        "(One row per run: digits_results.csv.)",
        "",
        "**Setup.** `normreg train --task unconditional --dataset digits` (scikit-learn's 8x8 digits, "
        + (f"{base['max_images']} of the 1797" if base.get("max_images") else "all 1797")
        + " images, split 75/10/15 by seed): DCGAN G and D at width "
        f"{base['width']:g}, z ∈ R^64, batch {base['batch_size']}, {base['steps']} steps, Adam (lr 2e-4, betas "
        "(0.5, 0.999)), non-saturating loss, one D step then one G step, EMA of G "
        f"(decay {base['ema_decay']:g}) for every metric. The arms are the ring's, with the trainer's options: "
        "R1 is the trainer's lazy R1 (every 16 steps, weighted by 16); the norm penalties are on D only "
        "(`--penalty-on d --penalty-mode prox`: ProxAdam's proximal step, biases and BatchNorm unpenalized); "
        "spectral norm is `--d-spectral-norm`; adaptive is `--penalty-schedule adaptive --adaptive-target 0.6` "
        "(AdaptiveLambda, gain 0.5, every 4 steps, on SquaredL2 λ = 1). The strengths are the ring's (see "
        "docs/stability.md). Metrics of the final EMA generator on as many fixed latents as the test split has "
        "images: **KID ×10³** against the test split in the trainer's classifier features (as `normreg train` "
        "reports it; its floor, the KID of a real training sample of that size, is a property of the seed's split: "
        f"{floor_text} for seeds {', '.join(str(k) for k in sorted(by_seed))}; a generator can score below it, since at a "
        "few hundred images KID is noisy), and **class "
        "coverage** (`normreg.stability.coverage.image_run_coverage`): the entropy of the classifier's predicted "
        "classes (divided by log 10: 1 when all ten digits are equally common) and the classes predicted for "
        f"≥ 1% of the samples. A run **diverged** if a loss or weight became non-finite or fewer than "
        f"{COLLAPSE_CLASSES} classes are present at the end.",
        "",
        f"**Runs.** {len(records)} runs ({len(by_arm)} arms × up to {max(len(v) for v in by_arm.values())} seeds); "
        f"CPU time of the digits runs {cpu / 60:.1f} min.",
        "",
    ]
    short = {a: len(v) for a, v in by_arm.items() if len(v) < DIGITS_SEEDS}
    missing = [a.name for a in DIGITS_ARMS if a.name not in by_arm] if mode == "full" else []
    if missing:
        L += [f"**Not run (digits):** {', '.join(missing)}.", ""]
    if mode == "full" and short:
        L += [f"**Incomplete (digits):** {DIGITS_SEEDS} seeds per arm are planned; finished: "
              + ", ".join(f"{a} {n}" for a, n in short.items()) + ". Continue with `--resume`.", ""]
    L += ["Mean ± std over seeds.", "", digits_table(by_arm), "",
          "Each seed: KID ×10³ / classes present (**div**: diverged).", "", _digits_seed_table(by_arm), ""]
    figs = []
    if _digits_grid(by_arm, out / "digits_samples.png"):
        figs.append(("digits_samples.png", "Samples of each arm's final EMA generator (seed 0), with its KID and "
                     "classes present."))
    _digits_final(by_arm, out / "digits_final.png", floor)
    figs.append(("digits_final.png", "Divergence counts, and each seed's final KID (log scale; dashed: each seed's "
                 "KID floor, what real images of that number score on that seed's split) and class entropy; colours: "
                 "seeds (a seed fixes the split and the classifier, so compare dots of one colour)."))
    if _digits_curves(by_arm, out / "digits_curves.png"):
        figs.append(("digits_curves.png", f"Validation KID during training (every {base['eval_every']} steps), "
                     "mean over seeds."))
    for name, cap in figs:
        L += [f"![{name}]({name})", "", cap, ""]
    L += ["### Digits against no regularization", "", "The 2-se rule per metric (difference ± its standard error).", ""]
    L += _digits_compare(by_arm, "none")
    L.append("")
    return L, _digits_answer(by_arm)
