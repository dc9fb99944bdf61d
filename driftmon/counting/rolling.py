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

from driftmon.config import MonitorSettings, RollingReference
from driftmon.counting.incremental import SliceCounter
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
    """Sums of stored slices per reference range, kept per monitor while every slice is sealed."""

    def __init__(self, counter: SliceCounter):
        self.counter = counter
        # monitor -> (profile key, range, summed profile): one range per monitor, a day's worth of cycles.
        self._sums: dict[str, tuple[str, TimeRange, ReferenceProfile]] = {}

    def reference(self, monitor: MonitorSettings, source: Source, bins: ReferenceProfile, reference: TimeRange,
                  window: TimeRange, *, recount: bool = False) -> RolledReference:
        length = grid_length(monitor)
        if length is None:
            return RolledReference(source.profile_counted(bins, reference))
        key = self.counter.key(source, bins, length)
        kept = self._sums.get(monitor.name)
        if not recount and kept is not None and kept[:2] == (key, reference):
            return RolledReference(kept[2])
        # Every slice from the reference's start to the window: what the bins in use lack (after a
        # re-cut, all of it) is counted in ONE statement and stored for the ranges to come.
        span = TimeRange(reference.start, max(reference.end, window.start))
        profile, rows, sealed = self._summed(monitor, source, bins, span, reference, length, recount)
        overwrite = recount
        if _rows(profile) < monitor.min_samples and not recount:
            # Too few rows to trust, as an incomplete profile: slices sealed while the table was
            # still empty (history loaded after the monitor started) are counted again.
            profile, rows, sealed = self._summed(monitor, source, bins, reference, reference, length, True)
            overwrite = True
        if sealed and _rows(profile) >= monitor.min_samples:
            self._sums[monitor.name] = (key, reference, profile)
        else:
            self._sums.pop(monitor.name, None)
        return RolledReference(profile, rows, overwrite)

    def _summed(self, monitor, source, bins, span, reference, length, recount):
        gathered = self.counter.gather(monitor, source, bins, span, length, recount=recount)
        payloads = dict(zip(slice_starts(span, length), gathered.payloads, strict=True))
        wanted = slice_starts(reference, length)
        summed = source.profile_from_slices(bins, [payloads[start] for start in wanted])
        sealed = all(gathered.sealed[start] for start in wanted)
        return replace(summed, range=reference), gathered.rows, sealed


def _rows(profile: ReferenceProfile) -> float:
    return max((c.total for c in profile.columns), default=0.0)
