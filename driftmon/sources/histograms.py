"""Histogram sources: pre-aggregated long-format counts (time, feature, bin, count).

A window sums the counts per (feature, bin) inside the database. Counts that
are negative, NaN or infinite make that column's error; fractional counts are
weights and are kept.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import Engine

from driftmon.config import MonitorSettings
from driftmon.fingerprints import column_fingerprint, fingerprint, source_fingerprint
from driftmon.sources.alignment import align
from driftmon.sources.profile import ColumnCounts, ColumnProfile, ReferenceProfile, WindowCounts
from driftmon.sources.slicing import SliceCount, histogram_rows, histogram_slices
from driftmon.sources.sql import SourceReader, equality_filters, in_range, slice_bounds, slice_index, source_table
from driftmon.windows import TimeRange


class HistogramsSource:
    """Bin counts of a monitor's features from a table of pre-aggregated histograms."""

    def __init__(self, monitor: MonitorSettings, engine: Engine):
        self.monitor = monitor
        self.engine = engine
        self.source = monitor.source
        self.features = {f.column: f for f in monitor.features}
        self.table = source_table(self.source.table, self.source.schema_, self._column_names())
        self.reader = SourceReader(engine, monitor.name, self.source.table, self.source.schema_,
                                   self._column_names(), self.source.timeout,
                                   timestamp=self.source.timestamp_column, timestamp_unit=self.source.timestamp_unit,
                                   numeric=[self.source.count_column])
        # Every source setting that shapes a count, with the database the engine reads.
        self.fingerprint = source_fingerprint(self.source, engine.url)
        self.statements = 0

    def _column_names(self) -> list[str]:
        s = self.source
        names = [s.timestamp_column, s.feature_column, s.bin_column, s.count_column, *s.where]
        return names + ([s.role_column] if s.role_column else [])

    def expected_hash(self, column: str) -> str:
        """The fingerprint of what shapes the column's counts (driftmon/fingerprints.py)."""
        return column_fingerprint(self.fingerprint, self.features.get(column))

    def fits(self, stored: ReferenceProfile) -> bool:
        """Whether a stored profile was cut under the current settings.

        The features of a histogram source are found in the data, so any
        stored profile whose every column matches the settings is whole.
        """
        return bool(stored.columns) and all(
            c.config_hash == self.expected_hash(c.column) for c in stored.columns
        )

    def profile(self, reference: TimeRange) -> ReferenceProfile:
        counts, roles, _ = self._sum(reference, f"reference {reference}")
        columns = []
        for name, column in counts.items():
            columns.append(
                ColumnProfile(
                    column=name,
                    role=roles[name],
                    kind="histogram",
                    config_hash=self.expected_hash(name),
                    labels=tuple(column.counts),
                    counts=tuple(column.counts.values()),
                    error=column.error,
                )
            )
        return ReferenceProfile(range=reference, columns=tuple(columns))

    def counts(self, profile: ReferenceProfile, window: TimeRange) -> WindowCounts:
        counts, roles, rows = self._sum(window, f"window {window}")
        return align(profile, counts, window, rows_scanned=rows, roles=roles)

    # --- slices (driftmon/counting/slices.py) ---------------------------------------------

    def slice_key(self, profile: ReferenceProfile) -> str:
        """Histogram bins come from the data: slices depend only on the source and features."""
        return fingerprint({"kind": "histograms", "source": self.fingerprint,
                            "features": sorted(self.expected_hash(c) for c in self.features)})

    def slice_counts(self, profile: ReferenceProfile, span: TimeRange,
                     length: timedelta) -> dict[datetime, SliceCount]:
        """Every slice of ``span`` summed in ONE statement, grouped by slice, feature and bin."""
        found = self._query(span, f"slices {span}", length)
        return histogram_slices(found, span, length)

    def window_from_slices(self, profile: ReferenceProfile, payloads: list, window: TimeRange,
                           rows_scanned: int) -> WindowCounts:
        counts, roles, _ = self._collect(histogram_rows(payloads))
        return align(profile, counts, window, rows_scanned=rows_scanned, roles=roles)

    def _sum(self, window: TimeRange, what: str):
        return self._collect(self._query(window, what))

    def _query(self, window: TimeRange, what: str, length: timedelta | None = None) -> list:
        with self.reader.reading(what) as connection:  # first: it learns the timestamp's type
            self.statements += 1
            parameters = slice_bounds(window) if length is not None else {}
            return connection.execute(self._statement(window, length), parameters).all()

    def _statement(self, window: TimeRange, length: timedelta | None) -> sa.Select:
        s, t = self.source, self.table
        feature, label, count = t.c[s.feature_column], t.c[s.bin_column], t.c[s.count_column]
        role = sa.func.max(t.c[s.role_column]) if s.role_column else sa.null()
        dialect, epoch = self.engine.dialect.name, self.reader.epoch
        conditions = [in_range(dialect, t.c[s.timestamp_column], window, epoch), *equality_filters(t, s.where, dialect)]
        if self.features:
            conditions.append(feature.in_(list(self.features)))
        groups = [feature, label]
        if length is not None:
            groups.insert(0, slice_index(dialect, t.c[s.timestamp_column], length, epoch).label("slice"))
        return (
            sa.select(*groups, sa.func.sum(count), sa.func.min(count), sa.func.count(), role)
            .where(*conditions)
            .group_by(*groups)
            .order_by(*groups)
        )

    def _collect(self, rows) -> tuple[dict[str, ColumnCounts], dict[str, str], int]:
        bins: dict[str, dict[str, float]] = {}
        roles: dict[str, str] = {}
        problems: dict[str, list[str]] = {}
        scanned = 0
        for name, label, total, smallest, rows_in_bin, role in rows:
            name, label = str(name), str(label)
            scanned += rows_in_bin
            total = float(total) if total is not None else 0.0
            if (smallest is not None and float(smallest) < 0) or not math.isfinite(total):
                problems.setdefault(name, []).append(label)
            bins.setdefault(name, {})[label] = total
            configured = self.features.get(name)
            roles[name] = role or (configured.role if configured else "feature")
        counts = {
            name: ColumnCounts(
                column=name,
                counts=labels,
                error=_bad_counts_message(problems[name]) if name in problems else None,
            )
            for name, labels in bins.items()
        }
        return counts, roles, scanned


def _bad_counts_message(labels: list[str]) -> str:
    shown = ", ".join(map(repr, labels[:5])) + (" …" if len(labels) > 5 else "")
    return f"negative, NaN or infinite counts in bin(s) {shown}"

