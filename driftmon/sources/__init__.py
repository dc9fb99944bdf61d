"""Sources: where bin counts come from (SPEC.md section 1).

Every kind answers the same two questions, and only bin counts cross the wire:

- ``profile(reference) -> ReferenceProfile``: bin edges, categories and counts
  of each column over the reference range;
- ``counts(profile, window) -> WindowCounts``: the window's counts in those
  bins, aligned with the reference as padded ``[F, B]`` arrays and a mask;
- ``slice_counts(profile, span, length)``: every slice of ``span`` counted in
  one statement, and ``window_from_slices``: a window as the sum of its
  slices, equal to ``counts`` (driftmon/counting/incremental.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Engine

from driftmon.config import MonitorSettings
from driftmon.sources.profile import ReferenceProfile, WindowCounts
from driftmon.sources.slicing import SliceCount
from driftmon.windows import TimeRange


class Source(Protocol):
    statements: int
    fingerprint: str  # driftmon/fingerprints.py: every setting that shapes a count

    def expected_hash(self, column: str) -> str: ...

    def fits(self, stored: ReferenceProfile) -> bool: ...

    def profile(self, reference: TimeRange) -> ReferenceProfile: ...

    def counts(self, profile: ReferenceProfile, window: TimeRange) -> WindowCounts: ...

    def slice_key(self, profile: ReferenceProfile) -> str: ...

    def slice_counts(self, profile: ReferenceProfile, span: TimeRange,
                     length: timedelta) -> dict[datetime, SliceCount]: ...

    def window_from_slices(self, profile: ReferenceProfile, payloads: list, window: TimeRange,
                           rows_scanned: int) -> WindowCounts: ...


def open_source(monitor: MonitorSettings, engine: Engine) -> Source:
    """The source of ``monitor``'s kind, reading through ``engine``."""
    from driftmon.sources.events import EventsSource
    from driftmon.sources.histograms import HistogramsSource

    kinds = {"events": EventsSource, "histograms": HistogramsSource}
    return kinds[monitor.source.kind](monitor, engine)
