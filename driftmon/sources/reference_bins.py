"""Cutting a reference's bins inside the database: numeric cut points and top categories.

A part of ``EventsSource`` (mixed in), split off by role: this module decides
the bins from the reference window, ``events`` counts rows into them. The host
provides ``table``, ``engine``, ``reader``, ``features``, ``monitor``,
``source``, ``_warned`` and the SQL pieces ``_value``, ``_missing``,
``_category``, ``_in_window`` and ``_execute``.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql

from driftmon.config import Feature
from driftmon.sources import binning, dialects
from driftmon.sources.sql import is_number
from driftmon.windows import TimeRange

log = logging.getLogger("driftmon.sources.events")  # the source's own log, as before the split


class ReferenceBinning:
    """Cut points of numeric columns and top-K categories, from the reference window."""

    # --- numeric cut points -----------------------------------------------

    def _cuts(self, connection: Connection, reference: TimeRange) -> dict[str, list[float]]:
        cuts: dict[str, list[float]] = {}
        quantile = [f for f in self._numeric() if f.effective_binning == "quantile"]
        spans = [f for f in self._numeric() if f.effective_binning == "uniform" and f.range is None]
        for feature in self._numeric():
            if feature.effective_binning == "explicit":
                cuts[feature.column] = list(feature.edges or [])
            elif feature.effective_binning == "uniform" and feature.range is not None:
                cuts[feature.column] = binning.uniform_cuts(*feature.range, feature.effective_bins)
        if spans:
            cuts.update(self._uniform_from_span(connection, reference, spans))
        if quantile and connection.dialect.name == "postgresql":
            cuts.update(self._quantiles_postgresql(connection, reference, quantile))
        elif quantile and dialects.has_ordered_quantiles(connection.dialect.name):
            cuts.update(self._quantiles_ordered(connection, reference, quantile))
        else:
            for feature in quantile:
                cuts[feature.column] = self._quantiles_portable(connection, reference, feature)
        return cuts

    def _uniform_from_span(self, connection, reference, features) -> dict[str, list[float]]:
        aggregates = []
        for feature in features:
            value, present = self._value(feature), ~self._missing(feature)
            if dialects.is_portable(connection.dialect.name):
                name = connection.dialect.name
                aggregates += [dialects.filtered(name, sa.func.min, value, present),
                               dialects.filtered(name, sa.func.max, value, present)]
            else:
                aggregates += [sa.func.min(value).filter(present), sa.func.max(value).filter(present)]
        (row,) = self._execute(connection, sa.select(*aggregates).where(*self._in_window(reference)))
        cuts = {}
        for i, feature in enumerate(features):
            low, high = row[2 * i], row[2 * i + 1]
            empty = low is None
            cuts[feature.column] = [] if empty else binning.uniform_cuts(low, high, feature.effective_bins)
        return cuts

    def _quantiles_postgresql(self, connection, reference, features) -> dict[str, list[float]]:
        # All quantiles of a column from ONE ordered pass: percentile_cont(ARRAY[...]).
        aggregates = []
        for feature in features:
            levels = sa.literal(binning.quantile_levels(feature.effective_bins), postgresql.ARRAY(sa.Double))
            ordered = sa.func.percentile_cont(levels).within_group(self._value(feature))
            aggregates.append(ordered.filter(~self._missing(feature)))
        (row,) = self._execute(connection, sa.select(*aggregates).where(*self._in_window(reference)))
        return {f.column: binning.merge_duplicates(row[i] or []) for i, f in enumerate(features)}

    def _quantiles_ordered(self, connection, reference, features) -> dict[str, list[float]]:
        # The engine's own ordering, all columns in one statement (dialects.py).
        name = connection.dialect.name
        cuts: dict[str, list[float]] = {f.column: [] for f in features if f.effective_bins == 1}
        features = [f for f in features if f.effective_bins > 1]
        if not features:
            return cuts
        if name == dialects.DUCKDB:
            aggregates = [dialects.ordered_quantiles(name, self._value(f), ~self._missing(f),
                                                     binning.quantile_levels(f.effective_bins)) for f in features]
            (row,) = self._execute(connection, sa.select(*aggregates).where(*self._in_window(reference)))
            cuts.update({f.column: binning.merge_duplicates(row[i] or []) for i, f in enumerate(features)})
            return cuts
        sorted_values = (
            sa.select(*(dialects.clickhouse_sorted(self._value(f), ~self._missing(f)).label(f"v{i}")
                        for i, f in enumerate(features)))
            .where(*self._in_window(reference))
            .subquery("sorted")
        )
        picked = []
        for i, feature in enumerate(features):
            values = sorted_values.c[f"v{i}"]
            picked.append(sa.func.length(values))
            for level in binning.quantile_levels(feature.effective_bins):
                picked += dialects.clickhouse_neighbours(values, level)
        (row,) = self._execute(connection, sa.select(*picked))
        at = 0
        for feature in features:
            n, levels = int(row[at]), binning.quantile_levels(feature.effective_bins)
            pairs = row[at + 1: at + 1 + 2 * len(levels)]
            at += 1 + 2 * len(levels)
            cuts[feature.column] = [] if n == 0 else binning.merge_duplicates([
                binning.lerp(float(pairs[2 * k]), float(pairs[2 * k + 1]), binning.quantile_positions(n, q)[2])
                for k, q in enumerate(levels)])
        return cuts

    def _quantiles_portable(self, connection, reference, feature: Feature) -> list[float]:
        # Only the values at the sorted positions that the quantiles need come back.
        value = self._value(feature)
        ranked = (
            sa.select(
                value.label("value"),
                (sa.func.row_number().over(order_by=value) - 1).label("position"),
                sa.func.count().over().label("n"),
            )
            .where(*self._in_window(reference), ~self._missing(feature))
            .subquery("ranked")
        )
        wanted = []
        for level in binning.quantile_levels(feature.effective_bins):
            virtual = (ranked.c.n - 1) * dialects.double(connection.dialect.name, level)
            if dialects.is_portable(connection.dialect.name):
                below = dialects.floor_integer(connection.dialect.name, virtual)  # CAST may round there
            else:
                below = sa.cast(virtual, sa.Integer)
            wanted += [ranked.c.position == below, ranked.c.position == below + 1]
        statement = sa.select(ranked.c.position, ranked.c.value, ranked.c.n)
        rows = self._execute(connection, statement.where(sa.or_(*wanted)) if wanted else statement.limit(1))
        if not rows:
            return []
        values = {position: float(value) for position, value, _ in rows}
        return binning.quantile_cuts(values, rows[0][2], feature.effective_bins)

    # --- categories -----------------------------------------------------------

    def _categories(self, connection: Connection, reference: TimeRange) -> dict[str, list]:
        categories = {}
        for feature in self.features:
            if feature.type != "categorical":
                continue
            value = self._category(feature)
            count = sa.func.count().label("n")
            statement = (
                # count() OVER () of a grouped query: how many distinct values there are.
                sa.select(value, count, sa.func.count().over().label("distinct"))
                .where(*self._in_window(reference), value.is_not(None))
                .group_by(value)
                .order_by(count.desc(), self._tie_break(feature))
                .limit(feature.effective_top_k)
            )
            rows = [(dialects.from_bytes(r[0]), *r[1:]) for r in self._execute(connection, statement)]
            categories[feature.column] = binning.top_categories([r[:2] for r in rows], feature.effective_top_k)
            self._warn_many_categories(feature, rows[0][2] if rows else 0)
        return categories

    def _warn_many_categories(self, feature: Feature, distinct: int) -> None:
        """Say once that a column has more values than it can ever watch (all but top_k are "other")."""
        if distinct <= feature.effective_top_k or feature.column in self._warned:
            return
        self._warned.add(feature.column)
        column_type = (self.reader.column_types or {}).get(feature.column)
        hint = f"; its type is {column_type}: is it numeric?" if is_number(column_type) else ""
        # The column and counts are in the text too: without a log setup (a notebook, driftmon.compare)
        # only the text is shown.
        log.warning("categorical column %r has %s distinct values, more than top_k %s%s", feature.column,
                    f"{distinct:,}", feature.effective_top_k, hint, extra={
            "event": "source.many_categories", "monitor": self.monitor.name, "table": self.source.table,
            "column": feature.column, "distinct": distinct, "top_k": feature.effective_top_k})

    def _tie_break(self, feature: Feature) -> sa.ColumnElement:
        # Ties go by value ascending in code-point order, as Python sorts and
        # SQLite compares; PostgreSQL's locale collation would order otherwise.
        value = self.table.c[feature.column]
        column_type = (self.reader.column_types or {}).get(feature.column)
        if self.engine.dialect.name == "postgresql" and isinstance(column_type, sa.String):
            return value.collate("C")
        return self._category(feature)
