"""Slice counts as the sources store them, and their sums (SPEC.md section 2, "Slices").

A slice's payload is plain JSON, kept in the results database:

- events: one flat list of integer counts, per column its value bins then
  ``__other__`` and ``__missing__`` (``EventsLayout``), in the bins of the
  profile the slice was counted under;
- histograms: per feature and bin label ``[sum, smallest, rows, role]``, the
  same aggregates a whole-window query returns, so their sums are the window's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from driftmon.windows import TimeRange


@dataclass(frozen=True)
class SliceCount:
    """One slice's counts (a JSON-able payload) and the source rows it holds."""

    payload: list | dict
    rows: int


def slice_starts(span: TimeRange, length: timedelta) -> list[datetime]:
    count = (span.end - span.start) // length
    return [span.start + i * length for i in range(count)]


class EventsLayout:
    """Where each (column, bin code) lives in an events slice's flat list of counts.

    Codes are 0…B−1 for value bins, −1 for ``__other__``, −2 for ``__missing__``.
    """

    def __init__(self, value_bins: list[int]):
        self.widths = [bins + 2 for bins in value_bins]
        self.offsets = np.concatenate([[0], np.cumsum(self.widths)]).astype(int)
        self.size = int(self.offsets[-1])

    def positions(self, index: np.ndarray, code: np.ndarray) -> np.ndarray:
        """Where each (column index, code) pair of two int64 arrays lives in the flat list."""
        widths = np.asarray(self.widths, dtype=np.int64)[index]
        return self.offsets[index] + np.where(code >= 0, code, widths - 3 - code)

    def slices(self, index: np.ndarray, piece: np.ndarray, code: np.ndarray, count: np.ndarray,
               span: TimeRange, length: timedelta) -> dict[datetime, SliceCount]:
        """Counts of (column index, slice number, code) as one SliceCount per slice of ``span``."""
        starts = slice_starts(span, length)
        counts = np.zeros((len(starts), self.size), dtype=np.int64)
        np.add.at(counts, (piece, self.positions(index, code)), count)
        first = slice(0, self.widths[0]) if self.widths else slice(0, 0)
        rows = counts[:, first].sum(axis=1)
        return {start: SliceCount(counts[i].tolist(), int(rows[i])) for i, start in enumerate(starts)}

    def tallies(self, payloads: list[list[int]]) -> list[dict[int, float]]:
        """Per column ``{code: count}`` of the payloads' sum."""
        total = np.zeros(self.size, dtype=np.int64)
        for payload in payloads:  # int64 arrays (or lists) of self.size counts
            total += payload
        tallies = []
        for index, width in enumerate(self.widths):
            row = total[self.offsets[index]: self.offsets[index] + width]
            tally = {code: float(row[code]) for code in range(width - 2)}
            tally[-1], tally[-2] = float(row[width - 2]), float(row[width - 1])
            tallies.append(tally)
        return tallies


def histogram_slices(found, span: TimeRange, length: timedelta) -> dict[datetime, SliceCount]:
    """Rows of (slice number, feature, label, sum, smallest, rows, role) as one SliceCount per slice."""
    starts = slice_starts(span, length)
    payloads: list[dict] = [{} for _ in starts]
    rows = [0] * len(starts)
    for piece, name, label, total, smallest, rows_in_bin, role in found:
        piece = int(piece)
        total = float(total) if total is not None else 0.0
        payloads[piece].setdefault(str(name), {})[str(label)] = [
            total if math.isfinite(total) else None,  # NaN/inf are not JSON: None marks them
            None if smallest is None else float(smallest),
            int(rows_in_bin),
            role,
        ]
        rows[piece] += int(rows_in_bin)
    return {start: SliceCount(payloads[i], rows[i]) for i, start in enumerate(starts)}


def histogram_rows(payloads: list[dict]) -> list[tuple]:
    """The slices' sum, as the (feature, label, sum, smallest, rows, role) rows of one window."""
    merged: dict[tuple[str, str], list] = {}
    for payload in payloads:
        for name, labels in payload.items():
            for label, (total, smallest, rows, role) in labels.items():
                entry = merged.setdefault((name, label), [0.0, None, 0, None])
                entry[0] = math.nan if total is None else entry[0] + total
                if smallest is not None:
                    entry[1] = smallest if entry[1] is None else min(entry[1], smallest)
                entry[2] += rows
                entry[3] = max(filter(None, (entry[3], role)), default=None)
    return [(name, label, *values) for (name, label), values in sorted(merged.items())]
