"""Study records: what a finished run leaves behind, summarized and written as CSV.

Below :mod:`.sweep`, :mod:`.studies` and :mod:`.report` (all three read and write records;
none of them imports another for these), above :mod:`._io`. A record is the JSON a run
stores: ``{"key", "labels", "seed", "fold", "metrics", "extra", "wall_time_s", ...}``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence

from ._io import from_jsonable_float, to_jsonable

__all__ = ["METRIC_DIRECTIONS", "HIST_EDGES", "summarize", "results_csv", "summary_csv"]

#: +1: higher is better, -1: lower is better. Metrics outside this table can be named in a
#: criterion as ``max:name`` or ``min:name``.
METRIC_DIRECTIONS: dict[str, int] = {
    "psnr": +1,
    "ssim": +1,
    "classifier_score": +1,
    "classifier_accuracy": +1,
    "accuracy": +1,
    "kid": -1,
    "fid": -1,
    "l1": -1,
    "mse": -1,
    "hist_w1": -1,
    "hist_l1": -1,
}

#: Bin edges of the studies' pixel-value histograms (17 bins of width 1/8 centred on -1 .. 1).
HIST_EDGES = [-1.0 - 1.0 / 16 + i / 8 for i in range(18)]


def _mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    vals = [v for v in values if math.isfinite(v)]
    n = len(vals)
    if n == 0:
        return math.nan, math.nan, 0
    mu = sum(vals) / n
    sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    return mu, sd, n


def summarize(records: Sequence[dict], label_names: Sequence[str] | None = None) -> list[dict]:
    """Group records by their labels; mean, sample std and count of every metric.

    Returns one dict per group in first-seen order: ``{"labels": {...}, "n_runs": k,
    "mean": {metric: m}, "std": {metric: s}, "n": {metric: count}}``.
    """
    groups: dict[str, dict] = {}
    for r in records:
        labels = r["labels"] if label_names is None else {k: r["labels"][k] for k in label_names}
        gk = json.dumps(to_jsonable(labels), sort_keys=True)
        g = groups.setdefault(gk, {"labels": labels, "records": []})
        g["records"].append(r)
    out = []
    for g in groups.values():
        metrics = sorted({m for r in g["records"] for m in r["metrics"]})
        row = {"labels": g["labels"], "n_runs": len(g["records"]), "mean": {}, "std": {}, "n": {}}
        for m in metrics:
            mu, sd, n = _mean_std([from_jsonable_float(r["metrics"].get(m, math.nan)) for r in g["records"]])
            row["mean"][m], row["std"][m], row["n"][m] = mu, sd, n
        out.append(row)
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return str(v)


def results_csv(records: Sequence[dict], names: Sequence[str]) -> str:
    metrics = sorted({m for r in records for m in r["metrics"]})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*names, "seed", "fold", *metrics, "wall_time_s", "key"])
    for r in records:
        w.writerow(
            [_fmt(r["labels"][n]) for n in names]
            + [r["seed"], "" if r["fold"] is None else r["fold"]]
            + [_fmt(from_jsonable_float(r["metrics"].get(m, math.nan))) for m in metrics]
            + [f"{r['wall_time_s']:.3f}", r["key"]]
        )
    return buf.getvalue()


def summary_csv(summ: Sequence[dict], names: Sequence[str]) -> str:
    metrics = sorted({m for row in summ for m in row["mean"]})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = [*names, "n_runs", "score"]
    for m in metrics:
        head += [f"{m}_mean", f"{m}_std"]
    w.writerow(head)
    for row in summ:
        line = [_fmt(row["labels"][n]) for n in names] + [row["n_runs"], _fmt(row["score"])]
        for m in metrics:
            line += [_fmt(row["mean"].get(m, math.nan)), _fmt(row["std"].get(m, math.nan))]
        w.writerow(line)
    return buf.getvalue()
