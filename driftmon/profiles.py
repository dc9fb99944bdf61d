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
    with results.connect() as connection:
        stored = repository.load_profile(connection, monitor, reference)
    current = replace(
        stored,
        columns=tuple(c for c in stored.columns if c.config_hash == source.expected_hash(c.column)),
    )
    if source.fits(current):
        return current
    profile = source.profile(reference)
    with results.begin() as connection:
        repository.save_profile(connection, monitor, profile)
    return profile
