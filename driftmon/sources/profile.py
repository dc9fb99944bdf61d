"""What sources return: reference profiles and window counts, as plain frozen records."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from driftmon.windows import TimeRange

OTHER = "__other__"
MISSING = "__missing__"
# SQL segment codes of the pooled segments (driftmon/sources/segments.py).
OTHER_SEGMENT = -1
MISSING_SEGMENT = -2


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
    # Segmented monitors: per segment (SegmentProfile's order), the counts of every value
    # bin, then other and missing; they sum, segment by segment, to the counts above.
    segment_counts: tuple[tuple[float, ...], ...] = ()

    @property
    def total(self) -> float:
        return float(sum(self.counts)) + self.other + self.missing

    def of_segment(self, index: int) -> ColumnProfile:
        """This column's profile restricted to one segment: same bins, that segment's counts."""
        counts = self.segment_counts[index]
        return replace(self, counts=tuple(counts[:-2]), other=counts[-2], missing=counts[-1], segment_counts=())


@dataclass(frozen=True)
class SegmentProfile:
    """The segments of one reference range: members, and reference rows per segment.

    Segments are indexed ``0 … S−1`` for the members (largest first), ``S`` for
    ``__other__`` and ``S+1`` for ``__missing__``; ``rows`` follows that order.
    """

    by: tuple[str, ...]
    members: tuple[tuple, ...]
    rows: tuple[float, ...]
    distinct: int  # combinations seen in the reference (NULLs aside)
    config_hash: str
    complete: bool = True

    @property
    def size(self) -> int:
        """Segments, ``__other__`` and ``__missing__`` included."""
        return len(self.members) + 2

    def index(self, code: int) -> int:
        """The segment index of a SQL segment code (``OTHER_SEGMENT``, ``MISSING_SEGMENT`` last)."""
        return code if code >= 0 else len(self.members) - 1 - code

    def values(self, index: int) -> dict[str, str]:
        """The segment as ``{column: value}``: what outputs call ``segment``."""
        if index == len(self.members):
            return {column: OTHER for column in self.by}
        if index == len(self.members) + 1:
            return {column: MISSING for column in self.by}
        return {column: str(v) for column, v in zip(self.by, self.members[index], strict=True)}

    def key(self, index: int) -> str:
        return segment_key(self.values(index))

    @property
    def keys(self) -> list[str]:
        return [self.key(i) for i in range(self.size)]


def segment_key(values: dict[str, str]) -> str:
    """``country=DE`` (``country=DE,app=web`` for several columns): a segment's stored key and label."""
    return ",".join(f"{column}={value}" for column, value in values.items())


@dataclass(frozen=True)
class ReferenceProfile:
    range: TimeRange
    columns: tuple[ColumnProfile, ...]
    segments: SegmentProfile | None = None  # segmented monitors only

    @property
    def complete(self) -> bool:
        """Whether it may be reused for good: every column (and the segments) counted complete."""
        return all(c.complete for c in self.columns) and (self.segments is None or self.segments.complete)

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
    # Segmented monitors: the same columns per segment (SegmentProfile's order), and the
    # segment mix (reference and current rows per segment) as one categorical column.
    segments: tuple[WindowCounts, ...] = ()
    mix: WindowCounts | None = None
    segment_profile: SegmentProfile | None = None
