"""The results queries of data health (README, "Data health"): window volume and freshness,
and each monitor's source schema. Tables in driftmon/store/models.py (WindowHealth, SourceSchema)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection

from driftmon.store.models import SourceSchema, WindowHealth
from driftmon.windows import TimeRange, as_utc

_health = WindowHealth.__table__
_schemas = SourceSchema.__table__
# Everything but the surrogate id: what callers write and read.
HEALTH_FIELDS = tuple(c.name for c in _health.columns if c.name != "id")


def save_window_health(connection: Connection, row: dict) -> None:
    """Store one window's health row, replacing the stored one of the same window.

    Delete-then-insert inside the run's transaction: atomic on every dialect, and a
    window has one row, so there is nothing to batch.
    """
    connection.execute(_health.delete().where(
        _health.c.monitor == row["monitor"], _health.c.window_end == row["window_end"]))
    connection.execute(_health.insert(), [{name: row.get(name) for name in HEALTH_FIELDS}])


def latest_window_health(connection: Connection) -> list[dict]:
    """The newest window's health row of every monitor, with the newest row time any run saw."""
    newest = (sa.select(_health.c.monitor, sa.func.max(_health.c.window_end).label("end"),
                        sa.func.max(_health.c.newest_row_at).label("newest"))
              .group_by(_health.c.monitor).subquery())
    statement = (sa.select(*(_health.c[name] for name in HEALTH_FIELDS), newest.c.newest)
                 .join(newest, sa.and_(_health.c.monitor == newest.c.monitor, _health.c.window_end == newest.c.end)))
    rows = []
    for row in connection.execute(statement).mappings():
        found = dict(row)
        # The newest row seen by ANY window: a quiet last window must not hide older news.
        found["newest_row_at"] = _utc(found.pop("newest"))
        rows.append(found)
    return rows


def window_health_history(connection: Connection, monitor: str, start: datetime | None = None,
                          end: datetime | None = None) -> list[dict]:
    """A monitor's stored health rows, oldest window first, within [start, end) of window ends."""
    statement = sa.select(*(_health.c[name] for name in HEALTH_FIELDS)).where(_health.c.monitor == monitor)
    if start is not None:
        statement = statement.where(_health.c.window_end >= start)
    if end is not None:
        statement = statement.where(_health.c.window_end < end)
    return [dict(row) for row in connection.execute(statement.order_by(_health.c.window_end)).mappings()]


def stale_health_ends(connection: Connection, monitor: str, span: TimeRange, fingerprint: str) -> set[datetime]:
    """Ends of the windows in ``span`` whose health row was made by other settings (a changed
    volume check): a backfill computes them again. Windows without one (stored before health
    rows existed) are not stale: their drift results stand."""
    statement = sa.select(_health.c.window_end).where(
        _health.c.monitor == monitor, _health.c.window_end > span.start, _health.c.window_end <= span.end,
        sa.or_(_health.c.fingerprint.is_(None), _health.c.fingerprint != fingerprint))
    return {_utc(end) for end in connection.execute(statement).scalars()}


def delete_window_health_after(connection: Connection, monitor: str, after: datetime) -> int:
    return connection.execute(_health.delete().where(
        _health.c.monitor == monitor, _health.c.window_end > after)).rowcount


def load_schema(connection: Connection, monitor: str) -> dict | None:
    row = connection.execute(sa.select(_schemas).where(_schemas.c.monitor == monitor)).mappings().first()
    return dict(row) if row is not None else None


def save_schema(connection: Connection, row: dict) -> None:
    """Store a monitor's schema row (baseline, status, changes), replacing the stored one."""
    connection.execute(_schemas.delete().where(_schemas.c.monitor == row["monitor"]))
    connection.execute(_schemas.insert(), [{c.name: row.get(c.name) for c in _schemas.columns}])


def all_schemas(connection: Connection) -> list[dict]:
    return [dict(row) for row in connection.execute(sa.select(_schemas).order_by(_schemas.c.monitor)).mappings()]


def delete_schema(connection: Connection, monitor: str) -> int:
    return connection.execute(_schemas.delete().where(_schemas.c.monitor == monitor)).rowcount


def _utc(moment):
    return None if moment is None else as_utc(moment)
