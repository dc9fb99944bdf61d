"""Window counts on each source engine (issues 17, 25): driftmon's pushdown count against
that engine's own plain scan and against read_sql + numpy, side by side, rows/s; the
fill path (a whole window counted) apart from the steady cycle (a window summed
from stored slices, only the newest slice read from the source).

The 24-column table of bench/bench_sources.py (20 quantile-binned numeric
columns, 3 categorical, one score; 2 % NULLs; drift on the last of 8 days) is
generated once with numpy, written to Parquet, and loaded into every engine
that runs here: DuckDB (a table, and a view over the Parquet file), chDB
(ClickHouse), MariaDB (DRIFTMON_BENCH_MYSQL_URL, default the local server's
`test` database), PostgreSQL (DRIFTMON_BENCH_ENGINES_PG_URL, default the local
server's `bench_engines_pg` database, created if missing; the table is dropped
at the end, the database kept), Spark SQL (a Parquet table on the Thrift Server of
DRIFTMON_BENCH_SPARK_URL, or on one started here from pyspark, local[2]) and
SQLite for scale. The window is the last day.

    .venv/bin/python bench/bench_engines.py --rows 1000000 [--engines duckdb,chdb,mariadb,postgresql,spark,sqlite]

Fill path, best of ``--repeat`` runs after one warm-up: (a) EventsSource.counts,
the statement driftmon runs on a whole window; (b) the engine's
``SELECT sum(c1), …, count(c24)`` over the same window (a scan that bins
nothing: the ceiling); (c) pandas.read_sql of the window's 24 columns, then
numpy/pandas binning (what a tool without pushdown does); (f) the slice fill:
the window's 5-minute slices counted in ONE statement (``slice_counts``, what
a sliced monitor's first run does), timed once.

Steady cycle (a 5-minute schedule), median of ``--cycles`` runs after one
warm-up: (s) the newest slice counted on the source (``slice_counts`` over one
5-minute slice) plus the window summed from the stored slices
(``window_from_slices``, the other 287 held in memory as ``SliceCounter``
holds them); (s1) the slice statement alone; (b1) the plain ``sum()`` scan of
the same slice's rows. The summed window is checked equal, bin for bin, to
(a)'s whole count. The results store (its transaction is another ~10 ms) and
the engine call are left out: bench_incremental.py times a whole cycle.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sources import ensure_database  # noqa: E402  (creates a PostgreSQL database if missing)

from driftmon.config_file import parse_config  # noqa: E402
from driftmon.counting.incremental import _packed  # noqa: E402  how SliceCounter holds stored slices
from driftmon.sources import open_source  # noqa: E402
from driftmon.sources.slicing import slice_starts  # noqa: E402
from driftmon.store.database import create_db_engine  # noqa: E402
from driftmon.windows import TimeRange  # noqa: E402

START = datetime(2024, 1, 1, tzinfo=UTC)
NUMERIC = [f"f{i:02d}" for i in range(1, 21)]
CATEGORICAL = ["c1", "c2", "c3"]
SCORE = "score"
WATCHED = [*NUMERIC, *CATEGORICAL, SCORE]
REFERENCE = TimeRange(START, START + timedelta(days=7))
WINDOW = TimeRange(START + timedelta(days=7), START + timedelta(days=8))
SLICE = timedelta(minutes=5)
NEWEST = TimeRange(WINDOW.end - SLICE, WINDOW.end)
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/bench_engines_pg"


def generate(rows: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    i = np.arange(rows)
    drift = (i >= rows * 7 // 8).astype(float)
    frame = {"ts": pd.Timestamp(START.replace(tzinfo=None)) + pd.to_timedelta(i * (8 * 86400 / rows), unit="s")}
    for k, name in enumerate(NUMERIC):
        values = rng.normal(k + drift * (k % 3) * 0.3, 1 + k % 4, rows)
        values[rng.random(rows) < 0.02] = np.nan
        frame[name] = values
    for k, name in enumerate(CATEGORICAL):
        codes = np.floor(50 * rng.random(rows) ** (1 + k + drift)).astype(int)
        labels = np.char.add("cat_", codes.astype(str)).astype(object)
        labels[rng.random(rows) < 0.02] = None
        frame[name] = labels
    frame[SCORE] = 1 / (1 + np.exp(-(rng.random(rows) * 3 - 1.5) * 4 - drift))
    return pd.DataFrame(frame)


def monitor():
    features = ([{"column": c, "bins": 10} for c in NUMERIC]
                + [{"column": c, "type": "categorical", "top_k": 20} for c in CATEGORICAL]
                + [{"column": SCORE, "role": "prediction", "binning": "uniform", "range": [0, 1], "bins": 10}])
    raw = {"monitors": [{"name": "bench", "features": features,
                         "source": {"kind": "events", "table": "inference_log", "timestamp_column": "ts"}}]}
    return parse_config(raw, {}).resolved_monitors()[0]


# --- loading ---------------------------------------------------------------------


def load_duckdb(parquet: Path, folder: Path, view: bool) -> sa.Engine:
    engine = create_db_engine(f"duckdb:///{folder / ('view.duckdb' if view else 'table.duckdb')}")
    kind = "VIEW" if view else "TABLE"
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE {kind} inference_log AS SELECT * FROM read_parquet('{parquet}')")
    return engine


def load_chdb(parquet: Path, folder: Path) -> sa.Engine:
    engine = create_db_engine(f"chdb:///{folder / 'chdb'}")
    columns = ", ".join(["ts DateTime64(6)", *(f"{c} Nullable(Float64)" for c in NUMERIC),
                         *(f"{c} Nullable(String)" for c in CATEGORICAL), f"{SCORE} Float64"])
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE TABLE inference_log ({columns}) ENGINE = MergeTree ORDER BY ts")
        connection.exec_driver_sql(f"INSERT INTO inference_log SELECT * FROM file('{parquet}', Parquet)")
    return engine


def load_sqlite(frame: pd.DataFrame, folder: Path) -> sa.Engine:
    engine = create_db_engine(f"sqlite:///{folder / 'source.db'}")
    out = frame.copy()
    out["ts"] = out["ts"].dt.strftime("%Y-%m-%d %H:%M:%S.%f").str[:-3]
    out.to_sql("inference_log", engine, index=False, chunksize=50_000)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE INDEX inference_log_ts ON inference_log (ts)")
    return engine


def load_mariadb(frame: pd.DataFrame, folder: Path, url: str) -> sa.Engine:
    engine = create_db_engine(url)
    columns = ", ".join(["ts DATETIME(6) NOT NULL", *(f"{c} DOUBLE" for c in NUMERIC),
                         *(f"{c} VARCHAR(20)" for c in CATEGORICAL), f"{SCORE} DOUBLE"])
    csv = folder / "rows.csv"
    frame.to_csv(csv, index=False, header=False, na_rep="\\N", date_format="%Y-%m-%d %H:%M:%S.%f")
    loader = sa.create_engine(url, connect_args={"local_infile": True})
    with loader.begin() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS inference_log")
        connection.exec_driver_sql(f"CREATE TABLE inference_log ({columns}, INDEX (ts))")
        connection.exec_driver_sql(f"LOAD DATA LOCAL INFILE '{csv}' INTO TABLE inference_log "
                                   "FIELDS TERMINATED BY ',' LINES TERMINATED BY '\\n'")
    loader.dispose()
    return engine


def load_postgresql(frame: pd.DataFrame, folder: Path, url: str) -> sa.Engine:
    """The frame through COPY into a timestamptz table (naive times are UTC: the session says so), indexed on ts."""
    ensure_database(url)
    engine = create_db_engine(url)
    columns = ", ".join(["ts timestamptz NOT NULL", *(f"{c} double precision" for c in NUMERIC),
                         *(f"{c} text" for c in CATEGORICAL), f"{SCORE} double precision"])
    csv = folder / "rows_pg.csv"
    frame.to_csv(csv, index=False, header=False, na_rep="\\N", date_format="%Y-%m-%d %H:%M:%S.%f")
    with engine.begin() as connection:
        connection.exec_driver_sql("SET LOCAL statement_timeout = '10min'")
        connection.exec_driver_sql("DROP TABLE IF EXISTS inference_log")
        connection.exec_driver_sql(f"CREATE TABLE inference_log ({columns})")
        cursor = connection.connection.driver_connection.cursor()
        with cursor.copy("COPY inference_log FROM STDIN (FORMAT csv, NULL '\\N')") as copy, csv.open("rb") as rows:
            for block in iter(lambda: rows.read(1 << 20), b""):
                copy.write(block)
        connection.exec_driver_sql("CREATE INDEX inference_log_ts ON inference_log (ts)")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM (ANALYZE) inference_log")
    csv.unlink()
    return engine


def load_spark(parquet: Path, folder: Path, url: str | None) -> tuple[sa.Engine, object]:
    server = None
    if url is None:
        from tests.spark_server import SparkThriftServer

        server = SparkThriftServer(folder / "spark")
        (folder / "spark").mkdir()
        url = server.start()
    engine = create_db_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS inference_log")
        connection.exec_driver_sql(f"CREATE TABLE inference_log USING parquet AS SELECT * FROM parquet.`{parquet}`")
    return engine, server


# --- measuring -------------------------------------------------------------------


def best(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return min(times)


def median_of(fn, runs: int) -> float:
    """Median seconds of ``runs`` calls after one warm-up (steady-cycle statements are small and noisy)."""
    fn()
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _bounds(engine: sa.Engine, table, window: TimeRange) -> list:
    if engine.dialect.name == "sqlite":
        return [table.c.ts >= window.start.strftime("%Y-%m-%d %H:%M:%S"),
                table.c.ts < window.end.strftime("%Y-%m-%d %H:%M:%S")]
    return [table.c.ts >= window.start.replace(tzinfo=None), table.c.ts < window.end.replace(tzinfo=None)]


def plain_scan(engine: sa.Engine, window: TimeRange = WINDOW):
    table = sa.table("inference_log", *(sa.column(c) for c in ["ts", *WATCHED]))
    aggregates = [sa.func.sum(table.c[c]) for c in [*NUMERIC, SCORE]] + [sa.func.count(table.c[c])
                                                                          for c in CATEGORICAL]
    statement = sa.select(*aggregates).where(*_bounds(engine, table, window))

    def run():
        with engine.connect() as connection:
            connection.execute(statement).all()
    return run


def read_and_bin(engine: sa.Engine, profile):
    statement = plain_scan_select(engine)

    def run():
        with engine.connect() as connection:
            frame = pd.read_sql(statement, connection)
        for column in profile.columns:
            values = frame[column.column]
            if column.kind == "numeric":
                x = values.to_numpy(dtype=float)
                finite = np.isfinite(x)
                np.bincount(np.searchsorted(column.edges, x[finite], side="right"), minlength=len(column.edges) + 1)
            else:
                values.value_counts(dropna=False)
    return run


def plain_scan_select(engine: sa.Engine) -> sa.Select:
    table = sa.table("inference_log", *(sa.column(c) for c in ["ts", *WATCHED]))
    return sa.select(*(table.c[c] for c in WATCHED)).where(*_bounds(engine, table, WINDOW))


def steady_cycle(source, profile, stored: dict):
    """One cycle's counting: the newest slice from the source, the window summed with the stored others."""
    starts = slice_starts(WINDOW, SLICE)

    def run():
        fresh = source.slice_counts(profile, NEWEST, SLICE)
        payloads = [_packed(fresh[s].payload) if s in fresh else stored[s] for s in starts]
        return source.window_from_slices(profile, payloads, WINDOW, sum(c.rows for c in fresh.values()))
    return run


def same_counts(left, right) -> bool:
    return all(np.array_equal(getattr(left, k), getattr(right, k)) for k in ("reference", "current", "mask"))


def bench(name: str, engine: sa.Engine, window_rows: int, repeat: int, cycles: int) -> dict:
    source = open_source(monitor(), engine)
    began = time.perf_counter()
    profile = source.profile(REFERENCE)
    profiled = time.perf_counter() - began
    counted = best(lambda: source.counts(profile, WINDOW), repeat)
    scanned = best(plain_scan(engine), repeat)
    peer = best(read_and_bin(engine, profile), max(1, repeat // 2))
    # The slice fill: every slice of the window in one statement, then held as SliceCounter holds them.
    began = time.perf_counter()
    filled = source.slice_counts(profile, WINDOW, SLICE)
    fill = time.perf_counter() - began
    stored = {start: _packed(found.payload) for start, found in filled.items()}
    cycle = steady_cycle(source, profile, stored)
    if not same_counts(cycle(), source.counts(profile, WINDOW)):
        raise SystemExit(f"{name}: the window summed from slices differs from its whole count")
    slice_rows = sum(c.rows for c in source.slice_counts(profile, NEWEST, SLICE).values())
    steady = median_of(cycle, cycles)
    statement = median_of(lambda: source.slice_counts(profile, NEWEST, SLICE), cycles)
    slice_scan = median_of(plain_scan(engine, NEWEST), cycles)
    return {"engine": name, "profile_s": profiled, "count_s": counted, "scan_s": scanned, "peer_s": peer,
            "rows": window_rows, "fill_s": fill, "slices": len(filled), "cycle_s": steady,
            "statement_s": statement, "slice_scan_s": slice_scan, "slice_rows": slice_rows}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=21, help="steady cycles timed per engine (median)")
    parser.add_argument("--engines", default="duckdb,duckdb-parquet,chdb,mariadb,postgresql,spark,sqlite")
    args = parser.parse_args(argv)
    frame = generate(args.rows)
    window_rows = int(((frame["ts"] >= WINDOW.start.replace(tzinfo=None))
                       & (frame["ts"] < WINDOW.end.replace(tzinfo=None))).sum())
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        parquet = folder / "rows.parquet"
        # Microsecond timestamps: Spark reads no nanosecond Parquet timestamps.
        frame.astype({"ts": "datetime64[us]"}).to_parquet(parquet)
        for name in args.engines.split(","):
            began = time.perf_counter()
            if name == "duckdb":
                engine = load_duckdb(parquet, folder, view=False)
            elif name == "duckdb-parquet":
                engine = load_duckdb(parquet, folder, view=True)
            elif name == "chdb":
                engine = load_chdb(parquet, folder)
            elif name == "sqlite":
                engine = load_sqlite(frame, folder)
            elif name == "mariadb":
                url = os.environ.get("DRIFTMON_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
                engine = load_mariadb(frame, folder, url)
            elif name == "postgresql":
                engine = load_postgresql(frame, folder, os.environ.get("DRIFTMON_BENCH_ENGINES_PG_URL", PG_URL))
            elif name == "spark":
                engine, server = load_spark(parquet, folder, os.environ.get("DRIFTMON_BENCH_SPARK_URL"))
            else:
                raise SystemExit(f"unknown engine {name!r}")
            print(f"{name}: loaded {args.rows:,} rows in {time.perf_counter() - began:.1f} s", file=sys.stderr)
            try:
                results.append(bench(name, engine, window_rows, args.repeat, args.cycles))
            finally:
                if name in ("mariadb", "postgresql", "spark"):
                    with engine.begin() as connection:
                        connection.exec_driver_sql("DROP TABLE inference_log")
                engine.dispose()
                if name == "spark" and server is not None:
                    server.stop()
    print(f"\n{args.rows:,} rows, 24 columns; window = last day, {window_rows:,} rows; best of {args.repeat}\n")
    print("| engine | profile (s) | (a) driftmon window count | (b) plain sum() scan | (c) read_sql + numpy |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in results:
        def cell(seconds, r=r):
            return f"{seconds * 1000:,.0f} ms ({r['rows'] / seconds / 1e6:,.2f} M rows/s)"
        print(f"| {r['engine']} | {r['profile_s']:.2f} | {cell(r['count_s'])} | {cell(r['scan_s'])} "
              f"| {cell(r['peer_s'])} |")
    print(f"\nSteady cycle of the same window, 5-minute slices; median of {args.cycles}; the newest slice holds "
          f"{results[0]['slice_rows'] if results else 0:,} rows; (f) timed once\n")
    print("| engine | (f) slice fill, one statement | (a) whole-window count | (s) steady cycle: newest slice + sum "
          "| (s1) slice statement | (b1) plain sum() scan of the slice | s1 / b1 | a / s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        def ms(key, digits=1, r=r):
            return f"{r[key] * 1000:,.{digits}f} ms"
        print(f"| {r['engine']} | {ms('fill_s', 0)} ({r['slices']} slices) | {ms('count_s', 0)} | {ms('cycle_s')} "
              f"| {ms('statement_s')} | {ms('slice_scan_s')} | {r['statement_s'] / r['slice_scan_s']:,.1f}x "
              f"| {r['count_s'] / r['cycle_s']:,.0f}x |")


if __name__ == "__main__":
    main()
