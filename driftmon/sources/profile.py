"""What sources return: reference profiles and window counts, as plain frozen records."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from driftmon.windows import TimeRange

OTHER = "__other__"
MISSING = "__missing__"


@dataclass(frozen=True)
class ColumnProfile:
    """How one column is binned, and its counts over the reference range.

    ``values`` are the value bins: numeric bins cut at ``edges``, the top-K
    categories, or a histogram's labels. Events columns also have the
    ``__other__`` and ``__missing__`` buckets, counted in ``other``/``missing``.
    """

    column: str
    role: str
    kind: str  # numeric | categorical | histogram
    config_hash: str
    edges: tuple[float, ...] = ()
    categories: tuple = ()
    labels: tuple[str, ...] = ()
    counts: tuple[float, ...] = ()
    other: float = 0.0
    missing: float = 0.0
    error: str | None = None
    complete: bool = True  # False: counted too early or too small to keep (driftmon/counting/profiles.py)

    @property
    def total(self) -> float:
        return float(sum(self.counts)) + self.other + self.missing


@dataclass(frozen=True)
class ReferenceProfile:
    range: TimeRange
    columns: tuple[ColumnProfile, ...]

    @property
    def complete(self) -> bool:
        """Whether it may be reused for good: every column was counted complete."""
        return all(c.complete for c in self.columns)

    def column(self, name: str) -> ColumnProfile:
        for profile in self.columns:
            if profile.column == name:
                return profile
        raise KeyError(name)


@dataclass(frozen=True)
class ColumnCounts:
    """One column's counts over a window: per value bin, plus other and missing."""

    column: str
    counts: dict[str, float]
    other: float = 0.0
    missing: float = 0.0
    error: str | None = None

    @property
    def total(self) -> float:
        return float(sum(self.counts.values())) + self.other + self.missing


@dataclass(frozen=True)
class WindowCounts:
    """Reference and current counts of every column, aligned bin for bin.

    ``reference`` and ``current`` are ``[F, B]`` float64 arrays padded with zeros
    to the widest column; ``mask`` marks the real bins. ``labels[f]`` names the
    bins of row f. Totals count every row of the window, missing ones included.
    """

    window: TimeRange
    columns: tuple[str, ...]
    roles: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]
    reference: np.ndarray
    current: np.ndarray
    mask: np.ndarray
    reference_totals: np.ndarray
    current_totals: np.ndarray
    current_missing: np.ndarray
    errors: dict[str, str] = field(default_factory=dict)
    rows_scanned: int = 0
