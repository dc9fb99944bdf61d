"""What is stored, and its repairs: ``driftmon db status``, ``db delete-windows`` and
``db reset-reference`` (driftmon/commands/db.py), and the stored-state report
(driftmon/counting/stored_state.py)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection

from driftmon.store import health_queries, multivariate_queries
from driftmon.store.models import Lease, Result, Run, SliceCounts
from driftmon.store.models import ReferenceProfile as ProfileRow
from driftmon.store.stored_times import stored_utc, with_utc

_profiles = ProfileRow.__table__
_runs = Run.__table__
_results = Result.__table__
_leases = Lease.__table__
_slices = SliceCounts.__table__


def profile_inventory(connection: Connection, monitor: str | None = None) -> list[dict]:
    """One row per stored column profile, without its bins: monitor, column, range, hash, totals."""
    statement = sa.select(
        _profiles.c.monitor, _profiles.c.column, _profiles.c.reference_start, _profiles.c.reference_end,
        _profiles.c.config_hash, _profiles.c.total, _profiles.c.complete, _profiles.c.created_at,
    ).order_by(_profiles.c.monitor, _profiles.c.reference_end, _profiles.c.id)
    if monitor is not None:
        statement = statement.where(_profiles.c.monitor == monitor)
    return [with_utc(row) for row in connection.execute(statement).mappings()]

def slice_inventory(connection: Connection, monitor: str | None = None) -> list[dict]:
    """Per monitor and profile key: how many slices, their span, how many are sealed."""
    statement = sa.select(
        _slices.c.monitor, _slices.c.profile_key, sa.func.count().label("slices"),
        sa.func.min(_slices.c.slice_start).label("first_start"), sa.func.max(_slices.c.slice_end).label("last_end"),
        sa.func.sum(sa.case((_slices.c.sealed, 1), else_=0)).label("sealed"),
    ).group_by(_slices.c.monitor, _slices.c.profile_key).order_by(_slices.c.monitor, "first_start")
    if monitor is not None:
        statement = statement.where(_slices.c.monitor == monitor)
    return [with_utc(row) for row in connection.execute(statement).mappings()]

def result_inventory(connection: Connection, monitor: str | None = None) -> list[dict]:
    """Per monitor and results fingerprint: how many windows and rows, the first and last window end."""
    statement = sa.select(
        _results.c.monitor, _results.c.fingerprint,
        sa.func.count(sa.distinct(_results.c.window_end)).label("windows"),
        sa.func.count().label("rows"), sa.func.min(_results.c.window_end).label("first_end"),
        sa.func.max(_results.c.window_end).label("last_end"),
    ).group_by(_results.c.monitor, _results.c.fingerprint).order_by(_results.c.monitor, "first_end")
    if monitor is not None:
        statement = statement.where(_results.c.monitor == monitor)
    return [with_utc(row) for row in connection.execute(statement).mappings()]

def windows_after(connection: Connection, monitor: str, after: datetime) -> dict:
    """What ``delete_windows_after`` would delete: result rows, windows, run rows, the span."""
    results = sa.select(sa.func.count(), sa.func.count(sa.distinct(_results.c.window_end)),
                        sa.func.min(_results.c.window_end), sa.func.max(_results.c.window_end)).where(
        _results.c.monitor == monitor, _results.c.window_end > after)
    rows, windows, first, last = connection.execute(results).one()
    runs = connection.execute(sa.select(sa.func.count()).select_from(_runs).where(
        _runs.c.monitor == monitor, _runs.c.window_end > after)).scalar_one()
    return {"results": rows, "windows": windows, "runs": runs,
            "first_end": first and stored_utc(first), "last_end": last and stored_utc(last)}

def delete_windows_after(connection: Connection, monitor: str, after: datetime) -> dict:
    """Delete a monitor's results, runs and leases of the windows ending after ``after``."""
    deleted = {}
    for name, table in (("results", _results), ("runs", _runs), ("leases", _leases)):
        statement = table.delete().where(table.c.monitor == monitor, table.c.window_end > after)
        deleted[name] = connection.execute(statement).rowcount
    deleted["health"] = health_queries.delete_window_health_after(connection, monitor, after)
    deleted["multivariate"] = multivariate_queries.delete_results_after(connection, monitor, after)
    return deleted

def delete_reference_state(connection: Connection, monitor: str) -> dict:
    """Delete a monitor's reference profiles and slices, so that the next run counts them again."""
    deleted = {}
    for name, table in (("profiles", _profiles), ("slices", _slices)):
        deleted[name] = connection.execute(table.delete().where(table.c.monitor == monitor)).rowcount
    # The schema baseline is the table as the reference saw it: it goes with the reference.
    deleted["schema"] = health_queries.delete_schema(connection, monitor)
    deleted["multivariate"] = multivariate_queries.delete_fit_state(connection, monitor)
    return deleted
