"""A segmented window as ONE batch for the engine, and the families its q-values are adjusted in.

Rows of the batch, in order: the whole population's columns (exactly the rows
of the same monitor unsegmented), the segment mix (the ``segment``
pseudo-column), then every column of every segment (SegmentProfile's order).

Benjamini–Hochberg scope (README, "Segments"): the whole population's columns
form one family, as without segments, so its statuses do not depend on how
many segments exist; every tested (segment, column) pair of the window and the
mix form a second family, adjusted together. A segment below ``min_samples``
in either window is ``insufficient_data`` and not tested.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from driftmon.sources.profile import WindowCounts

WHOLE, SEGMENTS = 0, 1  # the families


@dataclass(frozen=True)
class Batch:
    """Every row of a window's statistics, with the segment and the family of each row."""

    counts: WindowCounts
    segments: tuple[dict[str, str] | None, ...]
    families: tuple[int, ...]


def batch_of(counts: WindowCounts) -> Batch:
    """The window's rows, one batch; an unsegmented window is its own batch."""
    whole = len(counts.columns)
    if counts.segment_profile is None:
        return Batch(counts, (None,) * whole, (WHOLE,) * whole)
    blocks = [counts, counts.mix, *counts.segments]
    profile = counts.segment_profile
    segments = [None] * (whole + 1) + [profile.values(i) for i, block in enumerate(counts.segments)
                                       for _ in block.columns]
    families = [WHOLE] * whole + [SEGMENTS] * (len(segments) - whole)
    return Batch(stacked(blocks), tuple(segments), tuple(families))


def stacked(blocks: list[WindowCounts]) -> WindowCounts:
    """The blocks' rows in one ``WindowCounts``, padded to the widest."""
    width = max(block.reference.shape[1] for block in blocks)

    def padded(name: str, fill) -> np.ndarray:
        arrays = [getattr(b, name) for b in blocks]
        return np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill) for a in arrays])

    first = blocks[0]
    return WindowCounts(
        window=first.window,
        columns=tuple(c for b in blocks for c in b.columns),
        roles=tuple(r for b in blocks for r in b.roles),
        labels=tuple(labels for b in blocks for labels in b.labels),
        reference=padded("reference", 0.0),
        current=padded("current", 0.0),
        mask=padded("mask", False),
        reference_totals=np.concatenate([b.reference_totals for b in blocks]),
        current_totals=np.concatenate([b.current_totals for b in blocks]),
        current_missing=np.concatenate([b.current_missing for b in blocks]),
        errors=first.errors,
        rows_scanned=first.rows_scanned,
    )
