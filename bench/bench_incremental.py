"""Benchmark of incremental windows (issue 12): the steady cycle against today's full count.

Not a timed test: run it by hand (see bench/README.md).

    python bench/bench_incremental.py [--pg-rows 10000000] [--sqlite-rows 1000000] [--cycles 5]

On the 24-column table of bench_sources.py (PostgreSQL, generated in the
database; SQLite, generated here with the same shape), a monitor on a 5-minute
schedule with windows of 1 h, 24 h and 7 d:

- full: ``Pipeline.run`` with ``slice: off``, today's path: the window counted
  whole in the source (median of ``--full-repeat`` runs);
- cycle: ``Pipeline.run`` with slices, steady state: the clock moves one
  5-minute tick, the run counts the new slice and the one still open to late
  rows (``lateness`` 5 m), sums the stored slices and stores the results
  (median of ``--cycles`` cycles, after a first run that fills the window's slices);
- rows read per cycle (the run's ``rows_scanned``), and the one-off cost when the
  profile changes (a column's bins edited: every slice of the window recounted);
- a backfill of 48 hourly windows of 24 h (hourly schedule, 1 h slices): rows
  read over the rows in the span (the target is at most 2).

Both paths run side by side in one process, interleaved per window.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sources as table_bench  # noqa: E402  the 24-column table and its generator

from driftmon.config import ComputeConfig  # noqa: E402
from driftmon.config_file import parse_config  # noqa: E402
from driftmon.pipeline import Pipeline  # noqa: E402
from driftmon.store import migrate  # noqa: E402
from driftmon.store.database import EngineRegistry, create_db_engine  # noqa: E402
from driftmon.windows import TimeRange  # noqa: E402

START, DAY, HOUR, MINUTE = table_bench.START, timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)
REFERENCE = TimeRange(START, START + DAY)
WINDOWS = {"1h": HOUR, "24h": DAY, "7d": 7 * DAY}


def settings(url: str, window: str, every: str = "5m", slice_: str = "auto", amount_bins: int = 10):
    features = (
        [{"column": c, "bins": amount_bins if i == 0 else 10} for i, c in enumerate(table_bench.NUMERIC)]
        + [{"column": c, "type": "categorical", "top_k": 20} for c in table_bench.CATEGORICAL]
        + [{"column": table_bench.SCORE, "role": "prediction", "binning": "uniform", "range": [0, 1], "bins": 10}]
    )
    raw = {"database": {"url": url},
           "defaults": {"schedule": {"every": every}, "window": {"size": window}, "lateness": "5m",
                        "reference": {"kind": "fixed", "start": REFERENCE.start.isoformat(),
                                      "end": REFERENCE.end.isoformat()}},
           "monitors": [{"name": f"bench_{window}_{slice_}_{amount_bins}", "slice": slice_, "features": features,
                         "source": {"kind": "events", "table": "inference_log", "timestamp_column": "ts"}}]}
    return parse_config(raw, {}).resolved_monitors()[0]


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def timed_run(pipe: Pipeline, monitor, url: str, end: datetime):
    began = time.perf_counter()
    outcome = pipe.run(monitor, url, TimeRange(end - monitor.window.size, end))
    elapsed = time.perf_counter() - began
    if outcome.status != "ok":
        raise SystemExit(f"{monitor.name}: {outcome.error}")
    return elapsed, outcome


def rows_between(engine: sa.Engine, window: TimeRange) -> int:
    table = sa.table("inference_log", sa.column("ts"))
    statement = sa.select(sa.func.count()).select_from(table).where(
        table.c.ts >= sa.bindparam("a", window.start, sa.DateTime(timezone=True)),
        table.c.ts < sa.bindparam("b", window.end, sa.DateTime(timezone=True)))
    if engine.dialect.name == "sqlite":
        from driftmon.sources.sql import in_range

        statement = sa.select(sa.func.count()).select_from(table).where(in_range("sqlite", table.c.ts, window))
    with engine.connect() as connection:
        return connection.execute(statement).scalar_one()


def bench_windows(url: str, engine: sa.Engine, args) -> list[dict]:
    end0 = START + 8 * DAY - 2 * HOUR  # two hours of ticks left after the first window
    rows = []
    for name, size in WINDOWS.items():
        if name not in args.windows:
            continue
        clock = Clock(end0 + timedelta(seconds=1))
        pipe = Pipeline(engine, ComputeConfig(device="cpu"), EngineRegistry(), clock=clock)
        sliced, whole = settings(url, name), settings(url, name, slice_="off")
        timed_run(pipe, whole, url, end0)  # the reference profile, once
        fill, first = timed_run(pipe, sliced, url, end0)
        cycles, full, read = [], [], []
        for k in range(1, max(args.cycles, args.full_repeat) + 1):
            end = end0 + k * 5 * MINUTE
            clock.now = end + timedelta(seconds=1)
            if k <= args.cycles:
                elapsed, outcome = timed_run(pipe, sliced, url, end)
                cycles.append(elapsed)
                read.append(outcome.rows_scanned)
            if k <= (args.full_repeat if size < 7 * DAY else args.full_repeat_7d):
                full.append(timed_run(pipe, whole, url, end)[0])
        # A column's bins edited: the reference is cut again and every slice of the window
        # recounted under the new profile, in one statement.
        changed = settings(url, name, amount_bins=9)
        changed_pipe = Pipeline(engine, ComputeConfig(device="cpu"), EngineRegistry(), clock=clock)
        profile_change, _ = timed_run(changed_pipe, changed, url, end)
        rows.append({"window": name, "rows": first.rows_scanned, "full": statistics.median(full),
                     "cycle": statistics.median(cycles), "read": statistics.median(read), "fill": fill,
                     "profile_change": profile_change})
        print(f"  {name}: {rows[-1]}", flush=True)
    return rows


def bench_backfill(url: str, engine: sa.Engine) -> dict:
    monitor = settings(url, "24h", every="1h")
    pipe = Pipeline(engine, ComputeConfig(device="cpu"), EngineRegistry(), clock=Clock(START + 30 * DAY))
    first_end = START + 5 * DAY
    ends = [first_end + k * HOUR for k in range(48)]
    began, read, statements = time.perf_counter(), 0, 0
    source = pipe.source_for(monitor, url)
    for end in ends:
        before = source.statements
        read += timed_run(pipe, monitor, url, end)[1].rows_scanned
        statements += source.statements - before
    elapsed = time.perf_counter() - began
    span = rows_between(engine, TimeRange(ends[0] - DAY, ends[-1]))
    return {"windows": len(ends), "rows_read": read, "rows_in_span": span, "ratio": read / span,
            "statements": statements, "seconds": elapsed}


def generate_sqlite(engine: sa.Engine, rows: int) -> None:
    """The same 24 columns as bench_sources' PostgreSQL table, generated with numpy."""
    rng = np.random.default_rng(1)
    columns = [sa.Column("ts", sa.DateTime)] + [sa.Column(c, sa.Double) for c in table_bench.NUMERIC] + [
        sa.Column(c, sa.String(20)) for c in table_bench.CATEGORICAL] + [sa.Column(table_bench.SCORE, sa.Double)]
    table = sa.Table("inference_log", sa.MetaData(), *columns, sa.Index("inference_log_ts", "ts"))
    table.metadata.drop_all(engine)
    table.metadata.create_all(engine)
    step = (8 * DAY) / rows
    chunk = 100_000
    for first in range(0, rows, chunk):
        n = min(chunk, rows - first)
        values = {c: rng.normal(i, 1 + i % 3, n) for i, c in enumerate(table_bench.NUMERIC)}
        for c in table_bench.NUMERIC:
            values[c][rng.random(n) < 0.02] = np.nan
        cats = {c: rng.integers(0, 50, n) for c in table_bench.CATEGORICAL}
        score = rng.random(n)
        batch = []
        for j in range(n):
            row = {"ts": (START + (first + j) * step).replace(tzinfo=None)}
            row.update({c: (None if np.isnan(values[c][j]) else float(values[c][j])) for c in table_bench.NUMERIC})
            row.update({c: f"cat_{cats[c][j]}" for c in table_bench.CATEGORICAL})
            row[table_bench.SCORE] = float(score[j])
            batch.append(row)
        with engine.begin() as connection:
            connection.execute(table.insert(), batch)


def databases(args):
    """``(title, url, engine)`` of each database the options ask for (``--pg-rows``, ``--sqlite-rows``):
    the 24-column table generated (or kept with ``--reuse``), and a fresh results store beside it."""
    if args.pg_rows:
        table_bench.ensure_database(args.pg_url)
        engine = create_db_engine(args.pg_url)
        if not (args.reuse and table_bench.existing_rows(engine) == args.pg_rows):
            print(f"generating {args.pg_rows:,} rows in PostgreSQL ...", flush=True)
            table_bench.generate_table(engine, args.pg_rows)
        table_bench.fresh_results(engine)
        migrate.upgrade(engine)
        yield f"PostgreSQL, {args.pg_rows:,} rows", args.pg_url, engine
        engine.dispose()
    if args.sqlite_rows:
        path = Path(args.sqlite_path)
        url = f"sqlite:///{path}"
        if not args.reuse or not path.exists():
            path.unlink(missing_ok=True)
            engine = create_db_engine(url)
            print(f"generating {args.sqlite_rows:,} rows in SQLite ...", flush=True)
            generate_sqlite(engine, args.sqlite_rows)
        else:
            engine = create_db_engine(url)
        table_bench.fresh_results(engine)
        migrate.upgrade(engine)
        yield f"SQLite, {args.sqlite_rows:,} rows", url, engine
        engine.dispose()


def print_table(title: str, rows: list[dict], backfill: dict) -> None:
    print(f"\n{title}")
    print("| window | rows in it | full count (run) | steady cycle | full / cycle | rows read per cycle "
          "| profile change (one-off) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['window']} | {r['rows']:,} | {r['full'] * 1000:,.0f} ms | {r['cycle'] * 1000:,.1f} ms | "
              f"{r['full'] / r['cycle']:,.0f}x | {r['read']:,.0f} | {r['profile_change'] * 1000:,.0f} ms |")
    by_name = {r["window"]: r for r in rows}
    if "7d" in by_name and "1h" in by_name:
        print(f"7 d cycle / 1 h cycle: {by_name['7d']['cycle'] / by_name['1h']['cycle']:.2f}")
    if backfill is None:
        return
    print(f"backfill of {backfill['windows']} hourly 24 h windows: {backfill['rows_read']:,} rows read for "
          f"{backfill['rows_in_span']:,} rows in the span ({backfill['ratio']:.2f}x), "
          f"{backfill['statements']} statements, {backfill['seconds']:.1f} s")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", default=table_bench.DEFAULT_URL)
    parser.add_argument("--pg-rows", type=int, default=10_000_000, help="0 skips PostgreSQL")
    parser.add_argument("--sqlite-rows", type=int, default=1_000_000, help="0 skips SQLite")
    parser.add_argument("--sqlite-path", default="/tmp/driftmon_bench_incremental.db")
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--full-repeat", type=int, default=3)
    parser.add_argument("--full-repeat-7d", type=int, default=1)
    parser.add_argument("--reuse", action="store_true", help="keep a table that already has the rows")
    parser.add_argument("--windows", nargs="+", default=list(WINDOWS), choices=list(WINDOWS))
    parser.add_argument("--no-backfill", action="store_true")
    args = parser.parse_args(argv)
    for title, url, engine in databases(args):
        rows = bench_windows(url, engine, args)
        backfill = None if args.no_backfill else bench_backfill(url, engine)
        print_table(title, rows, backfill)
    print(f"\n(measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")


if __name__ == "__main__":
    main()
