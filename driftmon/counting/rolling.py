"""Rolling references that roll without rescans (README, "Rolling references").

A rolling reference is the ``size`` before the window, its end moving every
``refresh``. Counting it anew at each move read the whole range from the source
(94.9 s a day for one 24-column monitor on 10 M rows a day, issue #25). Its
counts are now the sum of its stored slices, the same slices the windows were
counted in, so a move reads nothing from the source: the sum is taken once per
range from the results database and kept while every slice in it is sealed.

The bins cannot move with the range (slices are counted in one set of bins), so
they are cut from a profile of their own range (``bins_range``: as long as the
reference, ending at the monitor's latest ``rebin`` tick), once per ``rebin``;
the first window after a re-cut counts every slice from the reference's start to
itself in ONE statement, in the new bins. Counts in the bins in use equal a full
count of the range bin for bin (tests/test_rolling.py). Where the slice grid
does not fit the range (``refresh``, ``size`` or ``offset`` not whole slices, or
no slices), the range is counted in those bins from the source at each move.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta

import numpy as np

from driftmon.config import MonitorSettings, RollingReference
from driftmon.counting.incremental import SliceCounter, slice_profile_key
from driftmon.counting.slices import slice_length
from driftmon.sources import Source
from driftmon.sources.profile import ReferenceProfile
from driftmon.sources.slicing import slice_starts
from driftmon.windows import TimeRange


@dataclass
class RolledReference:
    """A rolling reference's counts in its bins, and the slices the run must store."""

    profile: ReferenceProfile
    rows: list[dict] = field(default_factory=list)
    overwrite: bool = False  # recounted because too few rows: they replace sealed stored slices


def grid_length(monitor: MonitorSettings) -> timedelta | None:
    """The slice length when a rolling reference's every range lies on the slice grid, else None."""
    reference = monitor.reference
    length = slice_length(monitor)
    if length is None or not isinstance(reference, RollingReference):
        return None
    if any(step % length for step in (reference.refresh, reference.size, reference.offset)):
        return None
    return length


class RollingReferences:
    """Sums of stored slices per reference range, kept per monitor while every slice is sealed.

    A daily move keeps most of the range: the new sum is the kept one, less the slices that
    left the range, plus those that entered it (two days of slices read from the results
    database, not seven): the move costs about twice a steady cycle (bench/bench_rolling.py).
    """

    def __init__(self, counter: SliceCounter):
        self.counter = counter
        # monitor -> (profile key, range, summed payload, its profile): one range per monitor.
        self._sums: dict[str, tuple[str, TimeRange, object, ReferenceProfile]] = {}
        self._recounted: set[tuple[str, str, TimeRange]] = set()

    def reference(self, monitor: MonitorSettings, source: Source, bins: ReferenceProfile, reference: TimeRange,
                  window: TimeRange, *, recount: bool = False) -> RolledReference:
        length = grid_length(monitor)
        if length is None:
            return RolledReference(source.profile_counted(bins, reference))
        key = slice_profile_key(source, bins, length)
        # backfill --recount: the range's slices once per process, not once per window.
        recount = recount and (monitor.name, key, reference) not in self._recounted
        if recount:
            self._recounted.add((monitor.name, key, reference))
        kept = self._sums.get(monitor.name)
        if not recount and kept is not None and kept[:2] == (key, reference):
            return RolledReference(kept[3])
        moved = self._moved(monitor, source, bins, reference, length, kept, key) if not recount else None
        if moved is not None:
            total, rows, sealed = moved
        else:
            # Every slice from the reference's start to the window: what the bins in use lack (after
            # a re-cut, all of it) is counted in ONE statement and stored for the ranges to come.
            span = TimeRange(reference.start, max(reference.end, window.start))
            total, rows, sealed = self._summed(monitor, source, bins, span, [reference], length, recount)
        profile = replace(source.profile_from_slices(bins, [total]), range=reference)
        overwrite = recount
        if _rows(profile) < monitor.min_samples and not recount:
            # Too few rows to trust, as an incomplete profile: slices sealed while the table was
            # still empty (history loaded after the monitor started) are counted again.
            total, rows, sealed = self._summed(monitor, source, bins, reference, [reference], length, True)
            profile, overwrite = replace(source.profile_from_slices(bins, [total]), range=reference), True
        if sealed and _rows(profile) >= monitor.min_samples:
            self._sums[monitor.name] = (key, reference, total, profile)
        else:
            self._sums.pop(monitor.name, None)
        return RolledReference(profile, rows, overwrite)

    def _moved(self, monitor, source, bins, reference, length, kept, key):
        """The kept sum moved to ``reference``: less what left, plus what entered; None when it cannot be."""
        if kept is None or kept[0] != key:
            return None
        old = kept[1]
        if not (old.start <= reference.start < old.end <= reference.end):
            return None
        left = TimeRange(old.start, reference.start) if reference.start > old.start else None
        entered = TimeRange(old.end, reference.end) if reference.end > old.end else None
        total = kept[2].copy()
        rows, sealed = [], True
        for span, sign in ((left, -1), (entered, 1)):
            if span is None:
                continue
            part, counted, final = self._summed(monitor, source, bins, span, [span], length, False)
            total += sign * part
            rows += counted
            sealed = sealed and final
        return total, rows, sealed

    def _summed(self, monitor, source, bins, span, wanted_spans, length, recount):
        """The sum of the slices of ``wanted_spans`` (within ``span``, which is gathered whole)."""
        gathered = self.counter.gather(monitor, source, bins, span, length, recount=recount)
        payloads = dict(zip(slice_starts(span, length), gathered.payloads, strict=True))
        wanted = [start for part in wanted_spans for start in slice_starts(part, length)]
        total = sum((np.asarray(payloads[start], dtype=np.int64) for start in wanted[1:]),
                    np.array(payloads[wanted[0]], dtype=np.int64))
        sealed = all(gathered.sealed[start] for start in wanted)
        return total, gathered.rows, sealed


def _rows(profile: ReferenceProfile) -> float:
    return max((c.total for c in profile.columns), default=0.0)
