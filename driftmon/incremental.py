"""Window counts summed from stored slices, so a cycle reads from the source only what is new.

A run asks for its window's slices under the current profile. Those stored and
sealed are final and never read again; the rest (new slices, slices still
within ``lateness`` of their end when last counted, and every slice after a
profile change) are counted in ONE statement on the source over the span that
holds them, grouped by slice. The window's counts are the sum of its slices,
equal bin for bin to a full count of the window. A recount that changes a
slice some stored window used is reported, so that window is recomputed.
Nothing is written here: the pipeline stores the slices with the run's results,
in the run's transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine

from driftmon.config import MonitorSettings
from driftmon.slices import is_sealed, lateness, slice_length, slices_of
from driftmon.sources import Source
from driftmon.sources.profile import ReferenceProfile, WindowCounts
from driftmon.sources.slicing import SliceCount
from driftmon.store.repository import Repository
from driftmon.windows import TimeRange


@dataclass
class SlicedWindow:
    """A window's counts from slices, and what the run must store for them."""

    counts: WindowCounts
    profile_key: str
    length: timedelta
    fresh: dict[datetime, SliceCount]  # counted from the source by this run
    changed: list[TimeRange] = field(default_factory=list)  # stored slices whose recount differs
    rows: list[dict] = field(default_factory=list)  # slice rows to write


class SliceCounter:
    """Reads stored slices and counts the missing ones for the pipeline."""

    def __init__(self, repository: Repository, results: Engine, clock: Callable[[], datetime]):
        self.repository = repository
        self.results = results
        self.clock = clock

    def window(self, monitor: MonitorSettings, source: Source, profile: ReferenceProfile,
               window: TimeRange, *, recount: bool = False) -> SlicedWindow | None:
        """The window's counts from slices; None when the monitor's grid does not fit the window."""
        length = slice_length(monitor)
        if length is None:
            return None
        key = source.slice_key(profile)
        pieces = slices_of(window, length)
        with self.results.connect() as connection:
            stored = self.repository.load_slices(connection, monitor.name, key, window)
        needed = [p for p in pieces if recount or p.start not in stored or not stored[p.start].sealed]
        fresh: dict[datetime, SliceCount] = {}
        rows_read = 0
        if needed:
            # One statement over the span of the needed slices (in steady state: the newest ones).
            counted = source.slice_counts(profile, TimeRange(needed[0].start, needed[-1].end), length)
            rows_read = sum(c.rows for c in counted.values())
            keep = {p.start for p in needed}
            fresh = {start: c for start, c in counted.items() if start in keep}
        payloads = [fresh[p.start].payload if p.start in fresh else stored[p.start].counts for p in pieces]
        counts = source.window_from_slices(profile, payloads, window, rows_read)
        changed = [p for p in pieces if p.start in fresh and p.start in stored
                   and fresh[p.start].payload != stored[p.start].counts]
        now, late = self.clock(), lateness(monitor)
        rows = [
            {"monitor": monitor.name, "profile_key": key, "slice_start": p.start, "slice_end": p.end,
             "counts": fresh[p.start].payload, "rows": fresh[p.start].rows,
             "sealed": is_sealed(p, late, now), "counted_at": now}
            for p in pieces if p.start in fresh
        ]
        return SlicedWindow(counts, key, length, fresh, changed, rows)

    def recount_of(self, monitor: MonitorSettings, source: Source, profile: ReferenceProfile,
                   sliced: SlicedWindow, window: TimeRange) -> WindowCounts | None:
        """A stored window's counts with this run's fresh slices; None if a slice is gone."""
        with self.results.connect() as connection:
            stored = self.repository.load_slices(connection, monitor.name, sliced.profile_key, window)
        payloads = []
        for piece in slices_of(window, sliced.length):
            if piece.start in sliced.fresh:
                payloads.append(sliced.fresh[piece.start].payload)
            elif piece.start in stored:
                payloads.append(stored[piece.start].counts)
            else:
                return None
        return source.window_from_slices(profile, payloads, window, rows_scanned=0)

    def windows_using(self, monitor: MonitorSettings, changed: list[TimeRange]) -> TimeRange | None:
        """The span of window ends whose windows hold a changed slice: (first start, last end + size)."""
        if not changed:
            return None
        first, last = min(changed), max(changed)
        return TimeRange(first.start, last.end + monitor.window.size - timedelta(microseconds=1))

    def retention_cutoff(self, monitor: MonitorSettings, window: TimeRange) -> datetime:
        """Slices that ended by then serve no window still open to late rows."""
        return window.start - lateness(monitor)
