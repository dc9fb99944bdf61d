"""Bin boundaries and labels (SPEC.md section 1): pure functions, no I/O.

``bins: k`` gives k bins from k−1 cut points c1 < … < c(k−1):
(−inf, c1), [c1, c2), …, [c(k−1), +inf). Bin i holds c(i) ≤ x < c(i+1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def quantile_levels(bins: int) -> list[float]:
    """The i/k quantile levels whose values cut k bins."""
    return [i / bins for i in range(1, bins)]


def quantile_positions(n: int, level: float) -> tuple[int, int, float]:
    """Sorted positions and weight of numpy's default ("linear") quantile.

    numpy takes the virtual index (n−1)·q, then interpolates between the values
    at its floor and the next position (clipped to n−1).
    """
    virtual = (n - 1) * level
    below = math.floor(virtual)
    above = min(below + 1, n - 1)
    return below, above, virtual - below


def lerp(below: float, above: float, weight: float) -> float:
    """numpy's ``_lerp``: exact at both ends, symmetric around 0.5."""
    difference = above - below
    if weight >= 0.5:
        return above - difference * (1 - weight)
    return below + difference * weight


def quantile_cuts(sorted_values_at: dict[int, float], n: int, bins: int) -> list[float]:
    """Cut points at the i/k quantiles, from the values at the positions needed."""
    cuts = []
    for level in quantile_levels(bins):
        below, above, weight = quantile_positions(n, level)
        cuts.append(lerp(sorted_values_at[below], sorted_values_at[above], weight))
    return merge_duplicates(cuts)


def needed_positions(n: int, bins: int) -> list[int]:
    """The sorted positions whose values ``quantile_cuts`` needs."""
    positions = set()
    for level in quantile_levels(bins):
        below, above, _ = quantile_positions(n, level)
        positions.update((below, above))
    return sorted(positions)


def uniform_cuts(low: float, high: float, bins: int) -> list[float]:
    """Cut points lo + i·(hi−lo)/k, i = 1…k−1.

    Where hi − lo overflows (values near ±1.8e308), the same points are taken as
    lo + i·(hi/k − lo/k) from the nearer end, every term finite: the formula
    itself would give infinite edges and a single bin.
    """
    if math.isfinite(high - low):
        return merge_duplicates([low + i * (high - low) / bins for i in range(1, bins)])
    step = high / bins - low / bins
    return merge_duplicates([low + i * step if 2 * i <= bins else high - (bins - i) * step
                             for i in range(1, bins)])


def merge_duplicates(cuts: Sequence[float]) -> list[float]:
    """Sorted distinct cut points: repeated quantiles make fewer, not empty, bins."""
    return sorted(set(cuts))


def numeric_labels(cuts: Sequence[float]) -> list[str]:
    """Human-readable names of the bins cut at ``cuts``."""
    bounds = ["-inf", *(repr(float(c)) for c in cuts), "+inf"]
    labels = []
    for i, (low, high) in enumerate(zip(bounds, bounds[1:], strict=False)):
        opening = "(" if i == 0 else "["
        labels.append(f"{opening}{low}, {high})")
    return labels


def top_categories(counts: Sequence[tuple[object, float]], k: int) -> list:
    """The k most frequent values, ties broken by value ascending."""
    ranked = sorted(counts, key=lambda pair: (-pair[1], _sort_key(pair[0])))
    return [value for value, _ in ranked[:k]]


def _sort_key(value: object) -> tuple:
    # Mixed-type categories (SQLite allows them) sort numbers before text.
    if isinstance(value, bool | int | float):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def category_label(value: object) -> str:
    return str(value)
