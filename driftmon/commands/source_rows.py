"""``check-config --connect``: are there rows where the runs will look?

Counts the rows of the reference range and of the latest window with the
sources' own window filter (``in_range`` and ``equality_filters``, one cheap
``COUNT(*)`` each) and reads the timestamp column's newest value. An empty
reference is a problem: every run would end ``insufficient_data``. An empty
latest window is a warning: traffic may pause, or rows land in batches. A
newest row far from now (older than the larger of the window and the
reference, or in the future) is a warning, with the likely cause: epoch
milliseconds read as seconds lie in the year 55,000.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from driftmon.commands.setup_checks import CheckReport
from driftmon.config import MonitorSettings
from driftmon.errors import SourceError
from driftmon.sources.sql import EPOCH_UNITS, Epoch, equality_filters, in_range, source_table
from driftmon.windows import TimeRange, as_utc, current_window, reference_range

_CLOCK_SKEW = timedelta(minutes=5)  # newer rows than now by less than this are not "in the future"
_YEAR_SECONDS = 31_556_952  # the Gregorian mean year
_PLAUSIBLE = 20 * _YEAR_SECONDS  # a timestamp unit is suggested when it places the newest row this near now
_DATETIME_SECONDS = (datetime(1, 1, 1, tzinfo=UTC).timestamp(), datetime(9999, 12, 31, tzinfo=UTC).timestamp())


def check_rows(index: int, monitor: MonitorSettings, engine: Engine, now: datetime, report: CheckReport) -> None:
    """Count the reference range's and the latest window's rows, and find the newest timestamp."""
    from driftmon.sources import open_source

    window = current_window(monitor.schedule, monitor.window.size, now)
    reference = reference_range(monitor.reference, window)
    reader = open_source(monitor, engine).reader
    try:
        with reader.reading("check-config --connect") as connection:
            reference_rows = count_rows(connection, monitor, reader.epoch, reference)
            window_rows = count_rows(connection, monitor, reader.epoch, window)
            newest = newest_timestamp(connection, monitor, reader.epoch)
    except SourceError as exc:
        report.problems.append(f"monitors[{index}].source: {exc}")
        return
    report.notes.append(f"{monitor.name}: {reference_rows:,} row(s) in the reference {reference}, "
                        f"{window_rows:,} in the latest window {window}")
    far = max(monitor.window.size, reference.end - reference.start)
    newest_text = describe_newest(newest, reader.epoch, now, far)
    where = " matching source.where" if monitor.source.where else ""
    if reference_rows == 0:
        report.problems.append(f"monitors[{index}].reference: no rows of table {monitor.source.table!r}{where} in "
                               f"the reference range {reference}: every run would end insufficient_data; "
                               f"{newest_text.summary}")
    if window_rows == 0:
        report.warnings.append(f"monitors[{index}].window: no rows{where} in the latest window {window}: "
                               f"its run would end insufficient_data; {newest_text.summary}")
    elif reference_rows and newest_text.warning:  # rows on both sides, yet a newest row in the future
        report.warnings.append(f"monitors[{index}].source.timestamp_column: {newest_text.warning}")
    report.warnings.extend(_below_min_samples(index, monitor, {"reference range": reference_rows,
                                                               "latest window": window_rows}))


def count_rows(connection: Connection, monitor: MonitorSettings, epoch: Epoch | None, span: TimeRange) -> int:
    """``COUNT(*)`` of the source's rows in ``span``, filtered as its runs filter them."""
    source, dialect = monitor.source, connection.dialect.name
    table = source_table(source.table, source.schema_, [source.timestamp_column, *source.where])
    statement = sa.select(sa.func.count()).select_from(table).where(
        in_range(dialect, table.c[source.timestamp_column], span, epoch),
        *equality_filters(table, source.where, dialect))
    return int(connection.execute(statement).scalar_one())


def newest_timestamp(connection: Connection, monitor: MonitorSettings, epoch: Epoch | None) -> float | None:
    """The newest row's time in seconds since the epoch (UTC); None when there are no rows."""
    source, dialect = monitor.source, connection.dialect.name
    table = source_table(source.table, source.schema_, [source.timestamp_column, *source.where])
    statement = sa.select(sa.func.max(table.c[source.timestamp_column])).select_from(table).where(
        *equality_filters(table, source.where, dialect))
    return epoch_seconds(connection.execute(statement).scalar_one(), epoch)


def epoch_seconds(value: object, epoch: Epoch | None) -> float | None:
    """A driver's timestamp value in seconds since the epoch: numbers in ``epoch``'s unit, naive times UTC.

    Numbers may lie beyond the years datetime can hold (epoch ms read as seconds): kept as floats.
    """
    if value is None:
        return None
    if epoch is not None and isinstance(value, int | float | Decimal):
        return float(value) / epoch.unit
    if isinstance(value, datetime):
        return as_utc(value).timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    if isinstance(value, str):  # SQLite text, in any shape in_range reads
        try:
            return as_utc(datetime.fromisoformat(value.strip())).timestamp()
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class NewestRow:
    """What the newest timestamp says: a summary for empty ranges, a warning when it lies far from now."""

    summary: str
    warning: str | None = None


def describe_newest(newest: float | None, epoch: Epoch | None, now: datetime, far: timedelta) -> NewestRow:
    """The newest row's time, and a warning (with the likely cause) when it lies far from ``now``."""
    if newest is None:
        return NewestRow("the table has no rows at all")
    shown = format_moment(newest)
    offset = newest - now.timestamp()
    hint = unit_hint(newest, epoch, now)
    if offset > _CLOCK_SKEW.total_seconds():
        cause = hint or ("; naive timestamps are read as UTC: are they local time?" if epoch is None else "")
        warning = f"the newest row is at {shown}, {_duration(offset)} in the future{cause}"
        return NewestRow(f"the newest row is at {shown}, in the future{cause}", warning)
    summary = f"the newest row is at {shown}, {_duration(max(0.0, -offset))} ago"
    if -offset > far.total_seconds():
        warning = f"{summary} (more than {far}, the larger of the window and the reference){hint}"
        return NewestRow(summary + hint, warning)
    return NewestRow(summary)


def unit_hint(newest: float, epoch: Epoch | None, now: datetime) -> str:
    """``; as ms it would be 2024-...: set source.timestamp_unit: ms`` when another unit fits now."""
    if epoch is None:
        return ""
    raw = newest * epoch.unit
    fits = [(abs(raw / scale - now.timestamp()), name, raw / scale) for name, scale in EPOCH_UNITS.items()
            if scale != epoch.unit and abs(raw / scale - now.timestamp()) < _PLAUSIBLE]
    if not fits:
        return ""
    _, name, seconds = min(fits)
    return f"; read as {name} it would be {format_moment(seconds)}: set source.timestamp_unit: {name}"


def format_moment(seconds: float) -> str:
    """ISO 8601 where datetime can hold it, else the year (epoch ms read as seconds: year 55,000)."""
    low, high = _DATETIME_SECONDS
    if low <= seconds <= high:
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
    return f"the year {int(1970 + seconds / _YEAR_SECONDS):,}"


def _duration(seconds: float) -> str:
    if seconds >= 2 * _YEAR_SECONDS:
        return f"{seconds / _YEAR_SECONDS:,.0f} years"
    return str(timedelta(seconds=round(seconds)))


def _below_min_samples(index: int, monitor: MonitorSettings, rows: dict[str, int]) -> list[str]:
    """Events ranges with rows, but fewer than min_samples: every column would be insufficient_data."""
    if monitor.source.kind != "events":
        return []  # a histogram row is a bin of many samples
    return [f"monitors[{index}].min_samples: the {what} has {count:,} row(s), fewer than min_samples "
            f"({monitor.min_samples}): every column would be insufficient_data"
            for what, count in rows.items() if 0 < count < monitor.min_samples]
