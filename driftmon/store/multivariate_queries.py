"""Reads and writes of the multivariate tables (driftmon/store/models.py: MultivariateFit,
MultivariateSlice, MultivariateResult). Writes run inside the run's transaction."""

from __future__ import annotations

from datetime import datetime
from functools import cache

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from driftmon.store.models import MultivariateFit, MultivariateResult, MultivariateSlice
from driftmon.windows import TimeRange

_fits = MultivariateFit.__table__
_slices = MultivariateSlice.__table__
_results = MultivariateResult.__table__
RESULT_FIELDS = tuple(c.name for c in _results.columns if c.name != "id")


def stored_fit(connection: Connection, monitor: str) -> dict | None:
    row = connection.execute(sa.select(_fits).where(_fits.c.monitor == monitor)).mappings().first()
    return dict(row) if row else None


def slice_versions(connection: Connection, monitor: str, fit_key: str,
                   span: TimeRange) -> dict[datetime, tuple[datetime, bool]]:
    """``{slice_start: (counted_at, sealed)}`` of the stored slices in ``span``."""
    found = connection.execute(
        sa.select(_slices.c.slice_start, _slices.c.counted_at, _slices.c.sealed)
        .where(_slices.c.monitor == monitor, _slices.c.fit_key == fit_key,
               _slices.c.slice_start >= span.start, _slices.c.slice_start < span.end))
    return {start: (counted, bool(sealed)) for start, counted, sealed in found}


def load_slices(connection: Connection, monitor: str, fit_key: str, starts: list[datetime]) -> dict[datetime, dict]:
    """The stored rows of these slices: ``{slice_start: row}``."""
    if not starts:
        return {}
    found = connection.execute(
        sa.select(_slices).where(_slices.c.monitor == monitor, _slices.c.fit_key == fit_key,
                                 _slices.c.slice_start >= min(starts), _slices.c.slice_start <= max(starts)))
    wanted = set(starts)
    return {row["slice_start"]: dict(row) for row in found.mappings() if row["slice_start"] in wanted}


def _dialect(connection: Connection):
    return postgresql if connection.dialect.name == "postgresql" else sqlite


@cache
def _fit_upsert(dialect):
    statement = dialect.insert(_fits)
    return statement.on_conflict_do_update(
        index_elements=["monitor"], set_={c.name: statement.excluded[c.name] for c in _fits.columns
                                          if c.name != "monitor"})


@cache
def _slice_upsert(dialect):
    statement = dialect.insert(_slices)
    return statement.on_conflict_do_update(
        index_elements=["monitor", "fit_key", "slice_start"],
        set_={name: statement.excluded[name] for name in ("slice_end", "sums", "rows", "sealed", "counted_at")})


@cache
def _result_upsert(dialect):
    statement = dialect.insert(_results)
    return statement.on_conflict_do_update(
        index_elements=["monitor", "window_end"],
        set_={name: statement.excluded[name] for name in RESULT_FIELDS if name not in ("monitor", "window_end")})


def write_multivariate(connection: Connection, monitor: str, fit_row: dict | None, slice_rows: list[dict],
                       ended_by: datetime | None, result_row: dict | None) -> None:
    """The run's fit (when new), its slices, the retention delete and the window's result."""
    dialect = _dialect(connection)
    if fit_row is not None:
        connection.execute(_fit_upsert(dialect), fit_row)
        # Slices of earlier fits serve no window any more.
        connection.execute(_slices.delete().where(_slices.c.monitor == monitor,
                                                  _slices.c.fit_key != fit_row["fit_key"]))
    if slice_rows:
        connection.execute(_slice_upsert(dialect), slice_rows)
    if ended_by is not None:
        connection.execute(_slices.delete().where(_slices.c.monitor == monitor, _slices.c.slice_end <= ended_by))
    if result_row is not None:
        connection.execute(_result_upsert(dialect), result_row)


def results_between(connection: Connection, monitor: str, start: datetime | None = None,
                    end: datetime | None = None) -> list[dict]:
    """A monitor's stored multivariate results by window end, oldest first."""
    statement = sa.select(_results).where(_results.c.monitor == monitor)
    if start is not None:
        statement = statement.where(_results.c.window_end > start)
    if end is not None:
        statement = statement.where(_results.c.window_end <= end)
    return [dict(r) for r in connection.execute(statement.order_by(_results.c.window_end)).mappings()]


def newest_results(connection: Connection) -> list[dict]:
    """Each monitor's newest multivariate result (the metrics at start-up)."""
    newest = (sa.select(_results.c.monitor, sa.func.max(_results.c.window_end).label("end"))
              .group_by(_results.c.monitor).subquery())
    statement = sa.select(_results).join(
        newest, sa.and_(_results.c.monitor == newest.c.monitor, _results.c.window_end == newest.c.end))
    return [dict(r) for r in connection.execute(statement).mappings()]


def delete_results_after(connection: Connection, monitor: str, after: datetime) -> int:
    """``db delete-windows``: the multivariate results of the windows ending after ``after``."""
    return connection.execute(_results.delete().where(_results.c.monitor == monitor,
                                                      _results.c.window_end > after)).rowcount


def delete_fit_state(connection: Connection, monitor: str) -> int:
    """``db reset-reference``: the fit (it is the reference's) and its slices; the next run fits again."""
    slices = connection.execute(_slices.delete().where(_slices.c.monitor == monitor)).rowcount
    return slices + connection.execute(_fits.delete().where(_fits.c.monitor == monitor)).rowcount
