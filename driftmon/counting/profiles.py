"""Reference profiles are computed once per reference range, then read back.

A rolling reference changes range at most once per ``refresh``, so most cycles
find their profile stored and scan only the current window. Only a COMPLETE
profile is reused for good: one counted before its range had ended (plus
``lateness``), or holding fewer than ``min_samples`` rows (the table was loaded
after the monitor started), is stored as incomplete and counted again on the
next run until it is complete. A recount (``backfill --recount``) replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from driftmon.config import SEGMENT_PSEUDO_COLUMN
from driftmon.sources import Source
from driftmon.sources.profile import ReferenceProfile
from driftmon.store.repository import Repository
from driftmon.windows import TimeRange


@dataclass(frozen=True)
class Completeness:
    """When a profile counted now may be kept for good."""

    now: datetime
    lateness: timedelta
    min_samples: int

    def of(self, profile: ReferenceProfile) -> bool:
        ended = self.now >= profile.range.end + self.lateness
        largest = max((c.total for c in profile.columns), default=0.0)
        return ended and largest >= self.min_samples


def reference_profile(repository: Repository, results: Engine, source: Source, monitor: str,
                      reference: TimeRange, completeness: Completeness | None = None, *,
                      recount: bool = False, holes: tuple[TimeRange, ...] = ()) -> ReferenceProfile:
    """The stored profile for this range and config, counted and stored if absent or incomplete.

    Without ``completeness``, a profile is complete once its range has ended and it holds a row.
    """
    completeness = completeness or Completeness(datetime.now(UTC), timedelta(0), 1)
    if not recount:
        current = _stored(repository, results, source, monitor, reference)
        if current.complete and source.fits(current):
            return current
    # holes: a seasonal reference's excluded stretches (their fingerprint is in the source's).
    counted = source.profile(reference, holes) if holes else source.profile(reference)
    complete = completeness.of(counted)
    profile = replace(counted, columns=tuple(replace(c, complete=complete) for c in counted.columns),
                      segments=counted.segments and replace(counted.segments, complete=complete))
    with results.begin() as connection:
        repository.save_profile(connection, monitor, profile, replace=recount)
    # Another replica may have stored a complete one first: every process uses the stored one.
    stored = _stored(repository, results, source, monitor, reference)
    return stored if source.fits(stored) else profile


def _stored(repository: Repository, results: Engine, source: Source, monitor: str,
            reference: TimeRange) -> ReferenceProfile:
    """The stored profile's columns that the current config would cut the same way."""
    with results.connect() as connection:
        stored = repository.load_profile(connection, monitor, reference)
    segments = stored.segments
    if segments is not None and segments.config_hash != source.expected_hash(SEGMENT_PSEUDO_COLUMN):
        segments = None
    return replace(stored, columns=tuple(
        c for c in stored.columns if c.config_hash == source.expected_hash(c.column)), segments=segments)
