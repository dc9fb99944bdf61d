"""``check-config --connect`` for a segmented monitor: what its segments would be.

Membership comes from the reference range (README, "Segments"): the
``segments.max`` largest combinations of the ``by`` columns are segments of
their own, every other combination is pooled as ``__other__``, and a row with
NULL in any ``by`` column is ``__missing__``. Before a run cuts them, this says
how many distinct combinations the reference holds, how many (and how many
rows) ``__other__`` would pool, and how many rows are ``__missing__``, so a
``by`` column with thousands of values, or one that is always NULL, shows up
here and not as one huge ``__other__`` or ``__missing__`` segment at 3 a.m.

Two cheap statements over the reference range, filtered as the runs filter
it: one aggregate row (rows, non-NULL values per ``by`` column, rows with a
NULL), and the segments' sizes, largest first, cut at ``max`` (its window count
is the number of distinct combinations). The sizes of the ``max`` largest do not
depend on how ties are broken, so the rows pooled need no tie-break here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from driftmon.commands.setup_checks import CheckReport
from driftmon.config import Config, MonitorSettings
from driftmon.errors import SourceError
from driftmon.sources import dialects
from driftmon.sources.profile import MISSING, OTHER
from driftmon.sources.sql import equality_filters, in_range, source_table
from driftmon.windows import TimeRange, current_window, reference_range


def by_paths(config: Config, index: int) -> list[tuple[str, str]]:
    """(key path, column) of each ``segments.by`` column: the monitor's own key, or the defaults' it inherits."""
    monitor = config.monitors[index]
    segments = monitor.segments if "segments" in monitor.model_fields_set else config.defaults.segments
    if segments is None:
        return []
    if "segments" in monitor.model_fields_set:
        return [(f"monitors[{index}].segments.by[{k}]", column) for k, column in enumerate(segments.by)]
    return [(f"defaults.segments.by[{k}] (inherited by monitors[{index}])", column)
            for k, column in enumerate(segments.by)]


@dataclass(frozen=True)
class SegmentCensus:
    """The reference range seen through a monitor's segments."""

    rows: int  # every row of the range
    non_null: tuple[int, ...]  # per by column, rows where it is not NULL
    missing: int  # rows with NULL in some by column: __missing__
    distinct: int  # distinct combinations of the by columns among the other rows
    largest: tuple[int, ...]  # rows of the max largest combinations, largest first

    @property
    def pooled(self) -> int:
        """Combinations pooled into ``__other__``."""
        return max(0, self.distinct - len(self.largest))

    @property
    def pooled_rows(self) -> int:
        return self.rows - self.missing - sum(self.largest)


def check_segments(config: Config, index: int, monitor: MonitorSettings, engine: Engine, now: datetime,
                   report: CheckReport) -> None:
    """Note what the reference's segments would be; warn about a ``by`` column that is only NULL there."""
    from driftmon.sources import open_source

    if monitor.segments is None:
        return
    reference = reference_range(monitor.reference, current_window(monitor.schedule, monitor.window.size, now))
    reader = open_source(monitor, engine).reader
    try:
        with reader.reading("check-config --connect, segments") as connection:
            census = count_segments(connection, monitor, reader, reference)
    except SourceError as exc:
        report.problems.append(f"monitors[{index}].source: {exc}")
        return
    report.notes.append(describe(monitor, census))
    if census.rows == 0:
        return  # check_rows reports the empty reference
    report.warnings.extend(
        f"{path}: column {column!r} is NULL in every row of the reference range {reference}: every row would "
        f"be in the {MISSING} segment, so no segment of its own would be compared"
        for (path, column), count in zip(by_paths(config, index), census.non_null, strict=True) if count == 0)


def count_segments(connection: Connection, monitor: MonitorSettings, reader, reference: TimeRange) -> SegmentCensus:
    """Both statements over ``reference``: the aggregate row, then the largest segments' sizes."""
    source, dialect = monitor.source, connection.dialect.name
    by = list(monitor.segments.by)
    table = source_table(source.table, source.schema_, [source.timestamp_column, *source.where, *by])
    filters = [in_range(dialect, table.c[source.timestamp_column], reference, reader.epoch),
               *equality_filters(table, source.where, dialect)]
    values = [grouped_value(dialect, table.c[c], (reader.column_types or {}).get(c)) for c in by]
    any_null = sa.or_(*(table.c[c].is_(None) for c in by))
    totals = sa.select(sa.func.count(), *(sa.func.count(table.c[c]) for c in by),
                       sa.func.coalesce(sa.func.sum(sa.case((any_null, 1), else_=0)), 0)).where(*filters)
    rows, *non_null, missing = (int(v) for v in connection.execute(totals).one())
    size = sa.func.count()
    largest = (sa.select(size.label("n"), sa.func.count().over().label("distinct"))
               .where(*filters, *(table.c[c].is_not(None) for c in by))
               .group_by(*values).order_by(size.desc()).limit(monitor.segments.max))
    found = connection.execute(largest).all()
    return SegmentCensus(rows=rows, non_null=tuple(non_null), missing=missing,
                         distinct=int(found[0][1]) if found else 0, largest=tuple(int(n) for n, _ in found))


def grouped_value(dialect: str, column: sa.ColumnElement, column_type) -> sa.ColumnElement:
    """A ``by`` column grouped as the runs group it: text byte for byte where a collation would merge values."""
    if dialects.is_portable(dialect) and isinstance(column_type, sa.String):
        return dialects.exact_text(dialect, column)
    return column


def describe(monitor: MonitorSettings, census: SegmentCensus) -> str:
    """``m: segments by region: 7 distinct value(s) in the reference, ...``, one line."""
    by = monitor.segments.by
    what = "value(s)" if len(by) == 1 else "combination(s)"
    named = by[0] if len(by) == 1 else "(" + ", ".join(by) + ")"
    pooled = f"{census.pooled:,} pooled into {OTHER}"
    if census.pooled:
        pooled += f" ({census.pooled_rows:,} row(s), {_share(census.pooled_rows, census.rows)} of the reference)"
    nulls = f"NULL {by[0]}" if len(by) == 1 else "a NULL in " + " or ".join(by)
    return (f"{monitor.name}: segments by {named}: {census.distinct:,} distinct {what} in the reference, "
            f"{len(census.largest):,} segment(s) of their own (segments.max {monitor.segments.max}), "
            f"{pooled}; {census.missing:,} row(s) with {nulls} in {MISSING} ({_share(census.missing, census.rows)})")


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "0 %"
