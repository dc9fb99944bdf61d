"""Benchmark of a run's store transaction (issue #25: 12 ms on PostgreSQL, 7 ms of it the 24 result rows).

Not a timed test: run it by hand against a PostgreSQL database of your own (it migrates it)
and a SQLite file it makes:

    python bench/bench_store_write.py [rounds] [postgresql+psycopg://postgres@127.0.0.1:5432/NAME]

Each round stores one steady 5-minute cycle of a 24-column monitor: its run row, 24 result
rows (22 bins each), two new slice rows, the retention delete of the slice that left the
day, and the window's health row, inside ``statement_timeout`` as the pipeline does. Two
monitors of the same shape take turns, round by round, which goes first alternating: one
written table by table as before issue #25, one by driftmon/store/run_writes.py. Reported:
the median transaction (BEGIN to COMMIT) in ms, and the statements per write (counted with
a before_cursor_execute event; an executemany is one).
"""

import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from driftmon.pipeline import STORE_TIMEOUT
from driftmon.sources.sql import statement_timeout
from driftmon.store import migrate
from driftmon.store.database import create_db_engine
from driftmon.store.health_queries import save_window_health
from driftmon.store.models import Result, SliceCounts
from driftmon.store.repository import Repository
from driftmon.store.run_writes import RESULT_KEY, RESULT_UPDATES, RunWrite, SliceRows, WindowRows, json_rows, write_run

COLUMNS, BINS, CYCLE, DAY = 24, 22, timedelta(minutes=5), timedelta(days=1)
START = datetime(2024, 3, 1, tzinfo=UTC)
WARMUP = 10
_results, _slices = Result.__table__, SliceCounts.__table__


def table_by_table(connection, write: RunWrite) -> None:
    """The pipeline's write before issue #25, a statement (or executemany) at a time, with the
    repository's statements as they were then (built at each call)."""
    repository = Repository()
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(_slices)
    newer = _slices.c.counted_at <= statement.excluded.counted_at
    connection.execute(statement.on_conflict_do_update(
        index_elements=["monitor", "profile_key", "slice_start"],
        set_={name: statement.excluded[name] for name in ("slice_end", "counts", "rows", "sealed", "counted_at")},
        where=sa.and_(newer, _slices.c.sealed == sa.false())), write.slices.rows)
    repository.delete_slices(connection, write.slices.monitor, write.slices.ended_by, write.slices.keep_profile)
    for window in write.windows:
        run_id = repository.insert_run(connection, window.run)
        rows = [{**row, "run_id": run_id} for row in window.results]
        if dialect is postgresql:  # then one statement from a JSON document
            connection.execute(_old_upsert_from_json(), {"rows": json_rows(rows)})
        else:
            statement = dialect.insert(_results)
            updates = {name: statement.excluded[name] for name in RESULT_UPDATES}
            connection.execute(statement.on_conflict_do_update(index_elements=list(RESULT_KEY), set_=updates), rows)
    save_window_health(connection, write.health)


def _old_upsert_from_json():
    names = [c.name for c in _results.columns if c.name != "id"]
    recordset = sa.func.json_to_recordset(sa.cast(sa.bindparam("rows"), postgresql.JSON)).table_valued(
        *(sa.column(name, _results.c[name].type) for name in names)).render_derived(name="r", with_types=True)
    statement = postgresql.insert(_results).from_select(names, sa.select(*(recordset.c[n] for n in names)))
    return statement.on_conflict_do_update(
        index_elements=list(RESULT_KEY), set_={name: statement.excluded[name] for name in RESULT_UPDATES})


def slice_row(monitor: str, start: datetime, counted_at: datetime) -> dict:
    counts = [(start.minute * 7 + i) % 97 for i in range(COLUMNS * (BINS + 2))]  # an events slice: one list
    return {"monitor": monitor, "profile_key": "p" * 64, "slice_start": start, "slice_end": start + CYCLE / 2,
            "counts": counts, "rows": sum(counts), "sealed": False, "counted_at": counted_at}


def result_row(monitor: str, end: datetime, column: int, now: datetime) -> dict:
    kl = 0.001 * (column + 1) + end.minute * 1e-6
    return {"run_id": None, "monitor": monitor, "column": f"feature_{column:02d}", "role": "feature",
            "window_start": end - DAY, "window_end": end, "reference_start": end - 8 * DAY,
            "reference_end": end - DAY, "samples_current": 2.5e6, "samples_reference": 1.75e7,
            "missing_current": 12.0, "missing_ratio": 12 / 2.5e6, "kl": kl, "psi": 2.1 * kl, "js": kl / 3.7,
            "statistic": "psi", "threshold_warning": 0.1, "threshold_critical": 0.25, "status": "ok",
            "computed_at": now, "p_value": 0.37, "q_value": 0.81,
            "labels": [f"[{b / 10:.1f}, {(b + 1) / 10:.1f})" for b in range(BINS)],
            "reference_counts": [float(7e5 + 31 * b) for b in range(BINS)],
            "current_counts": [float(1e5 + 17 * b) for b in range(BINS)],
            "fingerprint": "f" * 64, "segment": None, "segment_key": ""}


def cycle(monitor: str, end: datetime) -> RunWrite:
    """One steady cycle's write: the window ending at ``end`` and its two new half-cycle slices."""
    now = end + timedelta(seconds=3)
    run = {"monitor": monitor, "scheduled_at": end, "started_at": now, "finished_at": now,
           "window_start": end - DAY, "window_end": end, "reference_start": end - 8 * DAY,
           "reference_end": end - DAY, "status": "ok", "error": None, "columns": COLUMNS,
           "rows_scanned": 8680, "duration_seconds": 0.108, "trigger": "schedule"}
    results = [result_row(monitor, end, c, now) for c in range(COLUMNS)]
    slices = [slice_row(monitor, end - CYCLE, now), slice_row(monitor, end - CYCLE / 2, now)]
    health = {"monitor": monitor, "window_start": end - DAY, "window_end": end, "rows": 2.5e6,
              "reference_rows": 1.75e7, "expected": 2.5e6, "change": 0.01, "p_value": 0.4, "status": "ok",
              "threshold_warning": 0.5, "threshold_critical": 0.8, "newest_row_at": end - CYCLE / 2,
              "computed_at": now, "fingerprint": "h" * 64}
    return RunWrite([WindowRows(run, results)], SliceRows(monitor, slices, end - DAY, "p" * 64), health)


def seed(engine, monitor: str, end: datetime) -> None:
    """A day of stored slices, as a steady monitor keeps them: the retention delete has rows to find."""
    rows = [slice_row(monitor, end - DAY + i * CYCLE / 2, end) for i in range(2 * (DAY // CYCLE))]
    with engine.begin() as connection:
        Repository().save_slices(connection, rows)


def timed(engine, way, write: RunWrite, counted: list[int]) -> float:
    statements = [0]

    def count(*_):
        statements[0] += 1
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        began = time.perf_counter()
        with engine.begin() as connection, statement_timeout(connection, STORE_TIMEOUT):
            way(connection, write)
        elapsed = time.perf_counter() - began
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    counted.append(statements[0])
    return elapsed


def bench(url: str, rounds: int) -> dict[str, tuple[float, int]]:
    engine = create_db_engine(url)
    migrate.upgrade(engine)
    ways = {"table by table (before)": ("old", table_by_table), "run_writes (after)": ("new", write_run)}
    tag = datetime.now(UTC).strftime("%H%M%S")  # a rerun on the same database starts on fresh monitors
    for name, _ in ways.values():
        seed(engine, f"{name}-{tag}", START)
    times = {way: [] for way in ways}
    statements = {way: [] for way in ways}
    for step in range(WARMUP + rounds):
        order = list(ways) if step % 2 == 0 else list(reversed(ways))
        for way in order:
            name, write_with = ways[way]
            elapsed = timed(engine, write_with, cycle(f"{name}-{tag}", START + (step + 1) * CYCLE), statements[way])
            if step >= WARMUP:
                times[way].append(elapsed)
    engine.dispose()
    return {way: (statistics.median(times[way]) * 1000, max(statements[way])) for way in ways}


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    postgres = sys.argv[2] if len(sys.argv) > 2 else "postgresql+psycopg://postgres@127.0.0.1:5432/driftmon_store_bench"
    with tempfile.TemporaryDirectory() as folder:
        found = {"PostgreSQL": bench(postgres, rounds), "SQLite": bench(f"sqlite:///{Path(folder) / 'r.db'}", rounds)}
    print(f"store transaction of one 24-column cycle, {rounds} rounds interleaved (median ms, statements per write)")
    print(f"{'database':<11} {'write':<25} {'ms':>7} {'statements':>11} {'ratio':>6}")
    for database, ways in found.items():
        before = next(iter(ways.values()))[0]
        for way, (ms, count) in ways.items():
            print(f"{database:<11} {way:<25} {ms:7.2f} {count:11d} {before / ms:5.1f}×")


if __name__ == "__main__":
    main()
