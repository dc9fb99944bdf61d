"""Data health in /metrics (README, "Metrics"): each monitor's volume, freshness and schema.

Like the drift gauges (driftmon/serving/metrics.py), the values are mirrored state:
``HealthState`` is fed by finished runs and restored from the results database at
start-up and on every refresh, and ``HealthCollector`` turns it into metric families;
a scrape never queries a database. Per monitor there are a dozen series at most (one
per schema change beyond that), so the text is rendered by prometheus_client itself,
once per change of the state, not per scrape.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import Connection

from driftmon.config import MonitorSettings, longest_interval
from driftmon.counting.slices import slice_length
from driftmon.outcomes import RunOutcome
from driftmon.serving.metrics import STATUSES
from driftmon.serving.rendered import RenderedCollector
from driftmon.store import health_queries
from driftmon.windows import as_utc

# driftmon_schema_status: ordered by severity, so that max() across replicas is the worst.
SCHEMA_CODES = {"ok": 0, "changed": 1, "broken": 2}


@dataclass(frozen=True)
class WindowVolume:
    """The volume check of a monitor's newest window."""

    window_end: datetime
    rows: float
    expected: float | None
    change: float | None
    status: str


@dataclass(frozen=True)
class SchemaState:
    """A monitor's source_schemas row, as far as the metrics need it."""

    status: str
    changes: tuple[tuple[str, str], ...]  # (column, change), in stored order
    checked_at: datetime | None

    @classmethod
    def from_row(cls, row: dict) -> SchemaState:
        changes = tuple(dict.fromkeys((str(c["column"]), str(c["change"])) for c in row.get("changes") or ()))
        checked = row.get("checked_at")
        return cls(row["status"], changes, None if checked is None else as_utc(checked))


class HealthState:
    """Per monitor: the newest window's volume, the newest row time seen, the schema;
    safe to read while runs update it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._volume: dict[str, WindowVolume] = {}
        self._newest_row: dict[str, datetime] = {}
        self._schema: dict[str, SchemaState] = {}
        self.version = 0  # bumped by every change: the collector re-renders only then

    def record(self, outcome: RunOutcome) -> None:
        """A finished run: its window's volume and newest row time when it stored them (an ok
        run; a failed one stores nothing), and its schema row whatever its status: a dropped
        column fails the run, and the schema row that names it is what the alert needs."""
        volume = None
        if outcome.status == "ok" and outcome.volume is not None:
            v = outcome.volume
            volume = WindowVolume(as_utc(outcome.window.end), v.rows, v.expected, v.change, v.status)
        newest = outcome.newest_row_at if outcome.status == "ok" else None
        schema = SchemaState.from_row(outcome.schema) if outcome.schema is not None else None
        with self._lock:
            self._take(outcome.monitor, volume, newest, schema)

    def restore(self, connection: Connection) -> None:
        """What the results database holds (any replica's runs, a backfill's): at start-up
        and on every refresh. Read first, then taken in under the lock at once."""
        windows = health_queries.latest_window_health(connection)
        schemas = health_queries.all_schemas(connection)
        with self._lock:
            for row in windows:
                # A row stored without a volume check ("off") still says how fresh the source is.
                volume = WindowVolume(as_utc(row["window_end"]), row["rows"], row["expected"], row["change"],
                                      row["status"]) if row["status"] in STATUSES else None
                self._take(row["monitor"], volume, row["newest_row_at"], None)
            for row in schemas:
                self._take(row["monitor"], None, None, SchemaState.from_row(row))

    def _take(self, monitor: str, volume: WindowVolume | None, newest: datetime | None,
              schema: SchemaState | None) -> None:
        changed = False
        if volume is not None:
            known = self._volume.get(monitor)
            # A backfill may finish an older window after a newer one: keep the newest.
            if known != volume and (known is None or volume.window_end >= known.window_end):
                self._volume[monitor], changed = volume, True
        if newest is not None:
            newest, known = as_utc(newest), self._newest_row.get(monitor)
            if known is None or newest > known:  # only forward: an older window saw older rows
                self._newest_row[monitor], changed = newest, True
        if schema is not None:
            known = self._schema.get(monitor)
            # One row per monitor, replaced by each check: the latest check wins.
            if known != schema and (known is None or known.checked_at is None or schema.checked_at is None
                                    or schema.checked_at >= known.checked_at):
                self._schema[monitor], changed = schema, True
        if changed:
            self.version += 1

    def snapshot(self) -> tuple[int, dict[str, WindowVolume], dict[str, datetime], dict[str, SchemaState]]:
        with self._lock:
            return self.version, dict(self._volume), dict(self._newest_row), dict(self._schema)


class HealthCollector(RenderedCollector):
    """Data health families of the configured monitors, from ``HealthState``."""

    def __init__(self, state: HealthState, monitors: list[MonitorSettings]):
        self.state = state
        self.monitors = sorted(monitors, key=lambda m: m.name)
        self._intervals = {m.name: longest_interval(m.schedule).total_seconds() for m in monitors}  # parsed once
        # How coarse the newest row time is: a slice, or the window where a monitor counts whole windows.
        self._resolutions = {m.name: (slice_length(m) or m.window.size).total_seconds() for m in monitors}
        super().__init__()

    def collect(self) -> Iterator[Metric]:
        _, volumes, newest, schemas = self.state.snapshot()
        families = self._families()
        for monitor in self.monitors:
            name = monitor.name
            families["interval"].add_metric([name], self._intervals[name])
            families["resolution"].add_metric([name], self._resolutions[name])
            volume = volumes.get(name) if monitor.volume is not None else None  # a check turned off: no series
            if volume is not None:
                families["rows"].add_metric([name], volume.rows)
                if _known(volume.expected):
                    families["expected"].add_metric([name], volume.expected)
                for status in STATUSES:
                    families["volume_status"].add_metric([name, status], 1.0 if volume.status == status else 0.0)
                if _known(volume.change):
                    families["change"].add_metric([name], volume.change)
            if name in newest:
                families["newest"].add_metric([name], newest[name].timestamp())
            schema = schemas.get(name)
            if schema is not None and schema.status in SCHEMA_CODES:
                families["schema_status"].add_metric([name], float(SCHEMA_CODES[schema.status]))
                for column, change in schema.changes:
                    families["schema_change"].add_metric([name, column, change], 1.0)
        yield from families.values()

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        monitor = ["monitor"]
        return {
            "rows": GaugeMetricFamily("driftmon_window_rows", "Rows in the newest window with a volume check",
                                      labels=monitor),
            "expected": GaugeMetricFamily(
                "driftmon_window_rows_expected",
                "Rows the reference expects in a window as long as the newest one (absent without reference rows)",
                labels=monitor),
            "volume_status": GaugeMetricFamily("driftmon_volume_status",
                                               "1 for the newest window's volume status, 0 for the others",
                                               labels=[*monitor, "status"]),
            "change": GaugeMetricFamily("driftmon_volume_change_ratio",
                                        "Relative change of the newest window's rows: rows / expected - 1",
                                        labels=monitor),
            "newest": GaugeMetricFamily("driftmon_source_newest_timestamp_seconds",
                                        "Start of the newest slice of the source that held rows, as seen by any run",
                                        labels=monitor),
            "resolution": GaugeMetricFamily(
                "driftmon_source_newest_resolution_seconds",
                "How coarse the newest row time is: the slice length, or the window where whole windows are counted",
                labels=monitor),
            "interval": GaugeMetricFamily("driftmon_schedule_interval_seconds",
                                          "Longest time between two scheduled runs of the monitor",
                                          labels=monitor),
            "schema_status": GaugeMetricFamily(
                "driftmon_schema_status",
                "Source schema: 0 ok, 1 changed (columns added), 2 broken (a watched column dropped or retyped)",
                labels=monitor),
            "schema_change": GaugeMetricFamily("driftmon_schema_change",
                                               "1 per change of the source table against the monitor's baseline",
                                               labels=[*monitor, "column", "change"]),
        }



def _known(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
