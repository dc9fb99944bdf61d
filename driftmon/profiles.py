"""Reference profiles are computed once per reference range, then read back.

A rolling reference changes range at most once per ``refresh``, so most cycles
find their profile stored and scan only the current window.
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import Engine

from driftmon.sources import Source
from driftmon.sources.profile import ReferenceProfile
from driftmon.store.repository import Repository
from driftmon.windows import TimeRange


def reference_profile(
    repository: Repository, results: Engine, source: Source, monitor: str, reference: TimeRange
) -> ReferenceProfile:
    """The stored profile for this range and config, computed and stored if absent."""
    current = _stored(repository, results, source, monitor, reference)
    if source.fits(current):
        return current
    profile = source.profile(reference)
    with results.begin() as connection:
        repository.save_profile(connection, monitor, profile)
    # Another replica may have stored its own first: every process uses the stored one.
    stored = _stored(repository, results, source, monitor, reference)
    return stored if source.fits(stored) else profile


def _stored(repository: Repository, results: Engine, source: Source, monitor: str,
            reference: TimeRange) -> ReferenceProfile:
    """The stored profile's columns that the current config would cut the same way."""
    with results.connect() as connection:
        stored = repository.load_profile(connection, monitor, reference)
    return replace(stored, columns=tuple(
        c for c in stored.columns if c.config_hash == source.expected_hash(c.column)))
