"""Seasonal references (README, "Seasonal references"): the same phase of the last few periods.

A window at 03:00 on a Monday is compared with the 03:00 windows of the last
``lags`` Mondays (``period: 7d``), not with a week of every hour pooled: a
daily or weekly cycle then stops looking like drift. The lags' counts are the
sum of their stored slices, counted in the bins of ONE profile (the whole
``lags × period`` before the window, cut once per ``refresh``) so every lag is
binned alike and a steady cycle reads nothing of the source for them: after a
refresh, the first window counts every slice from its oldest lag to itself in one
statement (as a rolling reference's refresh counts its range) and stores them,
the later ones read their own new slice alone (bench/bench_seasonal.py). Slices
that overlap an excluded stretch (``exclude``: ranges, or a cron line with a
duration) are left out, and so are those rows from the profile's bins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from driftmon.config import MonitorSettings, SeasonalReference
from driftmon.counting.incremental import SliceCounter
from driftmon.counting.slices import contiguous, grid_problem, slice_length, slices_of
from driftmon.errors import DriftmonError
from driftmon.sources import Source
from driftmon.sources.profile import ReferenceProfile
from driftmon.sources.slicing import slice_starts
from driftmon.windows import TimeRange, excluded_spans, reference_range, seasonal_lags


@dataclass
class SeasonalCounts:
    """A window's seasonal reference: the profile's bins with the kept lags' counts."""

    profile: ReferenceProfile
    kept: timedelta  # how much of the lags' time entered the reference
    lags: list[TimeRange]
    rows: list[dict] = field(default_factory=list)  # lag slices counted by this run, to store
    overwrite: bool = False  # recounted because too few rows: they replace sealed stored slices


def holes(monitor: MonitorSettings, window: TimeRange) -> tuple[TimeRange, ...]:
    """The excluded stretches inside the range a seasonal monitor's bins are cut from."""
    reference = monitor.reference
    if not isinstance(reference, SeasonalReference) or not reference.exclude:
        return ()
    return tuple(excluded_spans(reference, reference_range(reference, window)))


def seasonal_reference(counter: SliceCounter, monitor: MonitorSettings, source: Source,
                       profile: ReferenceProfile, window: TimeRange) -> SeasonalCounts:
    """The lags of ``window`` summed from their slices (counted where missing), excluded slices left out."""
    reference = monitor.reference
    assert isinstance(reference, SeasonalReference)
    length = slice_length(monitor)
    if length is None:
        raise DriftmonError(f"monitor {monitor.name!r}: a seasonal reference is summed from slices, "
                            f"but {grid_problem(monitor)}")
    lags = seasonal_lags(reference, window)
    hull = TimeRange(lags[0].start, lags[-1].end)
    excluded = excluded_spans(reference, hull)
    kept = [piece.start for lag in lags for piece in slices_of(lag, length)
            if not any(piece.start < hole.end and hole.start < piece.end for hole in excluded)]
    # Every slice from the oldest lag to the window, not the lags alone: what is missing (after
    # a refresh cut new bins, all of it) is counted in ONE statement and stored, so the lags of
    # the later windows are stored already and a steady cycle reads only its own new slice.
    span = TimeRange(hull.start, max(hull.end, window.start))
    reference, rows = _summed(counter, monitor, source, profile, [span], length, kept, recount=False)
    overwrite = bool(kept) and _rows(reference) < monitor.min_samples
    if overwrite:
        # Too few rows to trust, like an incomplete profile: slices sealed while the table was
        # still empty (history loaded after the monitor started) are counted again, the lags
        # alone (a quiet hour must not read weeks), and replace the stored ones.
        lag_spans = contiguous([TimeRange(start, start + length) for start in kept])
        reference, rows = _summed(counter, monitor, source, profile, lag_spans, length, kept, recount=True)
    return SeasonalCounts(reference, len(kept) * length, lags, rows, overwrite)


def _summed(counter: SliceCounter, monitor: MonitorSettings, source: Source, profile: ReferenceProfile,
            spans: list[TimeRange], length: timedelta, kept: list, *,
            recount: bool) -> tuple[ReferenceProfile, list[dict]]:
    payloads, rows = {}, []
    for span in spans:
        gathered = counter.gather(monitor, source, profile, span, length, recount=recount)
        payloads.update(zip(slice_starts(span, length), gathered.payloads, strict=True))
        rows += gathered.rows
    return source.profile_from_slices(profile, [payloads[start] for start in kept]), rows


def _rows(profile: ReferenceProfile) -> float:
    return max((c.total for c in profile.columns), default=0.0)
