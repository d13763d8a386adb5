"""The weight-penalty study's part of the report (normreg.study.report): its tables and
sentences, and its figures (quality against exact sparsity, time per step by penalty and way)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ._io import atomic_savefig, from_jsonable_float
from .report_parts import (
    _LABEL,
    _SCALE,
    _by_name,
    _plt,
    _stats,
    _suptitle,
    _table,
    compare,
)

__all__ = ["weight_penalty_report"]


def weight_penalty_report(study, records, summ, out: Path, lines: list[str]) -> None:
    cfg0 = records[0]["config"]
    metrics = ["kid", "classifier_score", "psnr", "zero_fraction", "near_zero_fraction", "step_ms"]
    lines += [
        "## Setup",
        "",
        f"- Task: the pix2pix completion of the 8x8 digits (L1 λ = {cfg0['recon_weight']:g} + cGAN), "
        f"{cfg0['steps']} steps, batch {cfg0['batch_size']}, penalty on G's weights only (biases and "
        "normalization layers are left unpenalized, `normreg.param_groups`). EMA of G is off, so the "
        "evaluated network is the one whose zeros are counted.",
        "- Penalties (see docs/conventions.md): `L1(λ)` = λ Σ|w|, `SquaredL2(λ)` = (λ/2) Σw², "
        "`ElasticNet(λ/2, λ/2)`, `L0(λ)` = λ·#{w ≠ 0}.",
        "- Ways: **loss**: `penalty.value(params)` added to G's loss, differentiated by autograd; "
        "**add_grad**: `penalty.add_grad_(params)` adds the gradient in one fused pass after backward; "
        "**prox**: `normreg.optim.ProxAdam` takes the Adam step and then the proximal step of "
        "lr·λ·R (soft threshold for L1, shrink for L2, hard threshold at √(2·lr·λ) for L0). "
        "L0 has no gradient, so it exists only as a proximal step.",
        "- **exact zeros**: the fraction of G's penalized weights that are exactly 0.0 at the end; "
        "**|w| < 1e-3**: those that are merely small. **ms / step**: median wall time of "
        f"{study.time_steps} extra training steps timed after training (machine shared with other "
        "jobs: compare within this table only).",
        "",
        "## Results",
        "",
        _table(summ, metrics),
        "",
        "![quality against sparsity](weight_penalty_sparsity.png)",
        "",
        "![time per step](weight_penalty_time.png)",
        "",
    ]
    _sparsity_figure(summ, out / "weight_penalty_sparsity.png")
    _time_figure(summ, records, out / "weight_penalty_time.png")
    said = []
    base = _by_name(summ).get("none")
    for r in summ:
        if r is base:
            continue
        zf = _stats(r, "zero_fraction")[0]
        if math.isfinite(zf) and zf > 0.01:
            parts = [f"{r['labels']['arm']}: {100 * zf:.1f}% exact zeros"]
            for m in ("kid", "classifier_score"):
                s = compare(r, base, m) if base else ("n/a", 0, 0)
                if s[0] != "n/a":
                    parts.append(
                        f"{_LABEL[m]} {s[0]} vs no penalty"
                        if s[0] != "within spread"
                        else f"{_LABEL[m]} within the seeds' spread of no penalty"
                    )
            said.append("; ".join(parts) + ".")
    dense = [
        r["labels"]["arm"]
        for r in summ
        if r is not base
        and math.isfinite(_stats(r, "zero_fraction")[0])
        and _stats(r, "zero_fraction")[0] <= 0.001
    ]
    if dense:
        said.append(f"No exact zeros (≤ 0.1%) with: {', '.join(dense)}.")
    times = _mode_times(records)
    if "none" in times and times["none"][0] > 0:
        t0 = times["none"][0]
        for mode, (mu, sd, n) in times.items():
            if mode != "none":
                said.append(
                    f"Median step time with the penalty as {mode}: {mu:.2f} ± {sd:.2f} ms "
                    f"({mu / t0:.2f}× the {t0:.2f} ms of no penalty; {n} runs)."
                )
    lines += [
        "## What the numbers say",
        "",
        "Generated from the table by one rule: a difference counts when it exceeds twice its "
        "standard error over seeds.",
        "",
    ]
    lines += [f"- {s}" for s in said]
    lines.append("")


def _mode_times(records: Sequence[dict]) -> dict[str, tuple[float, float, int]]:
    groups: dict[str, list[float]] = {}
    for rec in records:
        mode = "none" if rec["config"]["weight_penalty"] == "none" else rec["config"]["penalty_mode"]
        v = from_jsonable_float(rec["metrics"].get("step_ms", math.nan))
        if math.isfinite(v):
            groups.setdefault(mode, []).append(v)
    out = {}
    for mode, vals in groups.items():
        mu = sum(vals) / len(vals)
        sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        out[mode] = (mu, sd, len(vals))
    return out


_MARKERS = {"loss": "o", "add_grad": "s", "grad": "D", "fused": "D", "prox": "^", "none": "*"}
_COLORS = {"none": "k", "l1": "C0", "l2": "C1", "elastic_net": "C2", "l0": "C3", "group_lasso": "C4"}


def _arm_parts(row: dict) -> tuple[str, str]:
    name = row["labels"]["arm"]
    if name == "none":
        return "none", "none"
    pen, mode = name.split()[:2]
    return pen, mode


def _sparsity_figure(summ: Sequence[dict], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
    seen = set()
    for ax, m in zip(axes, ("kid", "classifier_score")):
        scale = _SCALE.get(m, 1.0)
        for r in summ:
            pen, mode = _arm_parts(r)
            x, xs, _ = _stats(r, "zero_fraction")
            y, ys, _ = _stats(r, m)
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            label = f"{pen} / {mode}" if (pen, mode) not in seen and ax is axes[0] else None
            seen.add((pen, mode))
            ax.errorbar(
                100 * x,
                y * scale,
                xerr=100 * xs,
                yerr=ys * scale,
                fmt=_MARKERS.get(mode, "o"),
                color=_COLORS.get(pen, "C5"),
                ms=6,
                capsize=2,
                label=label,
                alpha=0.85,
            )
        ax.set_xlabel("exact zeros in G's weights (%)")
        ax.set_ylabel(_LABEL.get(m, m))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    _suptitle(
        fig, "quality against exact sparsity (each point: one penalty, way and λ; mean ± std over seeds)"
    )
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _time_figure(summ: Sequence[dict], records: Sequence[dict], path: Path) -> None:
    plt = _plt()
    groups: dict[tuple[str, str], list[float]] = {}
    for rec in records:
        cfg = rec["config"]
        pen = cfg["weight_penalty"]
        mode = "none" if pen == "none" else cfg["penalty_mode"]
        v = from_jsonable_float(rec["metrics"].get("step_ms", math.nan))
        if math.isfinite(v):
            groups.setdefault((pen, mode), []).append(v)
    keys = sorted(
        groups,
        key=lambda k: (
            k[0] != "none",
            k[0],
            ["loss", "add_grad", "grad", "fused", "prox", "none"].index(k[1]),
        ),
    )
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(keys) + 1.5), 3.4))
    for i, k in enumerate(keys):
        vals = groups[k]
        mu = sum(vals) / len(vals)
        sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        ax.bar(i, mu, yerr=sd, capsize=3, color=_COLORS.get(k[0], "C5"), alpha=0.6)
        ax.plot([i] * len(vals), vals, "k.", ms=3)
    ax.set_xticks(range(len(keys)), [f"{p}\n{m}" for p, m in keys], fontsize=7)
    ax.set_ylabel("ms per training step (median)")
    ax.set_title("wall time per step by penalty and way (all λ and seeds; dots: runs)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100, bbox_inches="tight")
    plt.close(fig)
