"""The digits part of ``normreg study stability``'s report: the image trainer's arms on
unconditional 8x8 digits (tables, sample grid, final metrics, curves, the answer).

This module holds the tables and the text (the section, the comparisons, the answer); the
figures are drawn by :mod:`.report_digits_figures`, and the numbers both use (the metrics, a
run's value of one, the runs by arm) are in :mod:`.report_digits_numbers`."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from normreg.stability.arms import DIGITS_ARMS, DIGITS_BASE, DIGITS_SEEDS, DIGITS_SMOKE
from normreg.stability.digits import COLLAPSE_CLASSES

from ..study._io import atomic_write_text
from ..study.report import fmt_pm
from .report_common import _f, _ms, more_divergences, verdict
from .report_digits_figures import _digits_curves, _digits_final, _digits_grid
from .report_digits_numbers import DIGITS_METRICS, _dgroups, _dvalues, _n_div


# ---- the digits part ------------------------------------------------------------------------
def digits_table(by_arm: dict[str, list[dict]]) -> str:
    head = [
        "arm",
        "seeds",
        "diverged",
        "non-finite",
        *[DIGITS_METRICS[m][0] for m in DIGITS_METRICS],
        "KID floor ×10³",
        "class confidence",
        "ms / step",
    ]
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
            parts.append(
                f"{label.split(' ↑')[0].split(' ↓')[0]} {v}"
                + (f" ({d:+.3g} ± {se:.2g})" if math.isfinite(d) else "")
            )
        out.append(
            f"- **{arm}** vs {ref}: "
            + "; ".join(parts)
            + f"; diverged {_n_div(recs)}/{len(recs)} vs {_n_div(by_arm[ref])}/{len(by_arm[ref])}."
        )
    return out


def _digits_answer(by_arm: dict[str, list[dict]]) -> list[str]:
    norm_arms = [a.name for a in DIGITS_ARMS if a.group in ("norm", "adaptive") and a.name in by_arm]

    def verdicts(a: str, ref: str) -> list[str]:
        return [
            verdict(_dvalues(by_arm[a], m), _dvalues(by_arm[ref], m), hb)[0]
            for m, (_, hb) in DIGITS_METRICS.items()
        ]

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
            head.append(
                "Digits: norm-penalty arms better than no regularization (KID, class entropy or classes "
                "present beyond the seeds' spread, none worse, no more divergences): "
                + ", ".join(better)
                + "."
            )
        else:
            head.append(
                "Digits: **no** norm-penalty arm is better than no regularization beyond the seeds' spread "
                "(KID, class entropy, classes present) without more divergences."
            )
        if worse:
            head.append(
                "Digits: norm-penalty arms worse than no regularization (a metric worse beyond the spread, or "
                "more divergences by the one-sided Fisher test, p < 0.05): " + ", ".join(worse) + "."
            )
        others = [
            a for a in ("R1 γ=0.1", "R1 γ=1", "R1 γ=10", "spectral norm", "R1 γ=1 + L2 λ=1") if a in by_arm
        ]
        if others:
            head.append(
                "Digits, the other regularizers against none: "
                + "; ".join(
                    f"{a}: {overall(a, 'none')}" + (" (more divergences)" if diverges_more(a, "none") else "")
                    for a in others
                )
                + "."
            )
    for ref in ("R1 γ=1", "spectral norm"):
        if ref not in by_arm:
            continue
        groups: dict[str, list[str]] = {}
        for a in norm_arms:
            groups.setdefault(overall(a, ref), []).append(a)
        head.append(
            f"Digits, against {ref} (KID, class entropy, classes present): "
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in groups.items())
            + "."
        )
    if any(math.isfinite(v) for recs in by_arm.values() for v in _dvalues(recs, "lam_d_final")):
        for arm, recs in by_arm.items():
            lams = _dvalues(recs, "lam_d_final")
            if any(math.isfinite(v) for v in lams):
                rs = [_f(r["summary"].get("losses", {}).get("d_real_sign")) for r in recs]
                head.append(
                    f"Digits, {arm}: D's penalty strength at the last step "
                    + ", ".join(f"{v:.3g}" for v in lams)
                    + " (seeds in order); E[sign(D(x_real))] of the last batch "
                    + ", ".join(f"{v:.2f}" for v in rs)
                    + "."
                )
    return [x for h in head for x in (h, "")]


def digits_section(records: Sequence[dict], out: Path, mode: str) -> tuple[list[str], list[str]]:
    """The report's digits section (markdown lines) and the answer's digits lines; writes its figures."""

    by_arm = _dgroups(records)
    buf = io.StringIO()
    w = csv.writer(buf)
    cols = [
        "kid",
        "kid_floor",
        "class_entropy",
        "class_entropy_normalized",
        "classes_present",
        "class_confidence",
        "lam_d_final",
        "ms_per_step",
        "cpu_seconds",
    ]
    w.writerow(["arm", "group", "seed", "diverged", "nonfinite", *cols, "steps"])
    for arm, recs in by_arm.items():
        for r in recs:
            vals = [_dvalues([r], m)[0] for m in cols]
            w.writerow(
                [
                    arm,
                    r["group"],
                    r["seed"],
                    int(bool(r["summary"]["diverged"])),
                    int(r["summary"].get("nonfinite_at") is not None),
                    *("" if math.isnan(v) else f"{v:.6g}" for v in vals),
                    r["summary"]["steps"],
                ]
            )
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
        L += [
            f"**Incomplete (digits):** {DIGITS_SEEDS} seeds per arm are planned; finished: "
            + ", ".join(f"{a} {n}" for a, n in short.items())
            + ". Continue with `--resume`.",
            "",
        ]
    L += [
        "Mean ± std over seeds.",
        "",
        digits_table(by_arm),
        "",
        "Each seed: KID ×10³ / classes present (**div**: diverged).",
        "",
        _digits_seed_table(by_arm),
        "",
    ]
    figs = []
    if _digits_grid(by_arm, out / "digits_samples.png"):
        figs.append(
            (
                "digits_samples.png",
                "Samples of each arm's final EMA generator (seed 0), with its KID and classes present.",
            )
        )
    _digits_final(by_arm, out / "digits_final.png", floor)
    figs.append(
        (
            "digits_final.png",
            "Divergence counts, and each seed's final KID (log scale; dashed: each seed's "
            "KID floor, what real images of that number score on that seed's split) and class entropy; colours: "
            "seeds (a seed fixes the split and the classifier, so compare dots of one colour).",
        )
    )
    if _digits_curves(by_arm, out / "digits_curves.png"):
        figs.append(
            (
                "digits_curves.png",
                f"Validation KID during training (every {base['eval_every']} steps), mean over seeds.",
            )
        )
    for name, cap in figs:
        L += [f"![{name}]({name})", "", cap, ""]
    L += [
        "### Digits against no regularization",
        "",
        "The 2-se rule per metric (difference ± its standard error).",
        "",
    ]
    L += _digits_compare(by_arm, "none")
    L.append("")
    return L, _digits_answer(by_arm)
