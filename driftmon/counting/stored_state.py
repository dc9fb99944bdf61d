"""What the results database holds per monitor, and whether the current config still matches it.

``driftmon db status`` prints it. Matching uses the same fingerprints the
pipeline checks before reusing anything (driftmon/fingerprints.py): a stale
profile or slice is never used, only kept until ``driftmon db reset-reference``
drops it; a stale result is recomputed by ``backfill``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import Connection

from driftmon.config import Config, MonitorSettings
from driftmon.counting.incremental import slice_profile_key
from driftmon.counting.slices import slice_length
from driftmon.fingerprints import fingerprint, results_fingerprint
from driftmon.sources import Source, open_source
from driftmon.store import inventory
from driftmon.store.database import EngineRegistry
from driftmon.store.repository import Repository
from driftmon.windows import TimeRange


@dataclass(frozen=True)
class ProfileGroup:
    """The stored column profiles of one reference range that share a verdict."""

    reference: TimeRange
    columns: tuple[str, ...]
    rows: float
    complete: bool
    fingerprint: str
    matches: bool | None  # None: the monitor is not in the config


@dataclass(frozen=True)
class SliceGroup:
    profile_key: str
    slices: int
    span: TimeRange
    sealed: int
    matches: bool | None


@dataclass(frozen=True)
class ResultGroup:
    fingerprint: str | None
    windows: int
    rows: int
    first_end: datetime
    last_end: datetime
    matches: bool | None  # None also for results stored before fingerprints


@dataclass
class MonitorState:
    monitor: str
    configured: bool
    profiles: list[ProfileGroup] = field(default_factory=list)
    slices: list[SliceGroup] = field(default_factory=list)
    results: list[ResultGroup] = field(default_factory=list)
    future_windows: int = 0


def stored_state(config: Config, connection: Connection, now: datetime,
                 monitor: str | None = None) -> list[MonitorState]:
    """Every monitor with anything stored (or configured), oldest state first."""
    repository = Repository()
    monitors = {m.name: m for m in config.resolved_monitors()}
    names = [monitor] if monitor else sorted(set(monitors) | _stored_monitors(connection))
    engines = EngineRegistry()
    try:
        return [_monitor_state(repository, connection, name, monitors.get(name), config, engines, now)
                for name in names]
    finally:
        engines.dispose()


def _stored_monitors(connection: Connection) -> set[str]:
    return ({row["monitor"] for row in inventory.profile_inventory(connection)}
            | {row["monitor"] for row in inventory.slice_inventory(connection)}
            | {row["monitor"] for row in inventory.result_inventory(connection)})


def _monitor_state(repository: Repository, connection: Connection, name: str, monitor: MonitorSettings | None,
                   config: Config, engines: EngineRegistry, now: datetime) -> MonitorState:
    url = config.source_url(monitor.source) if monitor else None
    source = open_source(monitor, engines.get(url, f"monitor {name!r} source.url")) if monitor else None
    state = MonitorState(name, configured=monitor is not None)
    state.profiles, keys = _profiles(repository, connection, name, monitor, source)
    state.slices = [SliceGroup(row["profile_key"], row["slices"], TimeRange(row["first_start"], row["last_end"]),
                               int(row["sealed"] or 0), None if monitor is None else row["profile_key"] in keys)
                    for row in inventory.slice_inventory(connection, name)]
    expected = results_fingerprint(monitor, url) if monitor else None
    state.results = [ResultGroup(row["fingerprint"], row["windows"], row["rows"], row["first_end"], row["last_end"],
                                 None if monitor is None or row["fingerprint"] is None
                                 else row["fingerprint"] == expected)
                     for row in inventory.result_inventory(connection, name)]
    state.future_windows = inventory.windows_after(connection, name, now)["windows"]
    return state


def _profiles(repository: Repository, connection: Connection, name: str, monitor: MonitorSettings | None,
              source: Source | None) -> tuple[list[ProfileGroup], set[str]]:
    """The stored profiles grouped by range and verdict, and the slice keys the matching ones give."""
    ranges = sorted({TimeRange(row["reference_start"], row["reference_end"])
                     for row in inventory.profile_inventory(connection, name)})
    groups, keys = [], set()
    length = slice_length(monitor) if monitor else None
    for reference in ranges:
        stored = repository.load_profile(connection, name, reference)
        verdicts = defaultdict(list)
        for column in stored.columns:
            verdicts[None if source is None else column.config_hash == source.expected_hash(column.column)
                     ].append(column)
        for matches, columns in verdicts.items():
            groups.append(ProfileGroup(
                reference, tuple(c.column for c in columns), max(c.total for c in columns),
                all(c.complete for c in columns), fingerprint(sorted(c.config_hash for c in columns)), matches))
            if matches and length is not None:
                keys.add(slice_profile_key(source, replace(stored, columns=tuple(columns)), length))
    return groups, keys
