"""Repeated runs summarized: the median and the spread of every figure.

Two-core machines are noisy, so one run proves little. Every benchmark that repeats a
measurement keeps each run's figures and reports, per figure, the median with the lowest and
the highest value seen; a ratio between two targets is taken within each run (both measured
under the same conditions) and then summarized the same way.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any


def spread(values: Sequence[float]) -> dict[str, float]:
    """``{"median", "min", "max", "n"}`` of ``values``."""
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """The spread of every numeric figure that all ``runs`` have."""
    keys = [k for k, v in runs[0].items() if isinstance(v, int | float)] if runs else []
    return {k: spread([r[k] for r in runs]) for k in keys if all(k in r for r in runs)}


def ratio(
    numerator: Sequence[Mapping[str, Any]], denominator: Sequence[Mapping[str, Any]], key: str
) -> dict[str, float] | None:
    """The spread of ``numerator[i][key] / denominator[i][key]`` over the runs both have."""
    pairs = [
        (n[key], d[key])
        for n, d in zip(numerator, denominator, strict=False)
        if key in n and key in d and d[key]
    ]
    return spread([n / d for n, d in pairs]) if pairs else None


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """The least-squares slope of ``(x, y)`` points: what one more unit of x costs, with the
    fixed base cancelled out and every size counted (not only the first and the last)."""
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in points)
    variance = sum((x - mean_x) ** 2 for x, _ in points)
    return round(covariance / variance, 4)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """``{"p50", "p99", "max", "n"}`` of latencies ``values`` (nearest rank: the value at or
    above which that share of the samples lies, never an interpolation between two samples,
    so a p99 of 100 samples is the second-slowest, and of fewer it is the slowest)."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def rank(share: float) -> float:
        return ordered[max(0, math.ceil(share * len(ordered)) - 1)]

    return {
        "p50": round(rank(0.50), 3),
        "p99": round(rank(0.99), 3),
        "max": round(ordered[-1], 3),
        "n": len(ordered),
    }
