"""Shared by the benchmark scripts: the percentile their tables report."""

from __future__ import annotations


def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile as the value at rank round(p% of n-1) (nan for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]
