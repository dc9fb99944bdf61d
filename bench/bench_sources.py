"""Benchmark of the events source (issue 5): pushdown bin counts vs the peer paths.

Not a timed test: run it by hand against a local PostgreSQL (see bench/README.md).

    python bench/bench_sources.py [--sizes 1000000 10000000] [--repeat 3] [--skip-evidently]

For every size N it (re)creates ``inference_log`` inside PostgreSQL with
``generate_series`` (ts, 20 numeric columns with ~2 % NULLs, 3 categorical
columns with ~50 categories, 1 prediction score in [0, 1], 8 days, index on ts),
takes the first 7 days as the reference and the last 1 h / 24 h as the current
window, and times side by side, median of ``--repeat`` runs interleaved:

(a)  driftmon's pushdown path: the cached reference profile (read back from the
     results database) + ``EventsSource.counts`` for the window; the one-off
     reference profile is timed separately;
(a*) other SQL shapes of the same counts (same bin expressions, built with
     SQLAlchemy from the source's own code expressions) -- checked equal to (a);
(b)  ``pandas.read_sql`` of the window's raw rows + ``numpy.histogram`` /
     ``value_counts`` per column with the profile's edges and categories;
(c)  PostgreSQL's own scan rate over the same rows: ``count(*)`` and one
     ``sum()``/``count()`` per watched column (the ceiling);
(d)  ``pandas.read_sql`` of the reference and current rows + an Evidently
     data-drift report with the ``kl_div`` stattest on the 24 columns: run once
     per size in a subprocess with a time limit (``--evidently-python`` names an
     interpreter with ``evidently``), for the 24 h window, and for the 1 h one
     too up to ``--evidently-all-windows`` rows; the reference is read once, in
     chunks (a single read_sql of 8.75 M rows was OOM-killed at 23 GB), and its
     read time is charged to every window.

Bytes returned are the PostgreSQL text-protocol payload of the result rows:
per row 7 bytes of DataRow header + 4 bytes of length per field + the text of
every non-NULL field (psycopg 3 fetches results in text format).  Small results
are measured from the driver's result (``PGresult.get_length``); raw-row results
are measured exactly in SQL with ``octet_length(column::text)``, which is the
same float8/text output the server sends.  RowDescription and protocol framing
outside the rows are not counted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/driftmon_bench"
START = datetime(2024, 1, 1, tzinfo=UTC)
DAY, HOUR = timedelta(days=1), timedelta(hours=1)
REFERENCE_DAYS, TOTAL_DAYS = 7, 8
NUMERIC = [f"f{i:02d}" for i in range(1, 21)]
CATEGORICAL = ["c1", "c2", "c3"]
SCORE = "score"
WATCHED = [*NUMERIC, *CATEGORICAL, SCORE]
KEY_SPAN = 1 << 16  # unnest key = column index * KEY_SPAN + (code + 2); codes < 10 002
MONITOR = "bench"
SHIPPED = "(a) pushdown: EventsSource.counts"
PEER = "(b) read_sql + numpy/pandas"
CEILING = "(c) sum() of 24 columns"

# ---------------------------------------------------------------------------
# The table, generated inside PostgreSQL.  d = 1 on the last day: drift there.

_NUMERIC_EXPRESSIONS = [
    "d * 0.5 + (random() + random() + random() - 1.5)",
    "2 + d + (random() + random() + random() - 1.5) * 2",
    "-ln(1 - random()) * (1 + d)",
    "100 * random()",
    "round((random() * 20)::numeric)::float8",
    "random() + random() + random() - 1.5",
    "7 + 3 * (random() + random() + random() - 1.5)",
    "-ln(1 - random())",
    "random()",
    "1000 * random() ^ 2",
    "random() + random() + random() - 1.5",
    "50 + 10 * (random() + random() + random() - 1.5)",
    "-ln(1 - random()) * 3",
    "random() - 0.5",
    "floor(random() * 5)",
    "(random() + random() + random() - 1.5) * 100",
    "exp(random() * 3)",
    "random() * random()",
    "3 - 2 * random()",
    "0.01 * (random() + random() + random() - 1.5)",
]
_CATEGORICAL_EXPRESSIONS = [
    "'cat_' || floor(50 * random() ^ (2 - d))::int",
    "'cat_' || floor(50 * random())::int",
    "'cat_' || floor(50 * random() ^ 3)::int",
]
_SCORE_EXPRESSION = "1 / (1 + exp(-(random() + random() + random() - 1.5) * 4 - d))"


def _nullable(expression: str) -> str:
    return f"CASE WHEN random() < 0.02 THEN NULL ELSE {expression} END"


def generate_table(engine: sa.Engine, rows: int) -> float:
    """Create and fill ``inference_log`` with ``rows`` rows; returns seconds taken."""
    columns = ", ".join(
        ["ts timestamptz NOT NULL"]
        + [f"{c} double precision" for c in NUMERIC]
        + [f"{c} text" for c in CATEGORICAL]
        + [f"{SCORE} double precision"]
    )
    values = ", ".join(
        [_nullable(e) for e in _NUMERIC_EXPRESSIONS]
        + [_nullable(e) for e in _CATEGORICAL_EXPRESSIONS]
        + [_SCORE_EXPRESSION]
    )
    # Fixed text written by this script, nothing from input but the bound row count.
    insert = sa.text(
        f"INSERT INTO inference_log SELECT ts, {values} FROM ("  # noqa: S608
        " SELECT CAST(:start AS timestamptz) + i * (interval '8 days' / CAST(:n AS float8)) AS ts,"
        " (i >= CAST(:n AS bigint) * 7 / 8)::int AS d"
        " FROM generate_series(0, CAST(:n AS bigint) - 1) AS i) AS g"
    )
    began = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("SET statement_timeout = 0")
        connection.exec_driver_sql("DROP TABLE IF EXISTS inference_log")
        # UNLOGGED only to generate faster; reads are the same as a logged table's.
        connection.exec_driver_sql(f"CREATE UNLOGGED TABLE inference_log ({columns})")
        connection.execute(insert, {"start": START, "n": rows})
        connection.exec_driver_sql("CREATE INDEX inference_log_ts ON inference_log (ts)")
        connection.exec_driver_sql("VACUUM (ANALYZE) inference_log")
        marker = f"driftmon bench rows={rows}"
        connection.exec_driver_sql(f"COMMENT ON TABLE inference_log IS '{marker}'")
    return time.perf_counter() - began


def fresh_results(engine: sa.Engine) -> None:
    """A fresh results store beside the source table: every other table dropped."""
    tables = [t for t in sa.inspect(engine).get_table_names() if t != "inference_log"]
    with engine.begin() as connection:
        for table in tables:
            quoted = engine.dialect.identifier_preparer.quote(table)
            cascade = " CASCADE" if engine.dialect.name == "postgresql" else ""
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS {quoted}{cascade}")


def existing_rows(engine: sa.Engine) -> int | None:
    with engine.connect() as connection:
        comment = connection.exec_driver_sql(
            "SELECT obj_description(to_regclass('inference_log'), 'pg_class')"
        ).scalar()
    if comment and comment.startswith("driftmon bench rows="):
        return int(comment.split("=", 1)[1])
    return None


def recreate_database(url: str) -> None:
    parsed = make_url(url)
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = parsed.database
    try:
        with admin.connect() as connection:
            quoted = connection.dialect.identifier_preparer.quote(name)
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
            connection.exec_driver_sql(f"CREATE DATABASE {quoted}")
    finally:
        admin.dispose()


def ensure_database(url: str) -> None:
    parsed = make_url(url)
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            found = connection.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": parsed.database},
            ).scalar()
            if not found:
                quoted = connection.dialect.identifier_preparer.quote(parsed.database)
                connection.exec_driver_sql(f"CREATE DATABASE {quoted}")
    finally:
        admin.dispose()


# ---------------------------------------------------------------------------
# Measuring what crosses the wire.


class WireMeter:
    """Counts statements and result bytes of an engine (text-protocol payload)."""

    SMALL = 10_000  # fields: cheap to measure here; raw rows are measured in SQL

    def __init__(self, engine: sa.Engine):
        self.statements = 0
        self.rows = 0
        self.bytes = 0
        self.unmeasured = 0
        self.log: list[tuple[str, float, int]] = []
        self.enabled = True  # off while timing: measuring costs time itself
        self._started: list[float] = []
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def reset(self) -> None:
        self.statements = self.rows = self.bytes = self.unmeasured = 0
        self.log = []

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if self.enabled:
            self._started.append(time.perf_counter())

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self._started.pop()
        self.statements += 1
        result = getattr(cursor, "pgresult", None)
        rows = result.ntuples if result is not None else 0
        fields = result.nfields if result is not None else 0
        self.rows += rows
        if result is not None and rows * fields <= self.SMALL:
            payload = rows * (7 + 4 * fields)
            for r in range(rows):
                for f in range(fields):
                    payload += len(result.get_value(r, f) or b"")
            self.bytes += payload
        elif result is not None:
            self.unmeasured += 1
        self.log.append((" ".join(statement.split())[:70], elapsed, rows))


def raw_row_bytes(engine: sa.Engine, window, columns: list[str], sample: float | None = None
                  ) -> int:
    """Text-protocol payload of ``SELECT columns FROM inference_log WHERE window``.

    Exact, or with ``sample`` (percent of pages, TABLESAMPLE SYSTEM) the bytes per
    row of the sampled rows times the window's row count.
    """
    table = sa.table("inference_log", *(sa.column(c) for c in ["ts", *columns]))
    source = sa.tablesample(table, sa.func.system(sample), name="s", seed=sa.literal(1)) \
        if sample else table
    texts = [sa.func.coalesce(sa.func.sum(sa.func.octet_length(sa.cast(source.c[c], sa.Text))), 0)
             for c in columns]
    statement = sa.select(sa.func.count(), *texts).select_from(source).where(
        source.c.ts >= window.start, source.c.ts < window.end
    )
    with engine.connect() as connection:
        count, *lengths = connection.execute(statement).one()
        if not sample:
            return int(count) * (7 + 4 * len(columns)) + int(sum(lengths))
        total = connection.execute(sa.select(sa.func.count()).where(
            table.c.ts >= window.start, table.c.ts < window.end)).scalar()
    per_row = 7 + 4 * len(columns) + int(sum(lengths)) / max(int(count), 1)
    return int(per_row * total)


# ---------------------------------------------------------------------------
# Results of one path, normalised so every path can be checked against (a).


@dataclass
class Measured:
    name: str
    rows: int  # rows the path scans (or reads)
    seconds: list[float] = field(default_factory=list)
    bytes: int | None = None
    statements: int | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else math.nan


def tallies_from_window(profile, counts) -> dict:
    """{column: (value-bin counts, other, missing)} from a WindowCounts."""
    out = {}
    for f, column in enumerate(counts.columns):
        labels = counts.labels[f]
        by_label = dict(zip(labels, counts.current[f][: len(labels)].tolist(), strict=True))
        values = tuple(by_label.get(label, 0.0) for label in profile.column(column).labels)
        out[column] = (values, by_label.get("__other__", 0.0), by_label.get("__missing__", 0.0))
    return out


def tallies_from_codes(profile, codes: dict[int, dict[int, float]]) -> dict:
    """The same shape from {column index: {bin code: count}} (code -1 other, -2 missing)."""
    out = {}
    for i, column in enumerate(profile.columns):
        tally = codes.get(i, {})
        values = tuple(float(tally.get(b, 0.0)) for b in range(len(column.labels)))
        out[column.column] = (values, float(tally.get(-1, 0.0)), float(tally.get(-2, 0.0)))
    return out


# ---------------------------------------------------------------------------
# The paths.


def monitor_settings():
    from driftmon.config_file import parse_config

    features = (
        [{"column": c, "type": "numeric", "binning": "quantile", "bins": 10} for c in NUMERIC]
        + [{"column": c, "type": "categorical", "top_k": 20} for c in CATEGORICAL]
        + [{"column": SCORE, "role": "prediction", "binning": "uniform", "range": [0, 1],
            "bins": 10}]
    )
    raw = {"monitors": [{
        "name": MONITOR,
        "source": {"kind": "events", "table": "inference_log", "timestamp_column": "ts"},
        "features": features,
    }]}
    return parse_config(raw, {}).resolved_monitors()[0]


class Alternatives:
    """Other SQL shapes of the window counts, from the source's own bin expressions."""

    def __init__(self, source, profile):
        self.source = source
        cuts = {c.column: list(c.edges) for c in profile.columns if c.kind == "numeric"}
        categories = {c.column: list(c.categories)
                      for c in profile.columns if c.kind == "categorical"}
        # Private helpers of EventsSource: the bench reuses the exact bin expressions.
        self.codes = [source._code(f, cuts, categories) for f in source.features]

    def _coded(self, window) -> sa.Subquery:
        labelled = [code.label(f"k{i}") for i, code in enumerate(self.codes)]
        return sa.select(*labelled).where(*self.source._in_window(window)).subquery("coded")

    def unnest(self, window):
        """Codes computed once per row in a subquery, unpivoted by unnest(ARRAY[...])."""
        coded = self._coded(window)
        keys = postgresql.array(
            [coded.c[f"k{i}"] + (i * KEY_SPAN + 2) for i in range(len(self.codes))]
        )
        unpivoted = sa.select(sa.func.unnest(keys).label("key")).subquery("unpivoted")
        return sa.select(unpivoted.c.key, sa.func.count()).group_by(unpivoted.c.key), "key"

    def lateral_unnest(self, window):
        """The codes inline in unnest(ARRAY[...]) joined LATERAL: one query level, so
        PostgreSQL can aggregate partially in each parallel worker."""
        keys = postgresql.array([code + (i * KEY_SPAN + 2) for i, code in enumerate(self.codes)])
        unpivot = sa.func.unnest(keys).table_valued("key").render_derived().lateral("u")
        statement = (
            sa.select(unpivot.c.key, sa.func.count())
            .select_from(self.source.table.join(unpivot, sa.true()))
            .where(*self.source._in_window(window))
            .group_by(unpivot.c.key)
        )
        return statement, "key"

    def grouping_sets(self, window):
        coded = self._coded(window)
        columns = [coded.c[f"k{i}"] for i in range(len(self.codes))]
        sets = sa.func.grouping_sets(*(sa.tuple_(c) for c in columns))
        return sa.select(*columns, sa.func.count()).group_by(sets), "sets"

    def union_all(self, window):
        return self.source._count_union(self.codes, window), "triples"

    @staticmethod
    def decode(rows, shape: str) -> dict[int, dict[int, float]]:
        codes: dict[int, dict[int, float]] = {}
        for row in rows:
            if shape == "key":
                key, count = row
                index, code = divmod(int(key), KEY_SPAN)
                code -= 2
            elif shape == "sets":
                *values, count = row
                (index,) = [i for i, v in enumerate(values) if v is not None]
                code = values[index]
            else:
                index, code, count = row
            codes.setdefault(int(index), {})[int(code)] = float(count)
        return codes


def peer_counts(frame, profile) -> dict:
    """(b): numpy.histogram / value_counts per column with the profile's bins."""
    out = {}
    for column in profile.columns:
        series = frame[column.column]
        if column.kind == "numeric":
            x = series.to_numpy(dtype=float, na_value=np.nan)
            finite = x[np.isfinite(x)]
            cuts = list(column.edges)
            if finite.size:
                low = min(float(finite.min()), *cuts) - 1.0 if cuts else float(finite.min()) - 1.0
                high = max(float(finite.max()), *cuts) + 1.0 if cuts else float(finite.max()) + 1.0
            else:
                low, high = (cuts[0] - 1.0, cuts[-1] + 1.0) if cuts else (0.0, 1.0)
            counts, _ = np.histogram(finite, bins=[low, *cuts, high])
            missing = float(x.size - finite.size)
            out[column.column] = (tuple(counts.astype(float).tolist()), 0.0, missing)
        else:
            missing = int(series.isna().sum())
            seen = series.value_counts(dropna=True)
            values = tuple(float(seen.get(c, 0)) for c in column.categories)
            other = float(len(series) - missing - sum(values))
            out[column.column] = (values, other, float(missing))
    return out


# ---------------------------------------------------------------------------
# Evidently, in a subprocess (own interpreter, memory and time limit).


def evidently_worker(args) -> None:
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    engine = sa.create_engine(args.url)
    table = sa.table("inference_log", *(sa.column(c) for c in ["ts", *WATCHED]))

    def read(start: datetime, end: datetime):
        statement = sa.select(*(table.c[c] for c in WATCHED)).where(
            table.c.ts >= start, table.c.ts < end
        )
        # In chunks: one read_sql of the 8.75 M reference rows of N = 10 M was
        # OOM-killed at 22.9 GB RSS on a 24 GiB machine (a list of row objects).
        chunks = list(pd.read_sql(statement, engine, chunksize=args.evidently_chunk))
        return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=WATCHED)

    definition = DataDefinition(numerical_columns=[*NUMERIC, SCORE],
                                categorical_columns=CATEGORICAL)
    out = {"versions": {"evidently": _version("evidently"), "pandas": pd.__version__}}
    began = time.perf_counter()
    reference = read(START, START + REFERENCE_DAYS * DAY)
    out["reference_read_s"] = time.perf_counter() - began
    out["reference_rows"] = len(reference)
    out["windows"] = {}
    for name, (start, end) in json.loads(args.evidently_windows).items():
        began = time.perf_counter()
        current = read(datetime.fromisoformat(start), datetime.fromisoformat(end))
        read_s = time.perf_counter() - began
        began = time.perf_counter()
        report = Report([DataDriftPreset(method="kl_div")])
        snapshot = report.run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
        report_s = time.perf_counter() - began
        drifted = _drifted_count(snapshot)
        out["windows"][name] = {"current_read_s": read_s, "report_s": report_s,
                                "current_rows": len(current), "drifted": drifted}
    import resource

    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print("EVIDENTLY-RESULT " + json.dumps(out), flush=True)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _drifted_count(snapshot) -> str:
    try:
        for metric in snapshot.dict()["metrics"]:
            if "DriftedColumnsCount" in metric.get("metric_name", ""):
                value = metric["value"]
                return f"{int(value['count'])} of {len(WATCHED)}"
    except Exception as exc:  # noqa: BLE001 - only a label in the table
        return f"? ({type(exc).__name__})"
    return "?"


def run_evidently(args, windows: dict) -> dict | None:
    python = args.evidently_python or sys.executable
    payload = {name: [w.start.isoformat(), w.end.isoformat()] for name, w in windows.items()}
    command = [python, __file__, "--evidently-worker", "--url", args.url,
               "--evidently-windows", json.dumps(payload),
               "--evidently-chunk", str(args.evidently_chunk)]
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=args.evidently_timeout)
    except subprocess.TimeoutExpired:
        print(f"  (d) Evidently: timed out after {args.evidently_timeout} s, skipped")
        return None
    for line in done.stdout.splitlines():
        if line.startswith("EVIDENTLY-RESULT "):
            return json.loads(line.split(" ", 1)[1])
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    print(f"  (d) Evidently failed (exit {done.returncode}): {' | '.join(tail)}")
    return None


def evidently_available(python: str) -> bool:
    check = subprocess.run([python, "-c", "import evidently"], capture_output=True)
    return check.returncode == 0


# ---------------------------------------------------------------------------
# One size.


@contextmanager
def session_settings(connection, settings: dict[str, str]):
    for name, value in settings.items():
        connection.execute(sa.select(sa.func.set_config(name, value, sa.true())))
    yield


def bench_size(args, rows: int, evidently_ok: bool) -> dict:
    from driftmon.counting.profiles import reference_profile
    from driftmon.sources import open_source
    from driftmon.store import migrate
    from driftmon.store.database import create_db_engine
    from driftmon.store.repository import Repository
    from driftmon.windows import TimeRange

    print(f"\n=== N = {rows:,} rows ===", flush=True)
    engine = create_db_engine(args.url)
    meter = WireMeter(engine)
    if args.reuse and existing_rows(engine) == rows:
        print("  table: reused")
    else:
        seconds = generate_table(engine, rows)
        print(f"  table: generated in {seconds:.1f} s", flush=True)
    with engine.connect() as connection:
        size = connection.exec_driver_sql(
            "SELECT pg_size_pretty(pg_total_relation_size('inference_log'))").scalar()
    print(f"  table size {size}")

    reference = TimeRange(START, START + REFERENCE_DAYS * DAY)
    end = START + TOTAL_DAYS * DAY
    windows = {"1h": TimeRange(end - HOUR, end), "24h": TimeRange(end - DAY, end)}
    window_rows = {}
    with engine.connect() as connection:
        for name, window in windows.items():
            window_rows[name] = connection.execute(
                sa.text("SELECT count(*) FROM inference_log WHERE ts >= :s AND ts < :e"),
                {"s": window.start, "e": window.end},
            ).scalar()
        reference_rows = connection.execute(
            sa.text("SELECT count(*) FROM inference_log WHERE ts >= :s AND ts < :e"),
            {"s": reference.start, "e": reference.end},
        ).scalar()

    # --- the one-off reference profile, stored in a fresh results database ---
    results_dir = tempfile.TemporaryDirectory(prefix="driftmon-bench-")
    results = create_db_engine(f"sqlite:///{results_dir.name}/results.db")
    migrate.upgrade(results)
    results_meter = WireMeter(results)
    repository = Repository()
    monitor = monitor_settings()
    source = open_source(monitor, engine)
    meter.reset()
    began = time.perf_counter()
    profile = reference_profile(repository, results, source, MONITOR, reference)
    profile_s = time.perf_counter() - began
    profile_log = list(meter.log)
    profile_statements, profile_src_statements = meter.statements, source.statements
    print(f"  reference profile ({reference_rows:,} rows): {profile_s:.1f} s, "
          f"{profile_statements} SQL statements on the source "
          f"({profile_src_statements} counted by EventsSource.statements, the rest is reflection)")
    for text, seconds, returned in profile_log:
        if seconds >= 0.05:
            print(f"      {seconds:7.2f} s  {returned:5d} rows  {text}")
    alternatives = Alternatives(source, profile)

    # the reference count pass in the proposed shape, once (what the profile would cost)
    statement, shape = alternatives.lateral_unnest(reference)
    began = time.perf_counter()
    with engine.connect() as connection:
        reference_codes = Alternatives.decode(connection.execute(statement).all(), shape)
    unnest_reference_s = time.perf_counter() - began
    expected = {c.column: (tuple(c.counts), c.other, c.missing) for c in profile.columns}
    same = tallies_from_codes(profile, reference_codes) == expected
    # the profile's last statement counts the reference (the costliest one on PostgreSQL)
    count_pass = profile_log[-1][1] if profile_log else math.nan
    print(f"  reference count pass: as shipped {count_pass:.2f} s, LATERAL unnest shape "
          f"{unnest_reference_s:.2f} s ({'same counts' if same else 'COUNTS DIFFER'})", flush=True)

    table = sa.table("inference_log", *(sa.column(c) for c in ["ts", *WATCHED]))
    summary = {"rows": rows, "profile_s": profile_s, "profile_statements": profile_statements,
               "windows": {}}

    evidently = None
    if evidently_ok:
        chosen = {k: w for k, w in windows.items()
                  if k == "24h" or rows <= args.evidently_all_windows}
        print(f"  (d) Evidently: running for {', '.join(chosen)} "
              "(reads the 7-day reference once) ...", flush=True)
        evidently = run_evidently(args, chosen)

    for name, window in windows.items():
        n = window_rows[name]
        in_window = [table.c.ts >= window.start, table.c.ts < window.end]
        reference_tallies = None

        def pushdown(window=window):
            cached = reference_profile(repository, results, source, MONITOR, reference)
            return tallies_from_window(cached, source.counts(cached, window))

        def alternative(build, settings=None, window=window):
            def count_this_way():
                statement, shape = build(window)
                with engine.connect() as connection:
                    with session_settings(connection, settings or {}):
                        found = connection.execute(statement).all()
                return tallies_from_codes(profile, Alternatives.decode(found, shape))
            return count_this_way

        def peer(window=window, in_window=in_window):
            import pandas as pd

            statement = sa.select(*(table.c[c] for c in WATCHED)).where(*in_window)
            frame = pd.read_sql(statement, engine)
            return peer_counts(frame, profile)

        def scan_count(in_window=in_window):
            with engine.connect() as connection:
                return connection.execute(sa.select(sa.func.count()).where(*in_window)).all()

        def scan_sum(in_window=in_window):
            aggregates = [sa.func.count()]
            aggregates += [sa.func.sum(table.c[c]) for c in [*NUMERIC, SCORE]]
            aggregates += [sa.func.count(table.c[c]) for c in CATEGORICAL]
            with engine.connect() as connection:
                return connection.execute(sa.select(*aggregates).where(*in_window)).all()

        paths: list[tuple[str, Callable, bool]] = [
            (SHIPPED, pushdown, True),
            ("(a*) unnest(ARRAY[codes]) in a subquery", alternative(alternatives.unnest), True),
            ("(a*) LATERAL unnest(ARRAY[codes])", alternative(alternatives.lateral_unnest), True),
            ("(a*) LATERAL unnest + jit=off",
             alternative(alternatives.lateral_unnest, {"jit": "off"}), True),
            ("(a*) GROUPING SETS", alternative(alternatives.grouping_sets), True),
            ("(a*) UNION ALL of 24 GROUP BY", alternative(alternatives.union_all), True),
            (PEER, peer, True),
            ("(c) count(*)", scan_count, False),
            (CEILING, scan_sum, False),
        ]
        if args.no_alternatives:
            paths = [p for p in paths if not p[0].startswith("(a*)")]
        # Warm the window's pages once (the OS cache holds the table); then every
        # path runs --repeat times, interleaved, so load on the machine hits all alike.
        scan_sum()
        print(f"  window {name}: {n:,} rows; timing ...", flush=True)
        measured = {label: Measured(label, n) for label, _, _ in paths}
        checked: dict[str, str] = {}
        results_statements = 0
        for repetition in range(args.repeat):
            for label, run, verify in paths:
                m = measured[label]
                if m.seconds and m.seconds[0] > args.slow:
                    continue  # too slow to repeat: keep its one run
                meter.reset()
                results_meter.reset()
                began = time.perf_counter()
                outcome = run()
                m.seconds.append(time.perf_counter() - began)
                if repetition:
                    continue
                m.statements = meter.statements
                m.bytes = meter.bytes if not meter.unmeasured else None
                if run is pushdown:
                    results_statements = results_meter.statements
                if verify:
                    if reference_tallies is None:
                        reference_tallies = outcome
                        checked[label] = "="
                    else:
                        checked[label] = "=" if outcome == reference_tallies else "DIFFERS"
        measured[PEER].bytes = raw_row_bytes(engine, window, WATCHED)
        if evidently and name in evidently["windows"]:
            e = evidently["windows"][name]
            total = evidently["reference_read_s"] + e["current_read_s"] + e["report_s"]
            m = Measured("(d) read_sql + Evidently kl_div",
                         evidently["reference_rows"] + e["current_rows"],
                         seconds=[total], statements=2)
            m.bytes = raw_row_bytes(engine, reference, WATCHED, sample=args.sample) \
                + raw_row_bytes(engine, window, WATCHED)
            m.note = (f"1 run: read ref {evidently['reference_read_s']:.1f} s + cur "
                      f"{e['current_read_s']:.1f} s + report {e['report_s']:.1f} s; "
                      f"drifted columns {e['drifted']}; peak RSS {evidently['peak_rss_gb']:.1f} GB")
            measured[m.name] = m
        summary["windows"][name] = {k: vars(v) | {"median": v.median} for k, v in measured.items()}
        print_table(name, n, measured, checked)
        a = measured[SHIPPED]
        print(f"  (a) per window: {a.statements} SQL statement(s) on the source database, "
              f"{results_statements} on the results database (cached profile read back)")
        summary["windows"][name]["statements"] = {"source": a.statements,
                                                  "results_db": results_statements}
    results.dispose()
    results_dir.cleanup()
    engine.dispose()
    return summary


def _fmt_bytes(value: int | None) -> str:
    if value is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"


def print_table(name: str, n: int, measured: dict[str, Measured], checked: dict[str, str]) -> None:
    print(f"\n  window {name} ({n:,} rows in the window)")
    header = f"  {'path':44s} {'median s':>9s} {'min-max s':>14s} {'rows/s':>9s} " \
             f"{'bytes':>9s} {'stmts':>5s} {'counts':>6s}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for label, m in measured.items():
        spread = f"{min(m.seconds):.3f}-{max(m.seconds):.3f}" if m.seconds else "-"
        rate = m.rows / m.median if m.seconds and m.median > 0 else math.nan
        print(f"  {label:44s} {m.median:9.3f} {spread:>14s} {rate:9.2e} {_fmt_bytes(m.bytes):>9s} "
              f"{m.statements if m.statements is not None else '?':>5} {checked.get(label, ''):>6s}"
              f"  n={len(m.seconds)}")
    for label, m in measured.items():
        if label.startswith("(d)"):
            print(f"      (d): {m.note}")
    a = measured.get(SHIPPED)
    best = min((m for k, m in measured.items() if k.startswith("(a*)")), key=lambda m: m.median,
               default=None)
    b = measured.get(PEER)
    c = measured.get(CEILING)
    d = next((m for k, m in measured.items() if k.startswith("(d)")), None)
    fastest = (f"fastest (a*) = {best.name}", best) if best else ("", None)
    for title, x in (("as shipped", a), fastest):
        if x is None:
            continue
        parts = []
        if d is not None:
            parts.append(f"(d)/(a) = {d.median / x.median:.1f}x")
        if b is not None:
            parts.append(f"(b)/(a) = {b.median / x.median:.1f}x")
        if c is not None:
            parts.append(f"(a)/(c-sum) = {x.median / c.median:.1f}x")
        print(f"  ratios, (a) {title}: " + ", ".join(parts))
    print(flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per path (median)")
    parser.add_argument("--url", default=os.environ.get("DRIFTMON_BENCH_URL", DEFAULT_URL),
                        help="PostgreSQL database the bench owns (dropped and recreated)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the database and reuse inference_log if it has N rows")
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--evidently-python", default=None,
                        help="interpreter with evidently installed (default: this one)")
    parser.add_argument("--evidently-timeout", type=int, default=900)
    parser.add_argument("--evidently-all-windows", type=int, default=1_000_000,
                        help="(d) runs the 1 h window too up to this N (always the 24 h one)")
    parser.add_argument("--evidently-chunk", type=int, default=250_000,
                        help="rows per read_sql chunk in (d)")
    parser.add_argument("--no-alternatives", action="store_true", help="skip the (a*) rows")
    parser.add_argument("--slow", type=float, default=60.0,
                        help="a path whose first run takes longer than this many seconds runs once")
    parser.add_argument("--statement-timeout", type=int, default=600, help="seconds, per statement")
    parser.add_argument("--sample", type=float, default=2.0,
                        help="percent of pages sampled to size (d)'s reference rows in bytes")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--evidently-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--evidently-windows", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.evidently_worker:
        evidently_worker(args)
        return
    if args.statement_timeout:
        url = make_url(args.url)
        options = f"-c statement_timeout={args.statement_timeout * 1000}"
        args.url = url.update_query_dict({"options": options}).render_as_string(hide_password=False)
    if args.reuse:
        ensure_database(args.url)
    else:
        recreate_database(args.url)
    evidently_ok = False
    if not args.skip_evidently:
        python = args.evidently_python or sys.executable
        evidently_ok = evidently_available(python)
        if not evidently_ok:
            print(f"(d) skipped: evidently is not importable by {python} "
                  "(pass --evidently-python or --skip-evidently)")
    import pandas

    print(f"python {sys.version.split()[0]}, pandas {pandas.__version__}, numpy {np.__version__}, "
          f"SQLAlchemy {sa.__version__}")
    with sa.create_engine(args.url).connect() as connection:
        print(connection.exec_driver_sql("SELECT version()").scalar().split(" on ")[0],
              "| jit", connection.exec_driver_sql("SHOW jit").scalar(),
              "| max_parallel_workers_per_gather",
              connection.exec_driver_sql("SHOW max_parallel_workers_per_gather").scalar(),
              "| work_mem", connection.exec_driver_sql("SHOW work_mem").scalar(),
              f"| {os.cpu_count()} CPUs")
    began = time.perf_counter()
    summaries = []
    for rows in args.sizes:
        summaries.append(bench_size(args, rows, evidently_ok))
        if args.json:
            args.json.write_text(json.dumps(summaries, indent=1, default=str))
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
