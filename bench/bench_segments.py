"""Benchmark of segments (issue 23): a segmented monitor's cycle against the same monitor unsegmented.

Not a timed test: run it by hand (see bench/README.md).

    python bench/bench_segments.py [--pg-rows 10000000] [--sqlite-rows 1000000] [--duckdb-rows 10000000]
    python bench/bench_segments.py --quick          # 1 M rows PostgreSQL, 200 k SQLite, 1 M DuckDB

The 24-column table of bench_sources.py (20 numeric, 3 categorical, a score;
8 days, drift on the last day) plus ``country``: 200 values with Zipf-like
shares (``floor(201^U) - 1``: value k has a share of ln((k+2)/(k+1)) / ln 201,
13 % for the largest, 0.09 % for the smallest; the top 50 hold 74 %) and 1 %
NULL. Generated inside PostgreSQL and DuckDB, with numpy for SQLite. Two
monitors on it, identical but for ``segments: {by: [country], max: 50}``: 5-minute
schedule, 24 h window, ``lateness`` 5 m, fixed reference (the first day).
Side by side in one run, per backend:

- the one-off reference profile (cut the bins, and for the segmented monitor the
  segments' membership and per-segment reference counts);
- the first fill: ``Pipeline.run`` of the 24 h window with the profile stored,
  its 288 slices counted in one statement;
- the steady cycle: ``Pipeline.run`` after the clock moved one 5-minute tick
  (the new slice and the one still open to late rows, one statement; the stored
  slices summed, the statistics, the results stored): median of ``--cycles``,
  the two monitors interleaved; source statements per cycle (counted);
- a full count of the 24 h window (``EventsSource.counts``), for scale;
- slice table growth: the bytes of the monitor's stored slice rows per day
  (288 slices; driftmon/sources/segment_slices.py: per slice only the segments
  with rows, a dense block of the smallest unsigned integer type, zlib, base64
  in the JSON column), against the dense JSON list the unsegmented layout
  would write for the same counts;
- the engine call: ``divergences`` over the window's whole batch (24 columns,
  the mix, 52 segments x 24 columns), against the 24 rows unsegmented; and the
  run's whole statistics step (engine call, BH, result rows).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sources as table_bench  # noqa: E402  the 24-column table and its expressions
from bench_incremental import Clock, timed_run  # noqa: E402  the moved clock and the timed pipeline run

from driftmon.config import ComputeConfig  # noqa: E402
from driftmon.config_file import parse_config  # noqa: E402
from driftmon.pipeline import Pipeline  # noqa: E402
from driftmon.segmenting import batch_of  # noqa: E402
from driftmon.sources.segment_slices import decode, is_segmented  # noqa: E402
from driftmon.stats.divergence import divergences, set_threads  # noqa: E402
from driftmon.store import migrate  # noqa: E402
from driftmon.store.database import EngineRegistry, create_db_engine  # noqa: E402
from driftmon.windows import TimeRange  # noqa: E402

START, DAY, HOUR, MINUTE = table_bench.START, timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)
REFERENCE = TimeRange(START, START + DAY)
WINDOW = DAY
TICK = 5 * MINUTE
SLICES_PER_DAY = DAY // TICK
SEGMENT_COLUMN, SEGMENT_VALUES, NULL_SHARE = "country", 200, 0.01
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/driftmon_bench_segments"
MONITORS = ("segmented", "unsegmented")
# The segment value in SQL: 'c000' ... 'c199', Zipf-like (module docstring); PostgreSQL and DuckDB alike.
_SEGMENT_SQL = (f"CASE WHEN random() < {NULL_SHARE} THEN NULL ELSE "
                f"'c' || lpad((floor(exp(random() * ln({SEGMENT_VALUES + 1}))) - 1)::int::text, 3, '0') END")


def settings(url: str, segmented: bool, max_segments: int, source_url: str | None = None):
    features = (
        [{"column": c, "bins": 10} for c in table_bench.NUMERIC]
        + [{"column": c, "type": "categorical", "top_k": 20} for c in table_bench.CATEGORICAL]
        + [{"column": table_bench.SCORE, "role": "prediction", "binning": "uniform", "range": [0, 1], "bins": 10}]
    )
    source = {"kind": "events", "table": "inference_log", "timestamp_column": "ts"}
    if source_url:
        source["url"] = source_url
    monitor = {"name": f"bench_{'segmented' if segmented else 'unsegmented'}", "features": features, "source": source}
    if segmented:
        monitor["segments"] = {"by": [SEGMENT_COLUMN], "max": max_segments}
    raw = {"database": {"url": url},
           "defaults": {"schedule": {"every": "5m"}, "window": {"size": "24h"}, "lateness": "5m",
                        "reference": {"kind": "fixed", "start": REFERENCE.start.isoformat(),
                                      "end": REFERENCE.end.isoformat()}},
           "monitors": [monitor]}
    return parse_config(raw, {}).resolved_monitors()[0]




class Phases:
    """Seconds a run spends counting (slices read, counted and summed), in statistics and storing,
    by wrapping the pipeline's own steps (its private methods: a bench may)."""

    STEPS = {"count": ("slices", "window"), "statistics": (None, "_statistics"), "store": (None, "_store")}

    def __init__(self, pipe: Pipeline):
        self.seconds = dict.fromkeys(self.STEPS, 0.0)
        for phase, (owner, name) in self.STEPS.items():
            target = getattr(pipe, owner) if owner else pipe
            setattr(target, name, self._timed(phase, getattr(target, name)))

    def _timed(self, phase: str, step):
        def timed(*args, **kwargs):
            began = time.perf_counter()
            try:
                return step(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - began
        return timed

    def take(self) -> dict[str, float]:
        taken, self.seconds = self.seconds, dict.fromkeys(self.STEPS, 0.0)
        return taken


def median_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


# --- the tables -----------------------------------------------------------------------


def _values_sql(with_nulls: bool = True) -> str:
    def nullable(expression: str) -> str:
        return f"CASE WHEN random() < 0.02 THEN NULL ELSE {expression} END" if with_nulls else expression

    return ", ".join([nullable(e) for e in table_bench._NUMERIC_EXPRESSIONS]
                     + [nullable(e) for e in table_bench._CATEGORICAL_EXPRESSIONS]
                     + [table_bench._SCORE_EXPRESSION, _SEGMENT_SQL])


def _columns_sql(timestamp: str) -> str:
    return ", ".join([f"ts {timestamp} NOT NULL"] + [f"{c} double precision" for c in table_bench.NUMERIC]
                     + [f"{c} text" for c in table_bench.CATEGORICAL]
                     + [f"{table_bench.SCORE} double precision", f"{SEGMENT_COLUMN} text"])


def generate_postgres(engine: sa.Engine, rows: int) -> None:
    """bench_sources' table with the segment column, generated inside PostgreSQL."""
    insert = sa.text(
        f"INSERT INTO inference_log SELECT ts, {_values_sql()} FROM ("  # noqa: S608  fixed text
        " SELECT CAST(:start AS timestamptz) + i * (interval '8 days' / CAST(:n AS float8)) AS ts,"
        " (i >= CAST(:n AS bigint) * 7 / 8)::int AS d"
        " FROM generate_series(0, CAST(:n AS bigint) - 1) AS i) AS g")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("SET statement_timeout = 0")
        connection.exec_driver_sql("DROP TABLE IF EXISTS inference_log")
        connection.exec_driver_sql(f"CREATE UNLOGGED TABLE inference_log ({_columns_sql('timestamptz')})")
        connection.execute(insert, {"start": START, "n": rows})
        connection.exec_driver_sql("CREATE INDEX inference_log_ts ON inference_log (ts)")
        connection.exec_driver_sql("VACUUM (ANALYZE) inference_log")
        connection.exec_driver_sql(f"COMMENT ON TABLE inference_log IS 'driftmon bench segments rows={rows}'")


def postgres_rows(engine: sa.Engine) -> int | None:
    with engine.connect() as connection:
        comment = connection.exec_driver_sql(
            "SELECT obj_description(to_regclass('inference_log'), 'pg_class')").scalar()
    prefix = "driftmon bench segments rows="
    return int(comment.removeprefix(prefix)) if comment and comment.startswith(prefix) else None


def generate_duckdb(path: Path, rows: int) -> None:
    """The same table inside DuckDB (naive UTC timestamps: DuckDB's TIMESTAMP)."""
    import duckdb

    path.unlink(missing_ok=True)
    step = int((8 * DAY).total_seconds() * 1_000_000)
    with duckdb.connect(str(path)) as connection:
        connection.execute(f"CREATE TABLE inference_log ({_columns_sql('TIMESTAMP')})")
        connection.execute(
            f"INSERT INTO inference_log SELECT ts, {_values_sql()} FROM ("  # noqa: S608  fixed text
            f" SELECT TIMESTAMP '{START.replace(tzinfo=None)}' + to_microseconds(CAST(i * {step} // {rows} AS BIGINT))"
            f" AS ts, (i >= {rows} * 7 // 8)::int AS d FROM range({rows}) AS r(i)) AS g ORDER BY ts")


def zipf_codes(rng: np.random.Generator, n: int) -> np.ndarray:
    return (np.floor(np.exp(rng.random(n) * np.log(SEGMENT_VALUES + 1))) - 1).astype(int)


def generate_sqlite(engine: sa.Engine, rows: int) -> None:
    """The same 24 columns and segment column, generated with numpy (simpler distributions)."""
    rng = np.random.default_rng(1)
    names = ["ts", *table_bench.NUMERIC, *table_bench.CATEGORICAL, table_bench.SCORE, SEGMENT_COLUMN]
    columns = [sa.Column("ts", sa.DateTime)] + [sa.Column(c, sa.Double) for c in table_bench.NUMERIC] + [
        sa.Column(c, sa.String(20)) for c in table_bench.CATEGORICAL] + [
        sa.Column(table_bench.SCORE, sa.Double), sa.Column(SEGMENT_COLUMN, sa.String(8))]
    table = sa.Table("inference_log", sa.MetaData(), *columns, sa.Index("inference_log_ts", "ts"))
    table.metadata.drop_all(engine)
    table.metadata.create_all(engine)
    insert = f"INSERT INTO inference_log ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    start = np.datetime64(START.replace(tzinfo=None), "us")
    step = int((8 * DAY).total_seconds() * 1_000_000) / rows
    chunk = 200_000
    for first in range(0, rows, chunk):
        n = min(chunk, rows - first)
        # SQLAlchemy's text form of a DateTime on SQLite: 'YYYY-MM-DD HH:MM:SS.ffffff'.
        moments = start + (np.arange(first, first + n) * step).astype("timedelta64[us]")
        stamps = np.char.replace(np.datetime_as_string(moments, unit="us"), "T", " ").tolist()
        drift = (np.arange(first, first + n) >= rows * 7 // 8).astype(float)
        values = []
        for i, _ in enumerate(table_bench.NUMERIC):
            x = rng.normal(i + drift * (i % 2), 1 + i % 3, n).astype(object)
            x[rng.random(n) < 0.02] = None
            values.append(x.tolist())
        for _ in table_bench.CATEGORICAL:
            values.append([f"cat_{k}" for k in rng.integers(0, 50, n)])
        values.append(rng.random(n).tolist())
        codes = zipf_codes(rng, n)
        values.append([None if m else f"c{k:03d}" for k, m in zip(codes, rng.random(n) < NULL_SHARE, strict=True)])
        with engine.begin() as connection:
            connection.exec_driver_sql(insert, list(zip(stamps, *values, strict=True)))


# --- measuring -----------------------------------------------------------------------


def slice_bytes(results: sa.Engine, monitor: str) -> dict:
    """The monitor's stored slice rows: count, payload text bytes, and (PostgreSQL) bytes stored."""
    with results.connect() as connection:
        if results.dialect.name == "postgresql":
            row = connection.exec_driver_sql(
                "SELECT count(*), sum(octet_length(counts::text)), sum(pg_column_size(s.*))"
                " FROM slice_counts s WHERE monitor = %(m)s", {"m": monitor}).one()
        else:
            row = connection.exec_driver_sql(
                "SELECT count(*), sum(length(counts)), NULL FROM slice_counts WHERE monitor = ?", (monitor,)).one()
        payloads = connection.execute(sa.text("SELECT counts FROM slice_counts WHERE monitor = :m"),
                                      {"m": monitor}).scalars().all()
    # What the same counts would weigh as the unsegmented layout's dense JSON list, per segment.
    dense = 0
    for payload in payloads:
        payload = json.loads(payload) if isinstance(payload, str) else payload
        dense += len(json.dumps(decode(payload).tolist() if is_segmented(payload) else payload))
    count = int(row[0])
    return {"slices": count, "text": int(row[1] or 0), "stored": int(row[2]) if row[2] is not None else None,
            "dense": dense, "per_day": int(row[1] or 0) * SLICES_PER_DAY / max(count, 1),
            "stored_per_day": int(row[2]) * SLICES_PER_DAY / max(count, 1) if row[2] is not None else None,
            "dense_per_day": dense * SLICES_PER_DAY / max(count, 1)}


def bench_backend(title: str, results_url: str, source_url: str, args) -> dict:
    results = create_db_engine(results_url)
    migrate.upgrade(results)
    end0 = START + 8 * DAY - 2 * HOUR  # ticks left after the first window
    clock = Clock(end0 + timedelta(seconds=1))
    pipe = Pipeline(results, ComputeConfig(device=args.device), EngineRegistry(), clock=clock)
    phases = Phases(pipe)
    source_key = None if source_url == results_url else source_url
    monitors = {key: settings(results_url, key == "segmented", args.max, source_key) for key in MONITORS}
    out: dict = {"title": title, "monitors": {}}
    for key in MONITORS:  # the one-off costs, one monitor after the other
        monitor = monitors[key]
        source = pipe.source_for(monitor, source_url)
        began = time.perf_counter()
        profile = pipe._profile(monitor, source, REFERENCE)
        profile_s = time.perf_counter() - began
        fill_s, first = timed_run(pipe, monitor, source_url, end0)
        row = {"profile": profile_s, "fill": fill_s, "window_rows": first.rows_scanned, "cycles": [],
               "statements": [], "read": [], "results": 0, "phases": []}
        if profile.segments is not None:
            segments = profile.segments
            row["segments"] = {"members": len(segments.members), "distinct": segments.distinct,
                               "pooled_share": segments.rows[-2] / sum(segments.rows),
                               "missing_share": segments.rows[-1] / sum(segments.rows)}
        out["monitors"][key] = row
        print(f"  {key}: profile {profile_s:.2f} s, first fill {fill_s:.2f} s "
              f"({first.rows_scanned:,} rows, {SLICES_PER_DAY} slices)", flush=True)
    for k in range(1, args.cycles + 1):  # the steady cycles, interleaved (the order alternates)
        end = end0 + k * TICK
        clock.now = end + timedelta(seconds=1)
        for key in MONITORS if k % 2 else reversed(MONITORS):
            monitor, row = monitors[key], out["monitors"][key]
            source = pipe.source_for(monitor, source_url)
            before = source.statements
            phases.take()
            elapsed, outcome = timed_run(pipe, monitor, source_url, end)
            row["phases"].append(phases.take())
            row["cycles"].append(elapsed)
            row["statements"].append(source.statements - before)
            row["read"].append(outcome.rows_scanned)
            row["results"] = len(outcome.results)
    window = TimeRange(end - WINDOW, end)
    for key in MONITORS:
        monitor, row = monitors[key], out["monitors"][key]
        source = pipe.source_for(monitor, source_url)
        profile = pipe._profile(monitor, source, REFERENCE)
        row["cycle"] = statistics.median(row["cycles"])
        for phase in Phases.STEPS:
            row[f"cycle_{phase}"] = statistics.median(p[phase] for p in row["phases"])
        row["full"] = median_of(lambda source=source, profile=profile: source.counts(profile, window), args.full_repeat)
        counts = source.counts(profile, window)
        batch = batch_of(counts).counts
        row["batch_shape"] = list(batch.reference.shape)
        row["engine_call"] = median_of(lambda batch=batch: divergences(
            batch.reference, batch.current, batch.mask, device=args.device, whole_counts=True), args.engine_repeat)
        row["statistics"] = median_of(lambda monitor=monitor, counts=counts: pipe._statistics(
            monitor, counts, REFERENCE), args.engine_repeat)
        row["slices"] = slice_bytes(results, monitor.name)
    pipe.engines.dispose()
    results.dispose()
    return out


# --- the report ------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:,.1f} ms"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:,.2f} MB"


def print_report(run: dict) -> None:
    seg, whole = run["monitors"]["segmented"], run["monitors"]["unsegmented"]
    info = seg.get("segments", {})
    print(f"\n{run['title']}: 24 h window = {seg['window_rows']:,} rows "
          f"({seg['window_rows'] / SLICES_PER_DAY:,.0f} per 5-minute slice); {info.get('members')} segments of "
          f"{info.get('distinct')} values, {info.get('pooled_share', 0):.1%} of the reference pooled into "
          f"__other__, {info.get('missing_share', 0):.1%} __missing__")
    print("| | segmented (max 50) | unsegmented | ratio |")
    print("|---|---|---|---|")
    rows = [
        ("reference profile (one-off)", "profile", _ms),
        ("first fill: 288 slices, one statement", "fill", _ms),
        ("steady cycle (median)", "cycle", _ms),
        ("  of which: counting (new slices read, window summed)", "cycle_count", _ms),
        ("  of which: statistics (engine call, BH, result rows)", "cycle_statistics", _ms),
        ("  of which: storing (slices, run, results)", "cycle_store", _ms),
        ("full count of the 24 h window", "full", _ms),
        ("engine call (divergences)", "engine_call", _ms),
        ("statistics step (engine call + BH + results)", "statistics", _ms),
    ]
    for label, key, fmt in rows:
        print(f"| {label} | {fmt(seg[key])} | {fmt(whole[key])} | {seg[key] / whole[key]:.2f}x |")
    print(f"| batch rows x bins | {seg['batch_shape'][0]} x {seg['batch_shape'][1]} | "
          f"{whole['batch_shape'][0]} x {whole['batch_shape'][1]} | |")
    print(f"| source statements per cycle | {sorted(set(seg['statements']))} | {sorted(set(whole['statements']))} | |")
    print(f"| rows read per cycle (median) | {statistics.median(seg['read']):,.0f} | "
          f"{statistics.median(whole['read']):,.0f} | |")
    print(f"| result rows stored per cycle | {seg['results']:,} | {whole['results']:,} | |")
    s, w = seg["slices"], whole["slices"]
    print(f"| slice rows per day: payload text | {_mb(s['per_day'])} | {_mb(w['per_day'])} | "
          f"{s['per_day'] / w['per_day']:.1f}x |")
    if s["stored_per_day"] is not None:
        print(f"| slice rows per day: stored (pg_column_size) | {_mb(s['stored_per_day'])} | "
              f"{_mb(w['stored_per_day'])} | {s['stored_per_day'] / w['stored_per_day']:.1f}x |")
    print(f"| the same counts as dense JSON lists, per day | {_mb(s['dense_per_day'])} | "
          f"{_mb(w['dense_per_day'])} | |")
    print(f"steady cycle, segmented / unsegmented: {seg['cycle'] / whole['cycle']:.2f}x (target <= 2x); "
          f"slice growth {s['per_day'] / 1e6:.2f} MB/day (target <= 10 MB); cycles: "
          f"segmented {', '.join(_ms(x) for x in seg['cycles'])}; unsegmented "
          f"{', '.join(_ms(x) for x in whole['cycles'])}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="a PostgreSQL database the bench owns")
    parser.add_argument("--pg-rows", "--rows", type=int, default=10_000_000, help="0 skips PostgreSQL")
    parser.add_argument("--sqlite-rows", type=int, default=1_000_000, help="0 skips SQLite")
    parser.add_argument("--duckdb-rows", type=int, default=10_000_000, help="0 skips DuckDB")
    parser.add_argument("--quick", action="store_true", help="1 M rows PostgreSQL, 200 k SQLite, 1 M DuckDB")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the SQLite and DuckDB files go")
    parser.add_argument("--max", type=int, default=50, help="segments.max")
    parser.add_argument("--cycles", type=int, default=6)
    parser.add_argument("--full-repeat", type=int, default=1)
    parser.add_argument("--engine-repeat", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads, compute.threads (default 1, as the daemon sets it)")
    parser.add_argument("--reuse", action="store_true", help="keep tables that already have the rows")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.pg_rows, args.sqlite_rows, args.duckdb_rows = (min(args.pg_rows, 1_000_000),
                                                            min(args.sqlite_rows, 200_000),
                                                            min(args.duckdb_rows, 1_000_000))
    # What driftmon's commands do at start (app.py): torch's default, a thread per core, made
    # the 1,273-row engine call jump from 5 ms to 200-300 ms on a loaded 2-core machine.
    set_threads(args.threads)
    args.folder.mkdir(parents=True, exist_ok=True)
    runs = []
    began = time.perf_counter()
    if args.pg_rows:
        table_bench.ensure_database(args.pg_url)
        engine = create_db_engine(args.pg_url)
        if not (args.reuse and postgres_rows(engine) == args.pg_rows):
            print(f"generating {args.pg_rows:,} rows in PostgreSQL ...", flush=True)
            generate_postgres(engine, args.pg_rows)
        table_bench.fresh_results(engine)
        engine.dispose()
        runs.append(bench_backend(f"PostgreSQL, {args.pg_rows:,} rows", args.pg_url, args.pg_url, args))
        print_report(runs[-1])
    if args.sqlite_rows:
        path = args.folder / f"driftmon_bench_segments_{args.sqlite_rows}.db"
        url = f"sqlite:///{path}"
        engine = create_db_engine(url)
        if not (args.reuse and path.exists()):
            print(f"generating {args.sqlite_rows:,} rows in SQLite ...", flush=True)
            generate_sqlite(engine, args.sqlite_rows)
        table_bench.fresh_results(engine)
        engine.dispose()
        runs.append(bench_backend(f"SQLite, {args.sqlite_rows:,} rows", url, url, args))
        print_report(runs[-1])
    if args.duckdb_rows:
        path = args.folder / f"driftmon_bench_segments_{args.duckdb_rows}.duckdb"
        if not (args.reuse and path.exists()):
            print(f"generating {args.duckdb_rows:,} rows in DuckDB ...", flush=True)
            generate_duckdb(path, args.duckdb_rows)
        results = args.folder / "driftmon_bench_segments_duckdb_results.db"
        results.unlink(missing_ok=True)
        runs.append(bench_backend(f"DuckDB, {args.duckdb_rows:,} rows (results in SQLite)",
                                  f"sqlite:///{results}", f"duckdb:///{path}", args))
        print_report(runs[-1])
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1, default=str))
    print(f"\ntotal {time.perf_counter() - began:.0f} s (measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")


if __name__ == "__main__":
    main()
