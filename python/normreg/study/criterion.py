"""The selection criterion of a sweep: one metric or a weighted sum of z-scored metrics."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ._io import (
    from_jsonable_float,
)
from .records import METRIC_DIRECTIONS


# ----------------------------------------------------------------------------------------
# Selection criterion
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Criterion:
    """How to rank grid points: one metric, or a weighted combination of several.

    ``terms`` is a tuple of (metric, weight, direction) with weight > 0 and direction +1
    (higher is better) or -1 (lower is better); the direction comes from
    :data:`METRIC_DIRECTIONS` (or a ``max:``/``min:`` prefix), so a user never has to
    remember that KID needs a minus sign.

    One metric: a point's score is ``direction * mean``. Several: each metric's point means
    are standardized over the grid (z-scores), so that metrics on different scales (PSNR in
    dB, KID ~ 1e-3) can be weighed against each other, and the score is
    ``sum(weight * direction * z)``. Higher scores are better.
    """

    terms: tuple[tuple[str, float, int], ...]

    @classmethod
    def parse(cls, spec: str | Mapping[str, float] | Criterion) -> Criterion:
        """``"psnr"``, ``"kid"``, ``"classifier_score+kid"``, ``"2*classifier_score + 1*kid"``,
        ``"max:my_metric"``, or a mapping ``{"classifier_score": 2, "kid": 1}``."""
        if isinstance(spec, Criterion):
            return spec
        if isinstance(spec, Mapping):
            items = list(spec.items())
        elif isinstance(spec, str):
            if not spec.strip():
                raise ValueError("'criterion' is empty; e.g. 'psnr', 'kid' or '2*classifier_score+kid'")
            items = []
            for raw in spec.split("+"):
                term = raw.strip().replace(" ", "")
                m = re.fullmatch(r"(?:([0-9.eE+-]+)\*)?((?:max:|min:)?[A-Za-z_][A-Za-z0-9_]*)", term)
                if not m:
                    raise ValueError(
                        f"'criterion': cannot read term {raw.strip()!r}; write metric or weight*metric, "
                        "joined by '+', e.g. '2*classifier_score+kid'"
                    )
                items.append((m.group(2), float(m.group(1)) if m.group(1) else 1.0))
        else:
            raise TypeError(
                f"'criterion' must be a string or a mapping metric -> weight, got {type(spec).__name__}"
            )
        terms = []
        for name, weight in items:
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise ValueError(f"'criterion': weight of {name!r} must be a finite number, got {weight!r}")
            if weight <= 0:
                raise ValueError(
                    f"'criterion': weight of {name!r} must be > 0, got {weight}; the sign comes from the "
                    "metric's direction (lower KID is better), use 'min:'/'max:' for other metrics"
                )
            if name.startswith(("max:", "min:")):
                direction, name = (+1 if name[:3] == "max" else -1), name[4:]
            elif name in METRIC_DIRECTIONS:
                direction = METRIC_DIRECTIONS[name]
            else:
                known = ", ".join(sorted(METRIC_DIRECTIONS))
                raise ValueError(
                    f"'criterion': unknown metric {name!r}; known: {known}; "
                    f"for another metric say max:{name} or min:{name}"
                )
            terms.append((name, float(weight), direction))
        names = [t[0] for t in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"'criterion': a metric appears twice in {spec!r}")
        return cls(tuple(terms))

    @property
    def metrics(self) -> list[str]:
        return [t[0] for t in self.terms]

    def __str__(self) -> str:
        parts = []
        for name, w, d in self.terms:
            default = METRIC_DIRECTIONS.get(name)
            label = name if default == d else f"{'max' if d > 0 else 'min'}:{name}"
            parts.append(label if w == 1 else f"{w:g}*{label}")
        return "+".join(parts)

    def scores(self, means: Sequence[Mapping[str, float]]) -> list[float]:
        """Score of each point from its metric means; NaN/missing metrics score -inf."""
        n = len(means)
        vals = {m: [from_jsonable_float(p.get(m, math.nan)) for p in means] for m in self.metrics}
        if len(self.terms) == 1:
            name, _w, d = self.terms[0]
            return [d * v if math.isfinite(v) else -math.inf for v in vals[name]]
        out = [0.0] * n
        for name, w, d in self.terms:
            finite = [v for v in vals[name] if math.isfinite(v)]
            mu = sum(finite) / len(finite) if finite else 0.0
            sd = math.sqrt(sum((v - mu) ** 2 for v in finite) / len(finite)) if finite else 0.0
            for i, v in enumerate(vals[name]):
                if not math.isfinite(v):
                    out[i] = -math.inf
                elif out[i] != -math.inf:
                    out[i] += w * d * ((v - mu) / sd if sd > 0 else 0.0)
        return out
