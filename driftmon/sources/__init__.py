"""Sources: where bin counts come from (SPEC.md section 1).

Every kind answers the same two questions, and only bin counts cross the wire:

- ``profile(reference) -> ReferenceProfile``: bin edges, categories and counts
  of each column over the reference range;
- ``counts(profile, window) -> WindowCounts``: the window's counts in those
  bins, aligned with the reference as padded ``[F, B]`` arrays and a mask.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import Engine

from driftmon.config import MonitorSettings
from driftmon.sources.profile import ReferenceProfile, WindowCounts
from driftmon.windows import TimeRange


class Source(Protocol):
    statements: int

    def expected_hash(self, column: str) -> str: ...

    def fits(self, stored: ReferenceProfile) -> bool: ...

    def profile(self, reference: TimeRange) -> ReferenceProfile: ...

    def counts(self, profile: ReferenceProfile, window: TimeRange) -> WindowCounts: ...


def open_source(monitor: MonitorSettings, engine: Engine) -> Source:
    """The source of ``monitor``'s kind, reading through ``engine``."""
    from driftmon.sources.events import EventsSource
    from driftmon.sources.histograms import HistogramsSource

    kinds = {"events": EventsSource, "histograms": HistogramsSource}
    return kinds[monitor.source.kind](monitor, engine)
