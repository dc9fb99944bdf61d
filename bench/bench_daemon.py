"""Benchmark of ``driftmon serve`` (issue 7): cycle time, peak RSS, /metrics under load.

Not a timed test: run it by hand (see bench/README.md).

    python bench/bench_daemon.py [--backend sqlite|postgresql|both] [--monitors 100] [--columns 50]
    python bench/bench_daemon.py --schedule 5s --schedule-monitors 25 50 100   # sustained load

``--schedule EVERY`` measures instead how many monitors one daemon sustains on
a short schedule without missing a window: bench/bench_daemon_schedule.py.

For each backend it generates ONE shared events table (``ts`` + ``--columns``
watched columns: mostly numeric ``quantile`` 10 bins, some ``categorical``
top_k 20, some ``uniform`` 10 bins with and without ``range``; ~2 % NULLs;
``--rows`` rows over 8 days, drift on the last day), then configures
``--monitors`` identical monitors on it (fixed reference = the first 7 days,
window = 1 h, schedule ``every: 1d`` so that no tick fires during the
benchmark: the runs are driven by ``catch_up``), with ``compute.workers=2`` and
``compute.threads=1``.

* PostgreSQL: the table is generated inside the database with
  ``generate_series``; source and results live in the database ``--pg-db``
  (dropped and recreated, dropped again at the end unless ``--keep``).
* SQLite: the table is generated with numpy and written with ``executemany``
  into ``source.db``; the results store is another file, ``driftmon.db``, as
  ``driftmon demo`` lays them out.

Two ``driftmon serve`` subprocesses per backend (``DRIFTMON_LOG_FORMAT=json``):

1. **cold**: empty results store, ``catch_up: 1``: every monitor computes its
   reference profile (cut points, categories, reference counts) and the latest
   window. Series appear as the cycle goes (0 -> 5 000 drift columns).
2. **steady**: the same store, ``catch_up: 2``: the latest window is stored, so
   every monitor computes exactly one older window with its profile read back
   from the store. The 5 000 columns are restored from the store before
   ``/readyz``, so every scrape of this phase sees all of them while runs are
   in flight.

Cycle time = last ``run.finished`` line's time minus the earliest run start
(a line's time minus its ``duration_seconds``), from the daemon's own log.
While the daemon runs, a thread scrapes ``/metrics`` back to back (one new
connection each, as a Prometheus server without keep-alive would) and records
latency and response size; a scrape counts as "in flight" when it started and
ended between the first run start and the last run end. Peak RSS is ``VmHWM``
of the serve process from ``/proc``. After the cycle: idle scrapes (no run in
flight), a few OpenMetrics scrapes, then SIGTERM (exit code, shutdown time).

``--profile`` then rebuilds the daemon's collector in this process from the
results store (same config, same ``DriftState.restore``) and runs cProfile over
``generate_latest``: where a scrape's time goes, without the daemon's
worker threads competing for the GIL.
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import io
import json
import os
import pstats
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/driftmon_bench_daemon"
DAY, HOUR = timedelta(days=1), timedelta(hours=1)
TABLE = "events"
NULL_SHARE = 0.02


# ---------------------------------------------------------------------------
# Columns: the mix of the issue, for any --columns.


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # quantile | uniform_range | uniform_span | categorical
    index: int  # which generator expression

    def feature(self) -> dict:
        if self.kind == "categorical":
            return {"column": self.name, "type": "categorical", "top_k": 20}
        if self.kind == "uniform_range":
            feature = {"column": self.name, "binning": "uniform", "range": [0.0, 1.0], "bins": 10}
            return {**feature, "role": "prediction"} if self.index == 0 else feature
        if self.kind == "uniform_span":
            return {"column": self.name, "binning": "uniform", "bins": 10}
        return {"column": self.name, "binning": "quantile", "bins": 10}

    @property
    def sql_type(self) -> str:
        return "text" if self.kind == "categorical" else "double precision"


def column_mix(count: int) -> list[Column]:
    """~16 % categorical, ~8 % uniform (half with a range), the rest quantile."""
    categorical = max(1, round(count * 0.16)) if count >= 3 else 0
    uniform = max(1, round(count * 0.08)) if count >= 3 else 0
    quantile = count - categorical - uniform
    with_range = (uniform + 1) // 2
    columns = [Column(f"q{i:02d}", "quantile", i) for i in range(quantile)]
    columns += [Column(f"u{i}", "uniform_range", i) for i in range(with_range)]
    columns += [Column(f"s{i}", "uniform_span", i) for i in range(uniform - with_range)]
    columns += [Column(f"c{i}", "categorical", i) for i in range(categorical)]
    return columns


# Numeric generators; d = 1 on the last day (drift), 0 before. Every third
# quantile column drifts. PostgreSQL text and the numpy twin draw the same laws.
_PG_NUMERIC = [
    "{d} * 0.5 + (random() + random() + random() - 1.5)",
    "-ln(1 - random())",
    "100 * random()",
    "round((random() * 20)::numeric)::float8",
    "50 + 10 * (random() + random() + random() - 1.5)",
    "exp(random() * 3)",
]


def _np_numeric(i: int, rng: np.random.Generator, d: np.ndarray) -> np.ndarray:
    n = d.size
    law = i % len(_PG_NUMERIC)
    if law == 0:
        values = d * 0.5 + rng.random(n) + rng.random(n) + rng.random(n) - 1.5
    elif law == 1:
        values = -np.log1p(-rng.random(n))
    elif law == 2:
        values = 100 * rng.random(n)
    elif law == 3:
        values = np.round(rng.random(n) * 20)
    elif law == 4:
        values = 50 + 10 * (rng.random(n) + rng.random(n) + rng.random(n) - 1.5)
    else:
        values = np.exp(rng.random(n) * 3)
    return values


def _drifts(column: Column) -> bool:
    return column.kind == "quantile" and column.index % 3 == 0


def _pg_expression(column: Column) -> str:
    d = "d" if _drifts(column) or column.kind != "quantile" else "0"
    if column.kind == "quantile":
        expression = _PG_NUMERIC[column.index % len(_PG_NUMERIC)].format(d=d)
        if _drifts(column) and column.index % len(_PG_NUMERIC) != 0:
            expression = f"({expression}) * (1 + 0.3 * d)"
    elif column.kind == "uniform_range":
        expression = "1 / (1 + exp(-(random() + random() + random() - 1.5) * 4 - d))"
    elif column.kind == "uniform_span":
        expression = "random() * 10 + d"
    else:
        # ~30 categories, skewed; the last day skews harder on even columns.
        power = "(2 - d)" if column.index % 2 == 0 else "2"
        expression = f"'cat_' || floor(30 * random() ^ {power})::int"
    return f"CASE WHEN random() < {NULL_SHARE} THEN NULL ELSE {expression} END"


def _np_column(column: Column, rng: np.random.Generator, d: np.ndarray) -> list:
    n = d.size
    if column.kind == "quantile":
        values = _np_numeric(column.index, rng, d if _drifts(column) else np.zeros(n))
        if _drifts(column) and column.index % len(_PG_NUMERIC) != 0:
            values = values * (1 + 0.3 * d)
    elif column.kind == "uniform_range":
        values = 1 / (1 + np.exp(-(rng.random(n) + rng.random(n) + rng.random(n) - 1.5) * 4 - d))
    elif column.kind == "uniform_span":
        values = rng.random(n) * 10 + d
    else:
        power = (2 - d) if column.index % 2 == 0 else np.full(n, 2.0)
        codes = np.floor(30 * rng.random(n) ** power).astype(int)
        labels = np.array([f"cat_{k}" for k in range(31)], dtype=object)[codes]
        labels[rng.random(n) < NULL_SHARE] = None
        return labels.tolist()
    values = values.astype(object)
    values[rng.random(n) < NULL_SHARE] = None
    return values.tolist()


# ---------------------------------------------------------------------------
# The data, per backend.


def generate_postgresql(url: str, columns: list[Column], rows: int, start: datetime) -> float:
    recreate_database(url)
    engine = sa.create_engine(url)
    names = ", ".join(["ts timestamptz NOT NULL", *(f"{c.name} {c.sql_type}" for c in columns)])
    values = ", ".join(_pg_expression(c) for c in columns)
    # Fixed text written by this script; only the row count and start are bound.
    insert = sa.text(
        f"INSERT INTO {TABLE} SELECT ts, {values} FROM ("  # noqa: S608
        " SELECT CAST(:start AS timestamptz) + i * (interval '8 days' / CAST(:n AS float8)) AS ts,"
        " (i >= CAST(:n AS bigint) * 7 / 8)::int AS d"
        " FROM generate_series(0, CAST(:n AS bigint) - 1) AS i) AS g"
    )
    began = time.perf_counter()
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(f"CREATE TABLE {TABLE} ({names})")
            connection.execute(insert, {"start": start, "n": rows})
            connection.exec_driver_sql(f"CREATE INDEX {TABLE}_ts ON {TABLE} (ts)")
            connection.exec_driver_sql(f"VACUUM (ANALYZE) {TABLE}")
    finally:
        engine.dispose()
    return time.perf_counter() - began


def generate_sqlite(path: Path, columns: list[Column], rows: int, start: datetime, seed: int = 7) -> float:
    began = time.perf_counter()
    rng = np.random.default_rng(seed)
    connection = sqlite3.connect(path)
    try:
        types = ", ".join(["ts DATETIME NOT NULL",
                           *(f"{c.name} {'VARCHAR' if c.kind == 'categorical' else 'FLOAT'}" for c in columns)])
        connection.execute(f"CREATE TABLE {TABLE} ({types})")
        placeholders = ", ".join("?" * (len(columns) + 1))
        statement = f"INSERT INTO {TABLE} VALUES ({placeholders})"  # noqa: S608
        start_us = np.datetime64(start.replace(tzinfo=None), "us")
        step = np.timedelta64(int(8 * DAY.total_seconds() * 1e6 / rows), "us")
        chunk = 50_000
        for offset in range(0, rows, chunk):
            i = np.arange(offset, min(rows, offset + chunk))
            d = (i >= rows * 7 // 8).astype(float)
            # Naive UTC text, as SQLAlchemy's DateTime writes it on SQLite.
            stamps = np.char.replace(np.datetime_as_string(start_us + i * step, unit="us"), "T", " ")
            data = [stamps.tolist(), *(_np_column(c, rng, d) for c in columns)]
            connection.executemany(statement, zip(*data, strict=True))
        connection.execute(f"CREATE INDEX {TABLE}_ts ON {TABLE} (ts)")
        connection.commit()
        connection.execute("ANALYZE")
        connection.commit()
    finally:
        connection.close()
    return time.perf_counter() - began


def recreate_database(url: str) -> None:
    _admin(url, drop=True, create=True)


def drop_database(url: str) -> None:
    _admin(url, drop=True, create=False)


def _admin(url: str, drop: bool, create: bool) -> None:
    parsed = make_url(url)
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            quoted = connection.dialect.identifier_preparer.quote(parsed.database)
            if drop:
                connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
            if create:
                connection.exec_driver_sql(f"CREATE DATABASE {quoted}")
    finally:
        admin.dispose()


def other_pg_activity(url: str) -> str:
    """Active statements of OTHER databases: someone else using the server."""
    parsed = make_url(url)
    engine = sa.create_engine(parsed.set(database="postgres"))
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT datname, count(*) FROM pg_stat_activity WHERE state = 'active'"
                " AND pid <> pg_backend_pid() AND datname IS DISTINCT FROM %(ours)s GROUP BY datname",
                {"ours": parsed.database}).all()
    except sa.exc.SQLAlchemyError as exc:
        return f"unknown ({type(exc).__name__})"
    finally:
        engine.dispose()
    return ", ".join(f"{name}:{n}" for name, n in rows) or "none"


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


# ---------------------------------------------------------------------------
# The config.


def write_config(path: Path, results_url: str, source_url: str | None, port: int, monitors: int,
                 columns: list[Column], reference: tuple[datetime, datetime], catch_up: int) -> Path:
    source = {"kind": "events", "table": TABLE, "timestamp_column": "ts"}
    if source_url:
        source["url"] = source_url
    features = [c.feature() for c in columns]
    config = {
        "database": {"url": results_url},
        "compute": {"device": "cpu", "dtype": "float64", "threads": 1, "workers": 2},
        "server": {"host": "127.0.0.1", "port": port, "shutdown_grace": "60s"},
        "defaults": {
            # Ticks at midnight UTC only: the runs of this benchmark are the catch-up runs.
            "schedule": {"every": "1d"},
            "window": {"size": "1h"},
            "reference": {"kind": "fixed", "start": reference[0].isoformat(),
                          "end": reference[1].isoformat()},
            "catch_up": catch_up,
        },
        "monitors": [{"name": f"m{i:03d}", "source": source, "features": features} for i in range(monitors)],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# ---------------------------------------------------------------------------
# The daemon, its scrapes and its memory.


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(port: int, path: str, timeout: float, accept: str | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Accept": accept} if accept else {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in bytes (0 once the process is gone)."""
    values = {"VmRSS": 0, "VmHWM": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return values


@dataclass
class Scrape:
    began: float  # time.time()
    seconds: float
    size: int
    status: int


@dataclass
class Scraper:
    """Scrapes /metrics back to back on a thread, bounded in count and time."""

    port: int
    pid: int
    interval: float
    max_scrapes: int
    timeout: float = 10.0
    scrapes: list[Scrape] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="scraper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=self.timeout + 5)

    def _loop(self) -> None:
        while not self._stop.is_set() and len(self.scrapes) < self.max_scrapes:
            began, clock = time.time(), time.perf_counter()
            try:
                status, body = http_get(self.port, "/metrics", self.timeout)
                self.scrapes.append(Scrape(began, time.perf_counter() - clock, len(body), status))
            except OSError:
                self.errors += 1
            self.rss.append((time.time(), proc_status(self.pid)["VmRSS"]))
            self._stop.wait(self.interval)


def start_daemon(config: Path, log_path: Path, daemon_root: Path) -> subprocess.Popen:
    """``driftmon serve`` as a user runs it; ``-m`` imports driftmon from ``daemon_root``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTMON_")}
    environ.update({"DRIFTMON_LOG_FORMAT": "json", "DRIFTMON_LOG_LEVEL": "INFO"})
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "-m", "driftmon", "serve", "--config", str(config)],
                                cwd=daemon_root, env=environ, stdout=subprocess.DEVNULL, stderr=log)


def read_log(path: Path) -> list[dict]:
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            lines.append({"event": "non-json", "message": line})
    return lines


def wait_until(condition, timeout: float, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return None


@dataclass
class Phase:
    name: str
    monitors: int  # configured in this phase
    runs_expected: int
    cycles: int  # steady: windows per monitor
    scale: float  # cycle s for all monitors = span s * scale / cycles
    started_to_ready: float = float("nan")
    span_seconds: float = float("nan")
    run_seconds: list[float] = field(default_factory=list)
    failed: int = 0
    unexpected_windows: int = 0
    hwm: int = 0
    rss_end: int = 0
    in_flight: list[Scrape] = field(default_factory=list)
    idle: list[Scrape] = field(default_factory=list)
    openmetrics: list[Scrape] = field(default_factory=list)
    samples: int = 0
    drift_columns: int = 0
    exit_code: int | None = None
    shutdown_seconds: float = float("nan")
    shutdown_logged: bool = False
    load_before: str = ""
    load_after: str = ""
    pg_others: str = ""
    note: str = ""

    @property
    def cycle_seconds(self) -> float:
        return self.span_seconds * self.scale / self.cycles


def run_phase(phase: Phase, config: Path, log_path: Path, port: int, expected_ends: set[datetime],
              scrape_interval: float, args, pg_url: str | None, daemon_root: Path) -> Phase:
    phase.load_before = loadavg()
    if pg_url:
        phase.pg_others = other_pg_activity(pg_url)
    launched = time.perf_counter()
    process = start_daemon(config, log_path, daemon_root)
    scraper = None
    try:
        def ready():
            if process.poll() is not None:
                raise RuntimeError(f"daemon exited with {process.returncode}: see {log_path}")
            try:
                return http_get(port, "/readyz", 2.0)[0] == 200
            except OSError:
                return False

        if not wait_until(ready, args.ready_timeout, 0.1):
            raise RuntimeError(f"/readyz not ready within {args.ready_timeout} s: see {log_path}")
        phase.started_to_ready = time.perf_counter() - launched
        scraper = Scraper(port, process.pid, scrape_interval, args.max_scrapes)
        scraper.start()

        def outcomes() -> list[dict]:
            return [line for line in read_log(log_path) if line.get("event") in ("run.finished", "run.failed")]

        def cycle_done():
            if process.poll() is not None:
                raise RuntimeError(f"daemon exited with {process.returncode}: see {log_path}")
            lines = outcomes()
            return lines if len(lines) >= phase.runs_expected else None

        lines = wait_until(cycle_done, args.cycle_timeout, 0.5)
        scraper.stop()
        if lines is None:
            lines = outcomes()
            phase.note = f"cycle not finished within {args.cycle_timeout} s ({len(lines)} runs)"
        phase.load_after = loadavg()
        phase.failed = sum(line["event"] == "run.failed" for line in lines)
        wanted = {end.isoformat() for end in expected_ends}
        phase.unexpected_windows = sum(line.get("window_end") not in wanted for line in lines)
        ends = [datetime.fromisoformat(line["time"]).timestamp() for line in lines]
        starts = [end - line["duration_seconds"] for end, line in zip(ends, lines, strict=True)]
        phase.run_seconds = [line["duration_seconds"] for line in lines]
        if lines:
            first, last = min(starts), max(ends)
            phase.span_seconds = last - first
            phase.in_flight = [s for s in scraper.scrapes if s.began >= first and s.began + s.seconds <= last]

        # Idle scrapes (nothing in flight), then a few OpenMetrics ones.
        body = b""
        for _ in range(args.idle_scrapes):
            clock, began = time.perf_counter(), time.time()
            status, body = http_get(port, "/metrics", 30.0)
            phase.idle.append(Scrape(began, time.perf_counter() - clock, len(body), status))
        for _ in range(min(5, args.idle_scrapes)):
            clock, began = time.perf_counter(), time.time()
            status, om = http_get(port, "/metrics", 30.0, accept="application/openmetrics-text; version=1.0.0")
            phase.openmetrics.append(Scrape(began, time.perf_counter() - clock, len(om), status))
        text = body.decode()
        phase.samples = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        # Four status series (ok, warning, critical, insufficient_data) per column.
        phase.drift_columns = sum(1 for line in text.splitlines() if line.startswith("driftmon_drift_status{")) // 4
        memory = proc_status(process.pid)
        phase.hwm, phase.rss_end = memory["VmHWM"], memory["VmRSS"]
    finally:
        if scraper:
            scraper.stop()
        stopped = time.perf_counter()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            phase.exit_code = process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            phase.exit_code = process.wait(timeout=10)
            phase.note += " killed after 90 s"
        phase.shutdown_seconds = time.perf_counter() - stopped
        phase.shutdown_logged = any(line.get("event") == "daemon.stopped" for line in read_log(log_path))
    return phase


def seed_profiles(results_url: str, source: str, targets: list[str]) -> float:
    """Copy ``source``'s stored reference profiles to ``targets``.

    Every monitor of this benchmark watches the same columns of the same table
    with the same binning, so their profiles are identical (the stored config
    hash does not involve the monitor's name); copying them stands in for the
    cold runs of the monitors the cold phase did not run.
    """
    from driftmon.store.database import create_db_engine
    from driftmon.store.models import ReferenceProfile

    table = ReferenceProfile.__table__
    names = [c.name for c in table.columns if c.name not in ("id", "monitor")]
    engine = create_db_engine(results_url)
    began = time.perf_counter()
    try:
        with engine.begin() as connection:
            for name in targets:
                rows = sa.select(sa.literal(name).label("monitor"), *(table.c[n] for n in names)) \
                    .where(table.c.monitor == source)
                connection.execute(table.insert().from_select(["monitor", *names], rows))
    finally:
        engine.dispose()
    return time.perf_counter() - began


# ---------------------------------------------------------------------------
# Reporting.


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values), q))


def ms(seconds: float) -> str:
    return "-" if seconds != seconds else f"{seconds * 1000:.0f}"


def mib(size: float) -> str:
    return f"{size / 2**20:.1f}"


def mb(size: float) -> str:
    return f"{size / 1e6:.0f}"


def print_table(results: list[tuple[str, Phase]], monitors: int, columns: int) -> None:
    print(f"\n{monitors} monitors x {columns} columns, compute.workers=2, compute.threads=1, "
          f"{os.cpu_count()} CPUs; scrape latency client-side, one new connection per scrape")
    header = (f"{'backend':<10} {'phase':<6} {'mon':>4} {'runs':>5} {'span s':>7} {'cycle s':>8} "
              f"{'run p50':>7} {'run max':>7} {'fail':>4} {'RSS MB':>6} {'scrapes':>7} {'p50 ms':>7} "
              f"{'p99 ms':>7} {'max ms':>7} {'idle ms':>7} {'OM ms':>6} {'MiB':>5} {'samples':>7} "
              f"{'cols':>5} {'exit':>4} {'stop s':>6} {'load':>9}")
    print(header)
    print("-" * len(header))
    for backend, p in results:
        in_flight = [s.seconds for s in p.in_flight]
        sizes = [s.size for s in p.idle]
        print(f"{backend:<10} {p.name:<6} {p.monitors:>4} {len(p.run_seconds):>5} {p.span_seconds:>7.1f} "
              f"{p.cycle_seconds:>8.1f} "
              f"{statistics.median(p.run_seconds) if p.run_seconds else float('nan'):>7.2f} "
              f"{max(p.run_seconds) if p.run_seconds else float('nan'):>7.2f} {p.failed:>4} "
              f"{mb(p.hwm):>6} {len(in_flight):>7} {ms(pct(in_flight, 50)):>7} {ms(pct(in_flight, 99)):>7} "
              f"{ms(max(in_flight) if in_flight else float('nan')):>7} "
              f"{ms(pct([s.seconds for s in p.idle], 50)):>7} {ms(pct([s.seconds for s in p.openmetrics], 50)):>6} "
              f"{mib(statistics.median(sizes)) if sizes else '-':>5} {p.samples:>7} {p.drift_columns:>5} "
              f"{p.exit_code!s:>4} {p.shutdown_seconds:>6.1f} {p.load_before + '>' + p.load_after:>9}")
    print("""
  cold   : the first monitors on an empty store: reference profile + latest window per run;
           cycle s = span x monitors / cold monitors (throughput-bound: 2 workers)
  fill   : the other monitors, profiles seeded in the store (copies of the cold ones), latest window;
           light scraping (--fill-scrape-interval); cycle s = span x monitors / runs
  steady : every monitor, --steady-cycles older windows each, profiles from the store, every column's
           series restored before /readyz; scrapes back to back; cycle s = span / cycles
  span = first run start -> last run end (run.finished lines); scrapes/p50/p99/max = scrapes entirely
  inside the span; idle = scrapes after it; OM = OpenMetrics scrapes; MiB/samples/cols = one idle
  scrape's body size (MiB), sample lines, drift columns (status series / 4); RSS = VmHWM of the serve
  process; exit/stop s = SIGTERM to exit; load = 1-min loadavg before > after""")
    for backend, p in results:
        notes = []
        if p.unexpected_windows:
            notes.append(f"{p.unexpected_windows} run(s) of an unexpected window (a tick passed?)")
        if p.failed:
            notes.append(f"{p.failed} failed run(s): see the log")
        if not p.shutdown_logged:
            notes.append("no daemon.stopped log line")
        if p.pg_others and p.pg_others != "none":
            notes.append(f"other PostgreSQL activity at start: {p.pg_others}")
        if p.name == "steady" and len(p.in_flight) < 50:
            notes.append(f"only {len(p.in_flight)} scrapes in flight (< 50): raise --steady-cycles")
        if p.note:
            notes.append(p.note.strip())
        if notes:
            print(f"  note {backend}/{p.name}: " + "; ".join(notes))
    lines = []
    for backend in dict.fromkeys(b for b, _ in results):
        phases = [p for b, p in results if b == backend]
        steady = next((p for p in phases if p.name == "steady"), None)
        if steady and steady.in_flight:
            p99 = pct([s.seconds for s in steady.in_flight], 99)
            lines.append(f"{backend}: /metrics p99 {ms(p99)} ms at {steady.drift_columns} columns "
                         f"({steady.samples} samples) while a cycle runs -> "
                         f"{'MET' if p99 < 0.1 else 'NOT MET'} (< 100 ms)")
        peak = max(p.hwm for p in phases)
        lines.append(f"{backend}: peak RSS {mb(peak)} MB over all phases -> "
                     f"{'MET' if peak < 500e6 else 'NOT MET'} (< 500 MB)")
    print("\ntargets:\n  " + "\n  ".join(lines))


def profile_collector(config_path: Path, repeat: int) -> None:
    """The daemon's scrape path, rebuilt in this process from the results store."""
    from prometheus_client import CollectorRegistry, generate_latest

    import driftmon
    from driftmon.config_file import load_config
    from driftmon.serving.metrics import DriftCollector, DriftState
    from driftmon.serving.run_metrics import RunMetrics
    from driftmon.store.database import create_db_engine
    from driftmon.store.repository import Repository

    config = load_config(config_path, environ={})
    monitors = config.resolved_monitors()
    engine = create_db_engine(config.database.url)
    try:
        with engine.connect() as connection:
            rows = Repository().latest_results(connection)
            successes = Repository().last_successes(connection)
    finally:
        engine.dispose()
    registry = CollectorRegistry()
    state = DriftState()
    state.restore(rows, successes)
    RunMetrics(registry).prepare(m.name for m in monitors)
    collector = DriftCollector(state, monitors, {"version": "bench", "torch_version": "-", "device": "cpu"})
    registry.register(collector)

    def median_seconds(call) -> float:
        call()
        times = []
        for _ in range(repeat):
            clock = time.perf_counter()
            call()
            times.append(time.perf_counter() - clock)
        return statistics.median(times)

    body = generate_latest(registry)
    print(f"\nprofile ({Path(driftmon.__file__).parent}): {len(rows)} restored results, {mib(len(body))} MiB; "
          "in this process, "
          f"no runs: generate_latest(registry) median {ms(median_seconds(lambda: generate_latest(registry)))} ms, "
          f"of which DriftCollector.collect() {ms(median_seconds(lambda: list(collector.collect())))} ms")
    exposition = getattr(collector, "exposition", None)  # the fast path proposed in the report, if present
    if exposition:
        print(f"  DriftCollector.exposition() median {ms(median_seconds(lambda: exposition(False)))} ms")
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(3):
        generate_latest(registry)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
    text = out.getvalue()
    print(text[text.index("ncalls"):].rstrip() if "ncalls" in text else text)


# ---------------------------------------------------------------------------


def bench_backend(backend: str, args, columns: list[Column], workdir: Path) -> list[tuple[str, Phase]]:
    now = datetime.now(UTC)
    end = datetime(now.year, now.month, now.day, tzinfo=UTC)  # the latest tick of `every: 1d`
    if (end + DAY - now) < timedelta(minutes=20):
        print(f"[{backend}] warning: midnight UTC is near: a new tick may add runs", flush=True)
    start = end - 8 * DAY
    reference = (start, start + 7 * DAY)
    folder = workdir / backend
    folder.mkdir(parents=True, exist_ok=True)
    if backend == "postgresql":
        results_url, source_url = args.pg_url, None
        seconds = generate_postgresql(args.pg_url, columns, args.rows, start)
    else:
        source_path, results_path = folder / "source.db", folder / "driftmon.db"
        for path in folder.glob("*.db*"):
            path.unlink()
        results_url, source_url = f"sqlite:///{results_path}", f"sqlite:///{source_path}"
        seconds = generate_sqlite(source_path, columns, args.rows, start)
    print(f"[{backend}] generated {args.rows} rows x {len(columns)} columns in {seconds:.1f} s; latest window "
          f"[{(end - HOUR).isoformat()}, {end.isoformat()}), reference [{reference[0].isoformat()}, "
          f"{reference[1].isoformat()})", flush=True)

    n = args.monitors
    cold_n = min(n, args.cold_monitors or (2 if backend == "sqlite" else 10))
    cycles = args.steady_cycles
    pg = args.pg_url if backend == "postgresql" else None
    names = [f"m{i:03d}" for i in range(n)]
    phases = []

    def phase(name, monitors, catch_up, runs, ends, scale, cycles_, interval):
        port = free_port()
        config = write_config(folder / f"{name}.yaml", results_url, source_url, port, monitors, columns,
                              reference, catch_up)
        result = run_phase(Phase(name, monitors, runs, cycles_, scale), config, folder / f"{name}.log", port,
                           ends, interval, args, pg, args.daemon_root)
        print(f"[{backend}] {name}: {len(result.run_seconds)} runs in {result.span_seconds:.1f} s, "
              f"{len(result.in_flight)} scrapes in flight, peak RSS {mb(result.hwm)} MB, "
              f"exit {result.exit_code}", flush=True)
        phases.append((backend, result))
        return config

    phase("cold", cold_n, 1, cold_n, {end}, n / cold_n, 1, args.scrape_interval)
    if cold_n < n:
        seconds = seed_profiles(results_url, names[0], names[cold_n:])
        print(f"[{backend}] seeded the profiles of {n - cold_n} monitors in {seconds:.1f} s", flush=True)
        phase("fill", n, 1, n - cold_n, {end}, n / (n - cold_n), 1, args.fill_scrape_interval)
    steady = phase("steady", n, 1 + cycles, n * cycles, {end - k * DAY for k in range(1, cycles + 1)},
                   1.0, cycles, args.scrape_interval)
    if args.profile:
        # A child process, so that driftmon is imported from --daemon-root.
        environ = {**os.environ, "PYTHONPATH": str(args.daemon_root)}
        sys.stdout.flush()
        subprocess.run([sys.executable, __file__, "--profile-config", str(steady),
                        "--profile-repeat", str(args.profile_repeat)], env=environ, timeout=600, check=False)
    return phases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default=None,
                        help="[default: both; postgresql with --schedule]")
    parser.add_argument("--monitors", type=int, default=100)
    parser.add_argument("--columns", type=int, default=None, help="[default: 50; 10 with --schedule]")
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the shared events table (8 days)")
    parser.add_argument("--cold-monitors", type=int, default=0,
                        help="monitors of the cold phase [default: 2 on SQLite, 10 on PostgreSQL]")
    parser.add_argument("--steady-cycles", type=int, default=6,
                        help="older windows per monitor in the steady phase (1 to 7)")
    parser.add_argument("--pg-url", default=os.environ.get("DRIFTMON_BENCH_DAEMON_URL", DEFAULT_PG_URL),
                        help="PostgreSQL database to (re)create for source and results")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for configs, logs, SQLite files")
    parser.add_argument("--scrape-interval", type=float, default=0.05, help="pause between scrapes (s)")
    parser.add_argument("--fill-scrape-interval", type=float, default=5.0, help="same, in the fill phase")
    parser.add_argument("--max-scrapes", type=int, default=3000, help="bound on scrapes per phase")
    parser.add_argument("--idle-scrapes", type=int, default=20)
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--cycle-timeout", type=float, default=420.0, help="bound on one phase's runs (s)")
    parser.add_argument("--profile", action="store_true", help="profile the scrape path after the steady phase")
    parser.add_argument("--profile-repeat", type=int, default=5)
    parser.add_argument("--daemon-root", type=Path, default=ROOT,
                        help="run `python -m driftmon` from this checkout (e.g. a patched copy)")
    parser.add_argument("--keep", action="store_true", help="keep the database and the work folder")
    parser.add_argument("--profile-config", type=Path, default=None, help=argparse.SUPPRESS)
    schedule = parser.add_argument_group("sustained load (--schedule)")
    schedule.add_argument("--schedule", metavar="EVERY", default=None,
                          help="measure how many monitors `every: EVERY` (e.g. 5s) sustains, instead of the phases")
    schedule.add_argument("--schedule-monitors", type=int, nargs="+", default=[25, 50, 100],
                          help="monitor counts, one serve run each")
    schedule.add_argument("--duration", type=float, default=180.0, help="seconds each serve run lasts")
    schedule.add_argument("--warmup", type=float, default=30.0, help="seconds after /readyz not measured")
    schedule.add_argument("--window", default="1h", help="window size of the monitors")
    schedule.add_argument("--workers", type=int, default=None,
                          help="compute.workers [default: left out, the daemon's own default]")
    schedule.add_argument("--baseline-root", type=Path, default=None,
                          help="also run this checkout's daemon, just before --daemon-root's, for each count")
    args = parser.parse_args()
    if args.profile_config:
        profile_collector(args.profile_config, args.profile_repeat)
        return 0
    args.backend = args.backend or ("postgresql" if args.schedule else "both")
    args.columns = args.columns or (10 if args.schedule else 50)
    if args.monitors < 1 or args.columns < 1 or args.rows < 1000:
        parser.error("--monitors and --columns must be >= 1, --rows >= 1000")
    if not 1 <= args.steady_cycles <= 7:
        parser.error("--steady-cycles must be 1 to 7 (older windows must lie in the 8 generated days)")

    columns = column_mix(args.columns)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="driftmon_bench_daemon_"))
    kinds = {k: sum(c.kind == k for c in columns) for k in ("quantile", "uniform_range", "uniform_span",
                                                             "categorical")}
    print(f"columns: {kinds}; daemon from {args.daemon_root}; workdir {workdir}; {os.cpu_count()} CPUs, "
          f"load {loadavg()}", flush=True)
    if args.schedule:
        import bench_daemon_schedule  # this folder is on sys.path: the script's own

        try:
            return bench_daemon_schedule.run(args, columns, workdir)
        finally:
            if not args.keep:
                if args.backend != "sqlite":
                    drop_database(args.pg_url)
                if args.workdir is None:
                    shutil.rmtree(workdir, ignore_errors=True)
    results: list[tuple[str, Phase]] = []
    began = time.perf_counter()
    try:
        for backend in backends:
            results += bench_backend(backend, args, columns, workdir)
    finally:
        if not args.keep:
            if "postgresql" in backends:
                drop_database(args.pg_url)
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
        print_table(results, args.monitors, args.columns)
        print(f"\ntotal {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
