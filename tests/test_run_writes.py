"""A run's store write (driftmon/store/run_writes.py): the rows it leaves are exactly those the
table-by-table write left, on-conflict rules included, and a failure in the middle leaves none."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from driftmon.sources.sql import statement_timeout
from driftmon.store.health_queries import save_window_health
from driftmon.store.models import Result, Run, SliceCounts, WindowHealth
from driftmon.store.repository import Repository
from driftmon.store.run_writes import RunWrite, SliceRows, WindowRows, write_run

END = datetime(2024, 3, 8, 12, tzinfo=UTC)
HOUR, MINUTE = timedelta(hours=1), timedelta(minutes=5)
CUTOFF = END - 3 * HOUR
EARLY, NOW = END - timedelta(minutes=1), END + timedelta(minutes=1)
TABLES = (Result.__table__, Run.__table__, SliceCounts.__table__, WindowHealth.__table__)
SURROGATES = {"id", "run_id"}  # compared through the run's window instead


def slice_row(start: datetime, counted_at: datetime, *, key: str = "keep", monitor: str = "m",
              sealed: bool = False, counts=None) -> dict:
    return {"monitor": monitor, "profile_key": key, "slice_start": start, "slice_end": start + MINUTE,
            "counts": counts if counts is not None else [int(start.minute), 2, 3], "rows": 6,
            "sealed": sealed, "counted_at": counted_at}


def run_row(end: datetime, trigger: str = "schedule") -> dict:
    return {"monitor": "m", "scheduled_at": end if trigger == "schedule" else None, "started_at": NOW,
            "finished_at": NOW, "window_start": end - HOUR, "window_end": end, "reference_start": end - 25 * HOUR,
            "reference_end": end - HOUR, "status": "ok", "error": None, "columns": 2, "rows_scanned": 1234,
            "duration_seconds": 0.0123, "trigger": trigger}


def result_row(end: datetime, column: str, kl: float, segment: dict | None = None) -> dict:
    return {"run_id": None, "monitor": "m", "column": column, "role": "feature", "window_start": end - HOUR,
            "window_end": end, "reference_start": end - 25 * HOUR, "reference_end": end - HOUR,
            "samples_current": 1000.0, "samples_reference": 24000.0, "missing_current": 3.0,
            "missing_ratio": 0.003, "kl": kl, "psi": kl * 2, "js": kl / 3, "statistic": "kl",
            "threshold_warning": 0.1, "threshold_critical": 0.25, "status": "ok", "computed_at": NOW,
            "p_value": 0.5, "q_value": 0.7, "labels": ["a", "b \"ä\""], "reference_counts": [1.0, 2.0],
            "current_counts": [3.0, 4.0], "fingerprint": "f" * 64, "segment": segment,
            "segment_key": ",".join(f"{k}={v}" for k, v in (segment or {}).items())}


def health(end: datetime, rows: float) -> dict:
    return {"monitor": "m", "window_start": end - HOUR, "window_end": end, "rows": rows, "reference_rows": 24000.0,
            "expected": 1000.0, "change": rows / 1000 - 1, "p_value": 0.2, "status": "ok", "threshold_warning": 0.5,
            "threshold_critical": 0.8, "newest_row_at": end - MINUTE, "computed_at": NOW, "fingerprint": "h" * 64}


def stored_before(connection) -> None:
    """What earlier runs left: slices the retention delete drops or keeps, results and a health
    row that this run replaces."""
    Repository().save_slices(connection, [
        slice_row(END - 2 * MINUTE, EARLY, sealed=True),  # sealed: only an overwrite replaces it
        slice_row(END - 3 * MINUTE, EARLY),  # open: replaced by a newer count
        slice_row(END - 4 * MINUTE, NOW + HOUR),  # counted later than this run: kept
        slice_row(CUTOFF - MINUTE, EARLY, sealed=True),  # ended by the cutoff: deleted
        slice_row(END - 6 * MINUTE, EARLY, key="old bins"),  # another profile's: deleted
        slice_row(CUTOFF - 2 * MINUTE, EARLY, monitor="other"),  # another monitor's: untouched
    ])
    late = END - HOUR
    run_id = Repository().insert_run(connection, run_row(late))
    Repository().upsert_results(connection, [{**result_row(late, c, 0.01), "run_id": run_id} for c in ("x", "y")])
    save_window_health(connection, health(END, 1.0))


def this_write(overwrite_sealed: bool, nan: bool = False) -> RunWrite:
    late, fresh = END - HOUR, [
        slice_row(END - MINUTE, NOW), slice_row(END - 2 * MINUTE, NOW, sealed=True, counts=[9, 9, 9]),
        slice_row(END - 3 * MINUTE, NOW, counts={"encoding": "x", "b": 1, "a": [2]}),
        slice_row(END - 4 * MINUTE, NOW, counts=[7, 7, 7]),
        slice_row(CUTOFF - 5 * MINUTE, NOW),  # ended by the cutoff: never kept
        slice_row(END - 7 * MINUTE, NOW, key="old bins"),  # another profile's: never kept
    ]
    windows = [WindowRows(run_row(late, "late_data"), [result_row(late, c, 0.2) for c in ("x", "y")]),
               WindowRows(run_row(END), [result_row(END, "x", 0.3), result_row(END, "y", 0.1 + 0.2),
                                         result_row(END, "x", 0.05, {"region": "D", "app": "web"})])]
    if nan:
        windows[1].results[0]["missing_ratio"] = math.nan
    return RunWrite(windows, SliceRows("m", fresh, CUTOFF, "keep", overwrite_sealed), health(END, 1100.0))


def table_by_table(connection, write: RunWrite) -> None:
    """The write as the pipeline made it before run_writes: a statement (or executemany) at a time."""
    repository = Repository()
    repository.save_slices(connection, write.slices.rows, overwrite_sealed=write.slices.overwrite_sealed)
    repository.delete_slices(connection, write.slices.monitor, write.slices.ended_by, write.slices.keep_profile)
    for window in write.windows:
        run_id = repository.insert_run(connection, window.run)
        repository.upsert_results(connection, [{**row, "run_id": run_id} for row in window.results])
    save_window_health(connection, write.health)


def everything(engine) -> dict[str, list]:
    """Every row of the four tables, surrogate ids left out; a result names its run by the run's window."""
    found = {}
    with engine.connect() as connection:
        windows = dict(connection.execute(sa.select(Run.__table__.c.id, Run.__table__.c.window_end)).all())
        for table in TABLES:
            rows = []
            for row in connection.execute(sa.select(table)).mappings():
                kept = {k: _comparable(v) for k, v in row.items() if k not in SURROGATES}
                if "run_id" in row:
                    kept["run_window"] = windows.get(row["run_id"])
                rows.append(tuple(sorted(kept.items(), key=lambda item: item[0])))
            found[table.name] = sorted(rows, key=repr)
        # Readers list a window's columns in the order of their ids (Repository.window_results).
        order = sa.select(Result.__table__.c.window_end, Result.__table__.c.column, Result.__table__.c.segment_key)
        found["result order"] = connection.execute(order.order_by(Result.__table__.c.id)).all()
    return found


def _comparable(value):
    # SQLite stores a NaN as NULL; PostgreSQL keeps it; either way both writes must agree.
    return "NaN" if isinstance(value, float) and math.isnan(value) else value


def written(engine, write_with, write: RunWrite, statements: list | None = None) -> dict[str, list]:
    with engine.begin() as connection:
        for table in TABLES:
            connection.execute(table.delete())
        stored_before(connection)
    counter = _counting(engine, statements)
    try:
        with engine.begin() as connection:
            write_with(connection, write)
    finally:
        sa.event.remove(engine, "before_cursor_execute", counter)
    return everything(engine)


def _counting(engine, statements: list | None):
    def count(connection, cursor, statement, parameters, context, executemany):
        if statements is not None:
            statements.append(statement)
    sa.event.listen(engine, "before_cursor_execute", count)
    return count


@pytest.mark.parametrize("overwrite_sealed", [False, True], ids=["steady", "recount"])
def test_the_rows_written_are_those_the_table_by_table_write_left(engine, overwrite_sealed):
    before = written(engine, table_by_table, this_write(overwrite_sealed))
    statements: list[str] = []
    after = written(engine, write_run, this_write(overwrite_sealed), statements)
    assert after == before
    slices = {(dict(r)["profile_key"], dict(r)["slice_start"]): dict(r) for r in after["slice_counts"]}
    assert len(slices) == 5 and (slices[("keep", END - 2 * MINUTE)]["counts"] == [9, 9, 9]) == overwrite_sealed
    assert slices[("keep", END - 3 * MINUTE)]["counts"] == {"encoding": "x", "b": 1, "a": [2]}
    assert slices[("keep", END - 4 * MINUTE)]["counts"] != [7, 7, 7]  # an older count never replaces a newer
    assert [dict(r)["rows"] for r in after["window_health"]] == [1100.0]
    assert len(after["runs"]) == 3 and len(after["results"]) == 5
    assert len(statements) == (1 if engine.dialect.name == "postgresql" else 5)


def test_a_value_json_cannot_hold_takes_the_table_by_table_path_with_the_same_rows(engine):
    before = written(engine, table_by_table, this_write(False, nan=True))
    statements: list[str] = []
    assert written(engine, write_run, this_write(False, nan=True), statements) == before
    assert len(statements) == 5


def test_a_failure_in_the_middle_writes_nothing(engine):
    write = this_write(False)
    write.windows[1].results[1]["role"] = None  # NOT NULL: the results fail after runs and slices went in
    with engine.begin() as connection:
        for table in TABLES:
            connection.execute(table.delete())
        stored_before(connection)
    before = everything(engine)
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
        write_run(connection, write)
    assert everything(engine) == before


def test_the_run_ids_come_back_in_the_order_of_the_windows(engine):
    with engine.begin() as connection:
        ids = write_run(connection, this_write(False))
        runs = dict(connection.execute(sa.select(Run.__table__.c.id, Run.__table__.c.window_end)).all())
    assert [runs[i] for i in ids] == [END - HOUR, END]


def test_a_store_that_hangs_times_out_and_writes_nothing(engine, backend):
    if backend != "postgresql":
        pytest.skip("a row lock held by another session: PostgreSQL")
    with engine.begin() as connection:
        stored_before(connection)
    before = everything(engine)
    health_rows = WindowHealth.__table__
    with engine.connect() as other, other.begin():  # another session holds the health row
        other.execute(sa.select(health_rows.c.id).where(health_rows.c.window_end == END).with_for_update())
        with pytest.raises(sa.exc.OperationalError, match="statement timeout"), engine.begin() as connection, \
                statement_timeout(connection, timedelta(milliseconds=300)):
            write_run(connection, this_write(False))
    assert everything(engine) == before
