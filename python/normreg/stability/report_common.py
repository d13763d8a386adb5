"""What both parts of the stability report share: the ring metrics, means and verdicts over
seeds, the Fisher test on divergence counts, the arm tables, matplotlib."""

from __future__ import annotations

import math
from collections.abc import Sequence

from normreg.stability.arms import arm_names

from ..study._io import from_jsonable_float
from ..study.report import fmt_pm

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
    """ "better" / "worse" / "within spread" / "n/a" for arm ``a`` against ``b`` (the studies' 2-se rule)."""
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
    p = (
        sum(math.comb(n_a, i) * math.comb(n_b, total_k - i) for i in range(k_a, min(n_a, total_k) + 1))
        / denom
    )
    return p < alpha


def _groups(records: Sequence[dict]) -> dict[str, list[dict]]:
    order = {n: i for i, n in enumerate(arm_names())}
    out: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: (order.get(r["arm"], 99), r["seed"])):
        out.setdefault(r["arm"], []).append(r)
    return out


def arm_table(by_arm: dict[str, list[dict]]) -> str:
    head = [
        "arm",
        "seeds",
        "diverged",
        "non-finite",
        "all 8 modes",
        *[METRICS[m][0] for m in METRICS],
        "‖W_D‖",
        "D zeros (%)",
        "ms / step",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, recs in by_arm.items():
        div = sum(bool(r["summary"]["diverged"]) for r in recs)
        full = sum(_f(r["summary"]["metrics"]["modes_covered"]) == 8 for r in recs)
        nonfinite = sum(
            r["summary"].get("nonfinite_at") is not None or not r["summary"]["metrics"]["finite"]
            for r in recs
        )
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
        out.append(
            f"{arm}: D's penalty strength at the end "
            + ", ".join(f"{v:.3g}" for v in lams)
            + " (seeds in order); E[sign(D(x_real))] of the last batch "
            + ", ".join(f"{v:.2f}" for v in rs)
            + "."
        )
    return [*out, ""] if out else []


# ---- figures --------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt
