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

import numpy as np
from sqlalchemy import Engine

from driftmon.config import MonitorSettings, RollingReference, SeasonalReference
from driftmon.counting.slices import is_sealed, lateness, slice_length
from driftmon.fingerprints import fingerprint
from driftmon.sources import Source
from driftmon.sources.profile import ReferenceProfile, WindowCounts
from driftmon.sources.segment_slices import decode, is_segmented
from driftmon.sources.slicing import SliceCount, slice_starts
from driftmon.store.database import single_statements
from driftmon.store.repository import Repository
from driftmon.windows import TimeRange, reference_range


@dataclass
class SlicedWindow:
    """A window's counts from slices, and what the run must store for them."""

    counts: WindowCounts
    profile_key: str
    length: timedelta
    fresh: dict[datetime, SliceCount]  # counted from the source by this run
    changed: list[TimeRange] = field(default_factory=list)  # stored slices whose recount differs
    rows: list[dict] = field(default_factory=list)  # slice rows to write
    overwrite: bool = False  # the rows replace sealed stored ones (a recount)


@dataclass
class Gathered:
    """The slices of one span: their counts in order, and what the run must store."""

    key: str
    payloads: list
    fresh: dict[datetime, SliceCount]
    changed: list[TimeRange]
    rows: list[dict]
    rows_read: int
    sealed: dict[datetime, bool] = field(default_factory=dict)  # per slice start: final


class SliceCounter:
    """Reads stored slices and counts the missing ones for the pipeline.

    Slice counts read back are kept in memory, keyed by when they were counted:
    each cycle asks the store only which slices exist and when they were
    counted, and reads the counts of those it does not hold (in steady state,
    the newest), so a 7-day window does not parse 2,016 stored slices per cycle.
    A slice recounted elsewhere (another replica, ``backfill --recount``) has a
    new ``counted_at`` and is read again.
    """

    def __init__(self, repository: Repository, results: Engine, clock: Callable[[], datetime]):
        self.repository = repository
        self.results = results
        self.clock = clock
        # (monitor, profile key) -> slice start -> (counted_at, sealed, counts)
        self._cache: dict[tuple[str, str], dict[datetime, tuple[datetime, bool, object]]] = {}

    def window(self, monitor: MonitorSettings, source: Source, profile: ReferenceProfile,
               window: TimeRange, *, recount: bool = False, companion=None) -> SlicedWindow | None:
        """The window's counts from slices; None when the monitor's grid does not fit the window.
        ``companion``: see ``gather``."""
        length = slice_length(monitor)
        if length is None:
            return None
        gathered = self.gather(monitor, source, profile, window, length, recount=recount, companion=companion)
        counts = source.window_from_slices(profile, gathered.payloads, window, gathered.rows_read)
        return SlicedWindow(counts, gathered.key, length, gathered.fresh, gathered.changed, gathered.rows)

    def gather(self, monitor: MonitorSettings, source: Source, profile: ReferenceProfile, span: TimeRange,
               length: timedelta, *, recount: bool = False, companion=None) -> Gathered:
        """The slices of ``span``: stored ones read through the cache, missing ones counted in one statement.

        ``companion`` (its ``span``): another aggregate of the rows of the slices it names
        (driftmon/multivariate/companion.py), joined to the count statement when that counts
        exactly its span; it then holds its result, else it is left unrun."""
        key = slice_profile_key(source, profile, length)
        starts = slice_starts(span, length)
        stored = self._stored(monitor.name, key, span, starts)
        needed = [s for s in starts if recount or s not in stored or not stored[s][1]]
        fresh: dict[datetime, SliceCount] = {}
        rows_read = 0
        if needed:
            # One statement over the span of the needed slices (in steady state: the newest ones).
            counting = TimeRange(needed[0], needed[-1] + length)
            if companion is not None and companion.span == counting and companion.length == length:
                counted = source.slice_counts(profile, counting, length, companion=companion)
            else:
                counted = source.slice_counts(profile, counting, length)
            rows_read = sum(c.rows for c in counted.values())
            fresh = {start: counted[start] for start in needed}
        payloads = [_packed(fresh[s].payload) if s in fresh else stored[s][2] for s in starts]
        changed = [TimeRange(s, s + length) for s in fresh
                   if s in stored and not _same(fresh[s].payload, stored[s][2])]
        now, late = self.clock(), lateness(monitor)
        rows = [
            {"monitor": monitor.name, "profile_key": key, "slice_start": s, "slice_end": s + length,
             "counts": c.payload, "rows": c.rows, "sealed": is_sealed(TimeRange(s, s + length), late, now),
             "counted_at": now}
            for s, c in fresh.items()
        ]
        sealed = {s: stored[s][1] for s in starts if s in stored}
        sealed.update({row["slice_start"]: row["sealed"] for row in rows})
        self._remember(monitor.name, key, self.horizon(monitor, span) - late, rows)
        return Gathered(key, payloads, fresh, changed, rows, rows_read, sealed)

    def horizon(self, monitor: MonitorSettings, window: TimeRange) -> datetime:
        """The start of the oldest slice a run for ``window`` reads: a seasonal reference's oldest lag."""
        reference = monitor.reference
        if isinstance(reference, SeasonalReference):
            return window.start - reference.lags * reference.period
        return window.start

    def _stored(self, monitor: str, key: str, window: TimeRange,
                starts: list[datetime]) -> dict[datetime, tuple[datetime, bool, object]]:
        """``(counted_at, sealed, payload)`` of the window's stored slices, read through the cache.

        The head of the window that the cache holds as sealed is checked with one
        aggregate (count and newest ``counted_at``: a recount elsewhere moves it);
        only the rest, in steady state the newest slices, is listed one by one.
        """
        cache = self._cache.setdefault((monitor, key), {})
        head = 0
        while head < len(starts) and cache.get(starts[head], (None, False))[1]:
            head += 1
        with single_statements(self.results) as connection:
            versions = None
            if head:
                known = [cache[s][0] for s in starts[:head]]
                span = TimeRange(starts[0], starts[head - 1] + (window.end - starts[-1]))
                tail = TimeRange(starts[head], window.end) if head < len(starts) else None
                summary, versions = self.repository.slice_state(connection, monitor, key, span, tail)
                if summary != (head, max(known)):
                    head, versions = 0, None  # changed elsewhere: list every slice
            tail = TimeRange(starts[head], window.end) if head < len(starts) else None
            if versions is None:
                versions = self.repository.slice_versions(connection, monitor, key, tail) if tail else {}
            unread = [s for s in starts[head:] if s in versions and cache.get(s, (None,))[0] != versions[s][1]]
            if unread:
                span = TimeRange(unread[0], unread[-1] + (window.end - starts[-1]))
                for start, found in self.repository.load_slices(connection, monitor, key, span).items():
                    cache[start] = (found.counted_at, found.sealed, _packed(found.counts))
        stored = {s: cache[s] for s in starts[:head]}
        stored.update({s: cache[s] for s, (_, counted) in versions.items() if cache.get(s, (None,))[0] == counted})
        return stored

    def _remember(self, monitor: str, key: str, oldest: datetime, rows: list[dict]) -> None:
        """Keep this run's counts; forget other profiles' and slices no window still needs.

        Should the run's transaction fail, the store keeps the older ``counted_at``,
        so the next cycle reads the slice again instead of trusting this copy.
        """
        for other in [k for k in self._cache if k[0] == monitor and k[1] != key]:
            del self._cache[other]
        cache = self._cache.setdefault((monitor, key), {})
        # Only what the next window reads: a day of slack once held 1,500 slices of a 1 h window
        # per monitor (memory per monitor: bench/README.md, capacity). Older slices a recount of a
        # late window needs are read back from the store.
        for start in [s for s in cache if s < oldest]:
            del cache[start]
        for row in rows:
            cache[row["slice_start"]] = (row["counted_at"], row["sealed"], _packed(row["counts"]))

    def recount_of(self, monitor: MonitorSettings, source: Source, profile: ReferenceProfile,
                   sliced: SlicedWindow, window: TimeRange) -> WindowCounts | None:
        """A stored window's counts with this run's fresh slices; None if a slice is gone."""
        starts = slice_starts(window, sliced.length)
        stored = self._stored(monitor.name, sliced.profile_key, window, starts)
        payloads = []
        for start in starts:
            if start in sliced.fresh:
                payloads.append(_packed(sliced.fresh[start].payload))
            elif start in stored:
                payloads.append(stored[start][2])
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
        """Slices that ended by then serve no window still open to late rows, nor a seasonal lag,
        nor a rolling reference (its counts are summed from them)."""
        oldest = self.horizon(monitor, window)
        if isinstance(monitor.reference, RollingReference):
            oldest = min(oldest, reference_range(monitor.reference, window).start)
        return oldest - lateness(monitor)


def slice_profile_key(source: Source, profile: ReferenceProfile, length: timedelta) -> str:
    """What a slice row is stored under: the bins it was counted in, and the slice length
    (after a schedule change, 5-minute slices must not be read as hours)."""
    return fingerprint({"bins": source.slice_key(profile), "seconds": length.total_seconds()})


def _packed(payload):
    """Events counts as an array of the narrowest unsigned type that holds them exactly (a
    24-column slice of up to 65,535 rows a bin: 1 KB as uint16, not 9 KB of Python ints;
    a 24 h window of 1-minute slices is 1,440 of them per monitor); a segmented slice's as
    its decoded ``[segments, cells]`` array. Every sum of them is taken in int64."""
    if is_segmented(payload):
        return decode(payload)
    if not isinstance(payload, list):
        return payload
    counts = np.asarray(payload, dtype=np.int64)
    if counts.size and counts.min() >= 0:
        return counts.astype(np.min_scalar_type(int(counts.max())))
    return counts


def _same(payload, other) -> bool:
    payload, other = _packed(payload), _packed(other)
    if isinstance(payload, np.ndarray) or isinstance(other, np.ndarray):
        return bool(np.array_equal(np.asarray(payload), np.asarray(other)))
    return payload == other
