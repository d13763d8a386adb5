"""The numbers the digits part of the stability report is made of: its metrics, each run's value
of a metric, the runs grouped by arm in the arms' order, the divergence count. Below both
:mod:`.report_digits` (tables and text) and :mod:`.report_digits_figures` (figures); the helpers
both parts of the report share are in :mod:`.report_common`."""

from __future__ import annotations

from collections.abc import Sequence

from normreg.stability.arms import DIGITS_ARMS

from .report_common import _f

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
    order = {a.name: i for i, a in enumerate(DIGITS_ARMS)}
    out: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: (order.get(r["arm"], 99), r["seed"])):
        out.setdefault(r["arm"], []).append(r)
    return out


def _n_div(recs: Sequence[dict]) -> int:
    return sum(bool(r["summary"]["diverged"]) for r in recs)
