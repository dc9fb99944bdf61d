"""``bench_daemon.py --schedule EVERY``: how many monitors one daemon sustains on a short schedule.

For each ``--schedule-monitors`` count N: N identical monitors (``--columns``
columns of the shared events table, window ``--window``, ``catch_up: 1``, the
default 30 s lease) on ``every: EVERY``, one ``driftmon serve`` for
``--duration`` seconds, scraped every 5 s as Prometheus would. Then, from the
results database and the daemon's log and /metrics:

* windows expected: every tick from ``--warmup`` seconds after /readyz to the
  last tick whose give-up time (end + catch_up x interval + lease) came before
  SIGTERM, times N; computed: those with results; missing: the difference;
* ``driftmon_windows_missed_total`` summed over the monitors (the daemon's own
  count, over the whole run), ``run.missed`` lines (runs started later than
  their misfire grace) and APScheduler's "maximum number of running instances"
  skips;
* run lag: ``started_at - scheduled_at`` of the stored runs (p50/p99/max) and the
  daemon's CPU (user+system seconds per wall second, from /proc).

A configuration is *sustained* when no window is missing and none was counted
missed. Every wait is bounded; the table is regenerated for each N.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bench_daemon as base
import numpy as np
import sqlalchemy as sa
import yaml

LEASE_SECONDS = 30  # server.lease_ttl's default
SKIPPED = "maximum number of running instances reached"


@dataclass
class Load:
    backend: str
    monitors: int
    every: float
    expected: int = 0
    computed: int = 0
    counted_missed: float = 0.0
    missed_at_start: int = 0  # of window.missed log lines: windows that ended before the measured ticks
    missed_starts: int = 0
    skipped_runs: int = 0
    failed_runs: int = 0
    lags: list[float] = field(default_factory=list)
    cpu: float = float("nan")
    rss: int = 0  # VmRSS of serve at the end of the run, bytes
    hwm: int = 0  # its VmHWM (peak)
    daemon: str = "this"  # "this" checkout, or "baseline" (--baseline-root)
    workers: str = "default"
    load: str = ""
    note: str = ""

    @property
    def missing(self) -> int:
        return self.expected - self.computed

    @property
    def sustained(self) -> bool:
        return self.expected > 0 and self.missing == 0 and self.counted_missed == 0


def parse_every(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


def write_config(path: Path, results_url: str, source_url: str | None, port: int, monitors: int, columns,
                 reference: tuple[datetime, datetime], every: str, window: str, workers: int | None = None) -> Path:
    source = {"kind": "events", "table": base.TABLE, "timestamp_column": "ts"}
    if source_url:
        source["url"] = source_url
    config = {
        "database": {"url": results_url},
        # workers None: the daemon's default (compute.workers: auto since issue #25; 2 before).
        "compute": {"device": "cpu", "dtype": "float64", "threads": 1,
                    **({"workers": workers} if workers is not None else {})},
        "server": {"host": "127.0.0.1", "port": port, "shutdown_grace": "10s"},
        "defaults": {"schedule": {"every": every}, "window": {"size": window}, "catch_up": 1,
                     "reference": {"kind": "fixed", "start": reference[0].isoformat(),
                                   "end": reference[1].isoformat()}},
        "monitors": [{"name": f"m{i:03d}", "source": source, "features": [c.feature() for c in columns]}
                     for i in range(monitors)],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def prepare(backend: str, args, columns, folder: Path, monitors: int) -> tuple[str, str | None, tuple]:
    """The events table (8 days ending half a day from now) and the profile of m000, copied to all."""
    now = datetime.now(UTC)
    start = now - timedelta(days=7, hours=12)
    reference = (start, start + timedelta(days=7))
    if backend == "postgresql":
        results_url, source_url = args.pg_url, None
        base.generate_postgresql(args.pg_url, columns, args.rows, start)
    else:
        for path in folder.glob("*.db*"):
            path.unlink()
        results_url = f"sqlite:///{folder / 'driftmon.db'}"
        source_url = f"sqlite:///{folder / 'source.db'}"
        base.generate_sqlite(folder / "source.db", columns, args.rows, start)
    config = write_config(folder / "profile.yaml", results_url, source_url, base.free_port(), 1, columns,
                          reference, args.schedule, args.window)
    done = subprocess.run([sys.executable, "-m", "driftmon", "run-once", "--config", str(config)],
                          cwd=args.daemon_root, capture_output=True, text=True, timeout=600)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"run-once failed: {done.stderr[-2000:]}")
    base.seed_profiles(results_url, "m000", [f"m{i:03d}" for i in range(1, monitors)])
    return results_url, source_url, reference


def scrape_missed(port: int) -> float:
    status, body = base.http_get(port, "/metrics", 30.0)
    if status != 200:
        return float("nan")
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
               if line.startswith("driftmon_windows_missed_total{"))


def measure(backend: str, args, columns, folder: Path, monitors: int, daemon_root: Path,
            label: str = "this") -> Load:
    every = parse_every(args.schedule)
    load = Load(backend, monitors, every, daemon=label, workers=str(args.workers or "default"))
    results_url, source_url, reference = prepare(backend, args, columns, folder, monitors)
    port = base.free_port()
    config = write_config(folder / f"n{monitors}-{label}.yaml", results_url, source_url, port, monitors, columns,
                          reference, args.schedule, args.window, args.workers)
    log_path = folder / f"n{monitors}-{label}.log"
    load.load = base.loadavg()
    process = base.start_daemon(config, log_path, daemon_root)
    stop = threading.Event()
    try:
        if not base.wait_until(lambda: _ready(port, process), args.ready_timeout, 0.2):
            raise RuntimeError(f"/readyz not ready within {args.ready_timeout} s: see {log_path}")
        ready = time.time()
        scraper = threading.Thread(target=_scrape_every, args=(port, 5.0, stop), daemon=True)
        scraper.start()
        cpu_before, wall_before = cpu_seconds(process.pid), time.monotonic()
        stop.wait(args.duration)
        load.counted_missed = scrape_missed(port)
        load.cpu = (cpu_seconds(process.pid) - cpu_before) / (time.monotonic() - wall_before)
        memory = base.proc_status(process.pid)
        load.rss, load.hwm = memory["VmRSS"], memory["VmHWM"]
        stopped = time.time()
    finally:
        stop.set()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            load.note = "killed after 90 s"
    load.load += ">" + base.loadavg()
    first = _tick_after(ready + args.warmup, every)
    last = _tick_before(stopped - every - LEASE_SECONDS, every)
    ticks = max(0, int(round((last - first) / every)) + 1)
    load.expected = ticks * monitors
    load.computed, load.lags, load.failed_runs = _stored(results_url, first, last)
    lines = base.read_log(log_path)
    load.missed_starts = sum(line.get("event") == "run.missed" for line in lines)
    load.missed_at_start = sum(line.get("windows", 0) for line in lines if line.get("event") == "window.missed"
                               and datetime.fromisoformat(line["last_window_end"]).timestamp() < first)
    load.skipped_runs = sum(SKIPPED in str(line.get("message", "")) for line in lines)
    return load


def _ready(port: int, process) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"daemon exited with {process.returncode}")
    try:
        return base.http_get(port, "/readyz", 2.0)[0] == 200
    except OSError:
        return False


def _scrape_every(port: int, seconds: float, stop: threading.Event) -> None:
    while not stop.wait(seconds):
        try:
            base.http_get(port, "/metrics", 10.0)
        except OSError:
            pass


def _tick_after(moment: float, every: float) -> float:
    return -(-moment // every) * every


def _tick_before(moment: float, every: float) -> float:
    return moment // every * every


def _stored(results_url: str, first: float, last: float) -> tuple[int, list[float], int]:
    """(windows with results, lags of their runs in s, failed runs) with ends in [first, last]."""
    engine = sa.create_engine(results_url)
    span = {"first": datetime.fromtimestamp(first, UTC), "last": datetime.fromtimestamp(last, UTC)}
    if engine.dialect.name == "sqlite":  # naive UTC text, as SQLAlchemy writes it
        span = {k: v.replace(tzinfo=None).isoformat(sep=" ") for k, v in span.items()}
    try:
        with engine.connect() as connection:
            computed = connection.execute(sa.text(
                "SELECT count(*) FROM (SELECT DISTINCT monitor, window_end FROM results "
                "WHERE window_end >= :first AND window_end <= :last) w"), span).scalar()
            rows = connection.execute(sa.text(
                "SELECT scheduled_at, started_at, status FROM runs "
                "WHERE window_end >= :first AND window_end <= :last"), span).all()
    finally:
        engine.dispose()
    lags = [(_as_dt(started) - _as_dt(scheduled)).total_seconds() for scheduled, started, status in rows
            if status == "ok" and scheduled is not None]
    return computed, lags, sum(status != "ok" for _, _, status in rows)


def _as_dt(value) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def print_table(loads: list[Load], args, columns) -> None:
    print(f"\nevery {args.schedule}, {len(columns)} columns, window {args.window}, {args.rows} rows, catch_up 1, "
          f"lease 30 s, threads 1, {args.duration:.0f} s per row ({args.warmup:.0f} s warm-up), "
          f"{os.cpu_count()} CPUs")
    header = (f"{'backend':<10} {'daemon':<8} {'workers':>7} {'mon':>5} {'expected':>8} {'computed':>8} {'missing':>7} "
              f"{'counted':>7} {'start':>5} {'late':>5} {'skip':>5} {'fail':>4} {'lag p50':>7} {'lag p99':>7} "
              f"{'lag max':>7} {'cpu':>5} {'RSS MB':>7} {'MB/mon':>6} {'load':>10}  sustained")
    print(header)
    print("-" * len(header))
    for r in loads:
        p50, p99 = (float(np.percentile(r.lags, q)) if r.lags else float("nan") for q in (50, 99))
        print(f"{r.backend:<10} {r.daemon:<8} {r.workers:>7} {r.monitors:>5} {r.expected:>8} {r.computed:>8} "
              f"{r.missing:>7} {r.counted_missed:>7.0f} {r.missed_at_start:>5} {r.missed_starts:>5} "
              f"{r.skipped_runs:>5} {r.failed_runs:>4} "
              f"{p50:>7.2f} {p99:>7.2f} {max(r.lags, default=float('nan')):>7.2f} {r.cpu:>5.2f} "
              f"{r.rss / 2**20:>7.0f} {r.rss / 2**20 / r.monitors:>6.2f} {r.load:>10}  "
              f"{'yes' if r.sustained else 'NO'}{'  ' + r.note if r.note else ''}")
    print("""
  daemon: this checkout, or the one of --baseline-root measured just before it on the same table;
  expected/computed/missing: windows in the measured ticks (all monitors) / with results / without;
  counted: driftmon_windows_missed_total (whole run, start-up included), of which start: windows that
  ended before the measured ticks (the first cycle after start-up); late: run.missed lines (a start
  later than the misfire grace); skip: APScheduler skips (max_instances); lag: started_at -
  scheduled_at of the stored runs, s; cpu: the daemon's CPU seconds per second; RSS: VmRSS of serve
  at the end, and divided by the monitors (an upper bound per monitor: the process's own share is
  in it); load: 1-min loadavg before > after""")
    print(json.dumps([{**r.__dict__, "lags": None, "missing": r.missing, "sustained": r.sustained} for r in loads]))


def run(args, columns, workdir: Path) -> int:
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    loads = []
    try:
        for backend in backends:
            folder = workdir / f"schedule-{backend}"
            folder.mkdir(parents=True, exist_ok=True)
            for monitors in args.schedule_monitors:
                daemons = [(args.baseline_root, "baseline")] if args.baseline_root else []
                for root, label in [*daemons, (args.daemon_root, "this")]:
                    load = measure(backend, args, columns, folder, monitors, root, label)
                    print(f"[{backend}] {label}: {monitors} monitors every {args.schedule}: "
                          f"{load.computed}/{load.expected} windows, {load.counted_missed:.0f} counted missed, "
                          f"RSS {load.rss / 2**20:.0f} MB", flush=True)
                    loads.append(load)
    finally:
        print_table(loads, args, columns)
    return 0
