"""A run's writes in as few statements as the dialect allows (issue #25: the store had to fit the cycle).

One cycle writes its new slice rows, drops the slices no window needs any more, stores a run
row and its result rows for each window it computed (this one, and stored windows that late
rows changed), and the window's health row. Written table by table that took seven statements
and 12 ms on PostgreSQL, a round trip each; all of it is one transaction, the caller's.

PostgreSQL: ONE statement of data-modifying CTEs, every set of rows read from a JSON document
(``json_to_recordset``): the run rows' RETURNING ids are joined to their results by window
end. The CTEs share one snapshot and none sees another's rows, so no two may touch the same
row: the retention delete and the slice upsert are kept apart by one predicate, which means
the same on a stored and a new row of one key (a slice's end is its start plus the length its
``profile_key`` fingerprints). SQLite has no DML in CTEs: one call per table (executemany), the
run rows in one INSERT ... RETURNING. A value JSON cannot hold exactly (NaN) takes that path on
PostgreSQL too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from driftmon.store.health_queries import HEALTH_FIELDS
from driftmon.store.models import Result, Run, SliceCounts, WindowHealth

_runs = Run.__table__
_results = Result.__table__
_slices = SliceCounts.__table__
_health = WindowHealth.__table__
RUN_FIELDS = tuple(c.name for c in _runs.columns if c.name != "id")
RESULT_FIELDS = tuple(c.name for c in _results.columns if c.name != "id")
SLICE_FIELDS = tuple(c.name for c in _slices.columns)
# What a re-run of the same window replaces; the key columns stay.
RESULT_KEY = ("monitor", "column", "segment_key", "window_end")
RESULT_UPDATES = tuple(name for name in RESULT_FIELDS if name not in RESULT_KEY)
SLICE_KEY = ("monitor", "profile_key", "slice_start")
SLICE_UPDATES = ("slice_end", "counts", "rows", "sealed", "counted_at")
HEALTH_KEY = ("monitor", "window_end")


@dataclass(frozen=True)
class WindowRows:
    """One window's run row and its result rows (their ``run_id`` is the run row's, filled in here)."""

    run: dict
    results: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class SliceRows:
    """Slice rows to upsert, and the retention delete that goes with them (``Repository.delete_slices``)."""

    monitor: str
    rows: list[dict]
    ended_by: datetime  # slices that ended by then go,
    keep_profile: str  # and those of other profiles
    overwrite_sealed: bool = False


@dataclass(frozen=True)
class RunWrite:
    """Everything one run stores."""

    windows: list[WindowRows]
    slices: SliceRows | None = None
    health: dict | None = None


def write_run(connection: Connection, write: RunWrite) -> list[int]:
    """Store ``write`` inside the caller's transaction; the run ids, in the order of ``write.windows``."""
    if connection.dialect.name == "postgresql":
        documents = _documents(write)
        if documents is not None:
            return _write_in_one(connection, write, documents)
    return _write_by_table(connection, write)


# --- PostgreSQL: one statement -------------------------------------------------


def _documents(write: RunWrite) -> dict | None:
    """The JSON documents of the one statement, or None where it cannot serve: a value JSON cannot
    hold, or two windows with one end (their results would not know their run row)."""
    ends = [w.run["window_end"] for w in write.windows]
    if len(set(ends)) != len(ends):
        return None
    documents = {"runs": json_rows([{n: w.run.get(n) for n in RUN_FIELDS} for w in write.windows]),
                 "results": json_rows([{"segment_key": "", **r} for w in write.windows for r in w.results])}
    if write.slices is not None:
        documents["slices"] = json_rows(write.slices.rows)
    return None if None in documents.values() else documents


def _write_in_one(connection: Connection, write: RunWrite, documents: dict) -> list[int]:
    parameters = dict(documents)
    if write.slices is not None:
        parameters.update(monitor=write.slices.monitor, ended_by=write.slices.ended_by,
                          keep_profile=write.slices.keep_profile, overwrite_sealed=write.slices.overwrite_sealed)
    if write.health is not None:
        parameters.update({f"health_{name}": write.health.get(name) for name in HEALTH_FIELDS})
    statement = _one_statement(write.slices is not None, write.health is not None)
    ids = dict((_utc(end), run_id) for run_id, end in connection.execute(statement, parameters))
    return [ids[_utc(w.run["window_end"])] for w in write.windows]


@cache
def _one_statement(slices: bool, health: bool) -> sa.Select:
    """WITH slices, retention, runs, results, health ... SELECT the run ids: built once per shape."""
    runs = _insert_from_json(_runs, RUN_FIELDS, "runs").returning(_runs.c.id, _runs.c.window_end).cte("new_runs")
    ctes = [_results_from_json(runs).cte("new_results")]
    if slices:
        ctes += [_slice_upsert_from_json().cte("new_slices"), _expired_slices().cte("expired")]
    if health:
        values = {name: sa.bindparam(f"health_{name}", type_=_health.c[name].type) for name in HEALTH_FIELDS}
        ctes.append(_health_conflict(postgresql.insert(_health).values(values)).cte("new_health"))
    return sa.select(runs.c.id, runs.c.window_end).add_cte(*ctes)


def _recordset(table: sa.Table, names: tuple[str, ...], document: str):
    """The rows of the JSON array bound as ``document``, typed as ``table``'s columns (json, not
    jsonb, which would reorder the keys of a stored object)."""
    rows = sa.func.json_to_recordset(sa.cast(sa.bindparam(document), postgresql.JSON)).table_valued(
        *(sa.column(name, table.c[name].type) for name in names))
    return rows.render_derived(name=f"{document}_json", with_types=True)


def _insert_from_json(table: sa.Table, names: tuple[str, ...], document: str):
    rows = _recordset(table, names, document)
    return postgresql.insert(table).from_select(names, sa.select(*(rows.c[n] for n in names)))


@cache
def results_from_json() -> sa.Executable:
    """Result rows upserted from the JSON document ``results`` (``Repository.upsert_results``): a
    segmented monitor's 1,273 rows a cycle took 340 ms by executemany, 0.25 ms a row."""
    return _upserted(_insert_from_json(_results, RESULT_FIELDS, "results"))


def _results_from_json(runs) -> sa.Executable:
    """This run's result rows, each given the id of its window's new run row. A subquery, not a
    join: the rows go in (and take their ids) in the document's order, the columns' order that
    ``Repository.window_results`` reads back; a hash join may hand them over in another."""
    names = tuple(n for n in RESULT_FIELDS if n != "run_id")
    rows = _recordset(_results, names, "results")
    run_id = sa.select(runs.c.id).where(runs.c.window_end == rows.c.window_end).scalar_subquery()
    select = sa.select(run_id, *(rows.c[n] for n in names))
    return _upserted(postgresql.insert(_results).from_select(("run_id", *names), select))


def _upserted(statement):
    return statement.on_conflict_do_update(
        index_elements=list(RESULT_KEY), set_={name: statement.excluded[name] for name in RESULT_UPDATES})


def _slice_upsert_from_json() -> sa.Executable:
    """The new slice rows that the retention delete spares; the others would be deleted at once."""
    rows = _recordset(_slices, SLICE_FIELDS, "slices")
    kept = sa.select(*(rows.c[n] for n in SLICE_FIELDS)).where(sa.not_(_expired(rows.c)))
    statement = postgresql.insert(_slices).from_select(SLICE_FIELDS, kept)
    return _slice_conflict(statement, sa.bindparam("overwrite_sealed", type_=sa.Boolean))


@cache
def _expired_slices() -> sa.Executable:
    return _slices.delete().where(_expired(_slices.c))


def _expired(columns) -> sa.ColumnElement[bool]:
    """Repository.delete_slices's predicate, on stored or incoming rows."""
    return sa.and_(columns.monitor == sa.bindparam("monitor", type_=_slices.c.monitor.type),
                   sa.or_(columns.slice_end <= sa.bindparam("ended_by", type_=_slices.c.slice_end.type),
                          columns.profile_key != sa.bindparam("keep_profile", type_=_slices.c.profile_key.type)))


# --- statements of both dialects (built once: their ON CONFLICT clauses took 2.4 ms a write to build)


@cache
def slice_upsert(dialect, overwrite_sealed: bool) -> sa.Executable:
    """Slice rows inserted or updated: a sealed slice is replaced only by a recount
    (``overwrite_sealed``), and an older count never replaces a newer one."""
    return _slice_conflict(dialect.insert(_slices), sa.true() if overwrite_sealed else sa.false())


def _slice_conflict(statement, overwrite_sealed):
    newer = _slices.c.counted_at <= statement.excluded.counted_at
    return statement.on_conflict_do_update(
        index_elements=list(SLICE_KEY), set_={name: statement.excluded[name] for name in SLICE_UPDATES},
        where=sa.and_(newer, sa.or_(overwrite_sealed, _slices.c.sealed == sa.false())))


@cache
def results_upsert(dialect) -> sa.Executable:
    """Result rows by executemany: a re-run of a window replaces its rows, never duplicates them."""
    return _upserted(dialect.insert(_results))


@cache
def health_upsert(dialect) -> sa.Executable:
    """One health row per (monitor, window end): a re-run replaces it."""
    return _health_conflict(dialect.insert(_health))


def _health_conflict(statement):
    return statement.on_conflict_do_update(
        index_elements=list(HEALTH_KEY),
        set_={name: statement.excluded[name] for name in HEALTH_FIELDS if name not in HEALTH_KEY})


# --- SQLite (and PostgreSQL rows JSON cannot hold): one call per table ------------------


def _write_by_table(connection: Connection, write: RunWrite) -> list[int]:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    if write.slices is not None:
        if write.slices.rows:
            connection.execute(slice_upsert(dialect, write.slices.overwrite_sealed), write.slices.rows)
        connection.execute(_expired_slices(), {
            "monitor": write.slices.monitor, "ended_by": write.slices.ended_by,
            "keep_profile": write.slices.keep_profile})
    ids = _insert_runs(connection, write.windows)
    results = [{**row, "run_id": run_id} for w, run_id in zip(write.windows, ids, strict=True) for row in w.results]
    if results:
        connection.execute(results_upsert(dialect), results)
    if write.health is not None:
        connection.execute(health_upsert(dialect), {name: write.health.get(name) for name in HEALTH_FIELDS})
    return ids


def _insert_runs(connection: Connection, windows: list[WindowRows]) -> list[int]:
    """Every run row in one INSERT ... RETURNING; the ids matched to the windows by their ends.
    Asking SQLAlchemy for the rows' order instead costs a statement per row on SQLite."""
    ends = [_utc(w.run["window_end"]) for w in windows]
    ordered = len(set(ends)) != len(ends)  # not in a pipeline's run: its windows have distinct ends
    insert = _runs.insert().returning(_runs.c.id, _runs.c.window_end, sort_by_parameter_order=ordered)
    # One row (a steady cycle) as a plain INSERT ... RETURNING: SQLAlchemy's batching of many
    # rows (insertmanyvalues) costs more than it saves on one.
    rows = connection.execute(insert, windows[0].run if len(windows) == 1 else [w.run for w in windows]).all()
    if ordered:
        return [run_id for run_id, _ in rows]
    ids = {_utc(end): run_id for run_id, end in rows}
    return [ids[end] for end in ends]


# --- JSON documents ------------------------------------------------------------------


def json_rows(rows: list[dict]) -> str | None:
    """The rows as one JSON array (None if a value has no exact JSON form, a NaN or infinity)."""
    try:
        return json.dumps(rows, default=_json_value, allow_nan=False)
    except ValueError:
        return None


def _json_value(value: object) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to a UTC column")
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)
