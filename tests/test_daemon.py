"""`driftmon serve` as a real subprocess: readiness, scrapes, shutdown, replicas, faults."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from scipy.stats import entropy

from tests.live import free_port, http_get, samples_named, scrape, start_daemon, stop, wait_for, wait_ready
from tests.sourcedata import create_and_fill, events_table
from tests.test_pipeline import drifted_rows, smoothed

FEATURES = [
    {"column": "amount", "bins": 10},
    {"column": "country", "type": "categorical", "top_k": 5},
    {"column": "age", "bins": 8},
    {"column": "score", "role": "prediction", "binning": "uniform", "range": [0, 1], "bins": 10},
]
NOW = datetime.now(UTC)
REFERENCE_START = (NOW - timedelta(days=8)).replace(hour=0, minute=0, second=0, microsecond=0)
REFERENCE_END = REFERENCE_START + timedelta(days=7)


@pytest.fixture
def live_log(engine):
    """Calm history, then two drifted hours that run a few minutes into the future."""
    rng = np.random.default_rng(21)
    rows = drifted_rows(rng, 3000, REFERENCE_START, timedelta(days=7), False)
    rows += drifted_rows(rng, 1500, NOW - timedelta(hours=2), timedelta(hours=2, minutes=15), True)
    create_and_fill(engine, events_table(tenure=sa.Double, age=sa.Double), rows)
    return pd.DataFrame(rows)


def write_config(tmp_path, db_url, port, name="config.yaml", every="2s", table="inference_log",
                 grace="10s", source=None, **defaults):
    config = {
        "database": {"url": db_url},
        "server": {"host": "127.0.0.1", "port": port, "shutdown_grace": grace},
        "defaults": {"schedule": {"every": every}, "window": {"size": "1h"}, "min_samples": 50,
                     "reference": {"kind": "fixed", "start": REFERENCE_START.isoformat(),
                                   "end": REFERENCE_END.isoformat()}, **defaults},
        "monitors": [{"name": "fraud", "features": FEATURES,
                      "source": source or {"kind": "events", "table": table, "timestamp_column": "ts"}}],
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def independent_kl(frame: pd.DataFrame, feature: dict, window_end: datetime) -> float:
    ts = pd.to_datetime(frame["ts"], utc=True)
    ref = frame[(ts >= REFERENCE_START) & (ts < REFERENCE_END)][feature["column"]]
    cur = frame[(ts >= window_end - timedelta(hours=1)) & (ts < window_end)][feature["column"]]
    k = feature["bins"]
    cuts = sorted(set(np.quantile(ref.dropna().to_numpy(float), np.arange(1, k) / k).tolist()))
    outer = [-1e12, *cuts, 1e12]
    p = smoothed(np.histogram(ref.dropna(), bins=outer)[0])
    q = smoothed(np.histogram(cur.dropna(), bins=outer)[0])
    return entropy(p, q)


def stored_counts(engine) -> tuple[pd.DataFrame, pd.DataFrame]:
    with engine.connect() as connection:
        results = pd.read_sql(sa.text("SELECT monitor, \"column\", window_end FROM results"), connection)
        runs = pd.read_sql(sa.text("SELECT monitor, window_end, status FROM runs"), connection)
    return results, runs


def assert_no_partial_results(engine) -> None:
    results, runs = stored_counts(engine)
    per_window = results.groupby(["monitor", "window_end"]).size()
    assert (per_window == len(FEATURES)).all(), per_window
    assert results.groupby(["monitor", "column", "window_end"]).size().max() == 1


def test_serve_scrape_and_sigterm(tmp_path, db_url, engine, live_log):
    port = free_port()
    daemon = start_daemon(write_config(tmp_path, db_url, port), tmp_path / "daemon.log")
    try:
        wait_ready(port, daemon)
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200

        def all_columns_scraped():
            metrics = scrape(port)
            return metrics if len(samples_named(metrics, "driftmon_kl_divergence")) == len(FEATURES) else None

        metrics = wait_for(all_columns_scraped, 60, "KL of every column")
        (end,) = samples_named(metrics, "driftmon_window_end_timestamp_seconds").values()
        window_end = datetime.fromtimestamp(end, UTC)
        kl = {dict(labels)["feature"]: value
              for labels, value in samples_named(metrics, "driftmon_kl_divergence").items()}
        for feature in (FEATURES[0], FEATURES[2]):
            assert kl[feature["column"]] == pytest.approx(
                independent_kl(live_log, feature, window_end), abs=1e-9, rel=1e-9)
        status = samples_named(metrics, "driftmon_drift_status")
        assert status[(("feature", "amount"), ("monitor", "fraud"), ("role", "feature"), ("status", "critical"))] == 1
        assert status[(("feature", "age"), ("monitor", "fraud"), ("role", "feature"), ("status", "ok"))] == 1

        if shutil.which("promtool"):
            text = http_get(f"http://127.0.0.1:{port}/metrics")[1]
            check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                                   text=True, timeout=30)
            assert check.returncode == 0, check.stdout + check.stderr
        openmetrics = urllib_get_openmetrics(port)
        assert openmetrics.rstrip().endswith("# EOF")
        status_code, page = http_get(f"http://127.0.0.1:{port}/report/fraud", timeout=60)
        assert status_code == 200 and "<svg" in page and all(f["column"] in page for f in FEATURES)
        assert http_get(f"http://127.0.0.1:{port}/report/nope")[0] == 404
    finally:
        started = time.monotonic()
        code = stop(daemon)
    assert code == 0 and time.monotonic() - started < 15
    log_lines = [json.loads(line) for line in (tmp_path / "daemon.log").read_text().splitlines()]
    events = [line.get("event") for line in log_lines]
    assert "daemon.stop_requested" in events and events[-1] == "daemon.stopped"
    assert_no_partial_results(engine)


def urllib_get_openmetrics(port: int) -> str:
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        return response.read().decode()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_sigterm_during_a_run_abandons_it(tmp_path, db_url, engine, live_log):
    with engine.begin() as connection:
        connection.execute(sa.text(
            "CREATE VIEW slow_log AS SELECT l.* FROM inference_log l, (SELECT pg_sleep(4)) s"))
    port = free_port()
    daemon = start_daemon(write_config(tmp_path, db_url, port, table="slow_log", grace="1s"),
                          tmp_path / "daemon.log")
    try:
        wait_ready(port, daemon)
        time.sleep(1.0)  # the catch-up run is now inside pg_sleep
    finally:
        started = time.monotonic()
        code = stop(daemon)
    assert code == 0 and time.monotonic() - started < 12
    events = [json.loads(line).get("event") for line in (tmp_path / "daemon.log").read_text().splitlines()]
    assert "daemon.abandoning" in events
    results, _ = stored_counts(engine)
    assert results.empty


def test_restart_restores_gauges_before_ready(tmp_path, db_url, engine, live_log):
    port = free_port()
    config = write_config(tmp_path, db_url, port, every="1h")
    first = start_daemon(config, tmp_path / "first.log")
    try:
        wait_ready(port, first)
        wait_for(lambda: samples_named(scrape(port), "driftmon_kl_divergence"), 60, "first results")
        before = samples_named(scrape(port), "driftmon_kl_divergence")
    finally:
        assert stop(first) == 0
    second = start_daemon(config, tmp_path / "second.log")
    try:
        wait_ready(port, second)
        assert samples_named(scrape(port), "driftmon_kl_divergence") == before  # 1h schedule: nothing new ran
    finally:
        assert stop(second) == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # PostgreSQL replicas use leases
def test_second_daemon_on_one_sqlite_file_is_refused(tmp_path, live_log, db_url):
    port = free_port()
    first = start_daemon(write_config(tmp_path, db_url, port, every="1h"), tmp_path / "first.log")
    try:
        wait_ready(port, first)
        second = subprocess.run(
            [*_driftmon(), "serve", "--config", str(write_config(tmp_path, db_url, free_port(), name="b.yaml"))],
            capture_output=True, text=True, timeout=60)
        assert second.returncode == 3
        assert "another driftmon daemon already serves" in second.stderr
        busy = subprocess.run([*_driftmon(), "serve", "--config", str(write_config(
            tmp_path, f"sqlite:///{tmp_path / 'other.db'}", port, name="c.yaml"))],
            capture_output=True, text=True, timeout=60)
        assert busy.returncode == 2 and "server.port" in busy.stderr
    finally:
        assert stop(first) == 0


def _driftmon() -> list[str]:
    import sys

    return [sys.executable, "-m", "driftmon"]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_two_replicas_compute_each_window_once(tmp_path, db_url, engine, live_log):
    ports = [free_port(), free_port()]
    replicas = [start_daemon(write_config(tmp_path, db_url, port, name=f"r{i}.yaml", every="1s"),
                             tmp_path / f"replica{i}.log") for i, port in enumerate(ports)]
    try:
        for port, replica in zip(ports, replicas, strict=True):
            wait_ready(port, replica)
        time.sleep(20)
    finally:
        codes = [stop(replica) for replica in replicas]
    assert codes == [0, 0]
    results, runs = stored_counts(engine)
    assert len(runs) >= 10
    assert runs.groupby(["monitor", "window_end"]).size().max() == 1
    assert_no_partial_results(engine)
    workers = [sum('"run.finished"' in line for line in (tmp_path / f"replica{i}.log").read_text().splitlines())
               for i in range(2)]
    assert sum(workers) == len(runs)


DRIFT_FAMILIES = ("driftmon_kl_divergence", "driftmon_psi", "driftmon_js_divergence", "driftmon_drift_p_value",
                  "driftmon_drift_q_value", "driftmon_drift_status", "driftmon_window_samples",
                  "driftmon_missing_ratio", "driftmon_window_end_timestamp_seconds")


def latest_state(metrics: dict) -> dict:
    """What a replica exports of the latest stored windows (its own counters aside)."""
    return {key: value for key, value in metrics.items() if key[0] in DRIFT_FAMILIES}


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_replicas_export_the_same_latest_state(tmp_path, db_url, engine, live_log):
    """Each window is computed by one replica, but every replica exports it: they refresh
    their gauges from the results database once per cycle (`max without (instance)` in
    the rules then never keeps a stale status alive)."""
    ports = [free_port(), free_port()]
    replicas = [start_daemon(write_config(tmp_path, db_url, port, name=f"r{i}.yaml", every="3s"),
                             tmp_path / f"replica{i}.log") for i, port in enumerate(ports)]
    agreed: set[float] = set()

    def agree_twice():
        first, second = (latest_state(scrape(port)) for port in ports)
        if first and first == second:
            agreed.update(samples_named(first, "driftmon_window_end_timestamp_seconds").values())
        return len(agreed) >= 2

    try:
        for port, replica in zip(ports, replicas, strict=True):
            wait_ready(port, replica)
        wait_for(agree_twice, 40, "both replicas to export the same latest window, for two windows")
    finally:
        assert [stop(replica) for replica in replicas] == [0, 0]
    computed = [sum('"run.finished"' in line for line in (tmp_path / f"replica{i}.log").read_text().splitlines())
                for i in range(2)]
    _, runs = stored_counts(engine)
    assert sum(computed) == len(runs)  # still one computation per window


def run_delays(engine) -> list[float]:
    """started_at - scheduled_at of every stored run, in seconds, in the order they started."""
    from driftmon.store.models import Run

    with engine.connect() as connection:
        rows = connection.execute(sa.select(Run.scheduled_at, Run.started_at).order_by(Run.started_at)).all()
    return [(started - scheduled).total_seconds() for scheduled, started in rows]


def test_every_schedule_runs_on_its_epoch_aligned_ticks(tmp_path, db_url, engine, live_log):
    """After the catch-up run at start-up (off the grid by design), every run starts at
    its tick: APScheduler once counted each next run from the catch-up, up to a whole
    interval late (with `every: 1d`, up to a day)."""
    every = 5
    config = write_config(tmp_path, db_url, free_port(), every=f"{every}s")
    # Start just after a tick: start-up takes seconds, so the catch-up run lands mid-interval.
    time.sleep(every - time.time() % every + 0.2)
    daemon = start_daemon(config, tmp_path / "daemon.log")
    try:
        wait_for(lambda: len(run_delays(engine)) >= 4, 60, "the catch-up run and three scheduled runs")
    finally:
        assert stop(daemon) == 0
    catch_up, *scheduled = run_delays(engine)
    assert all(0 <= delay < 1.0 for delay in scheduled), (catch_up, scheduled)


def test_recomputed_windows_are_recorded_before_the_run_itself(tmp_path):
    from prometheus_client import CollectorRegistry

    from driftmon.config_file import load_config
    from driftmon.outcomes import RunOutcome
    from driftmon.serving.daemon import Daemon
    from tests.test_metrics import REFERENCE, WINDOW, result

    registry = CollectorRegistry()
    daemon = Daemon(load_config(write_config(tmp_path, "sqlite://", free_port())), registry)
    older = WINDOW.end - timedelta(hours=2)
    recomputed = RunOutcome("fraud", WINDOW, "ok", [result("amount", 0.9, "critical", end=older),
                                                    result("age", 0.5, "critical", end=older)], REFERENCE,
                            trigger="late_data")
    outcome = RunOutcome("fraud", WINDOW, "ok", [result("amount", 0.05, "ok")], REFERENCE,
                         recomputed=[recomputed])
    daemon._record(outcome)
    latest = {r.column: r for r in daemon.state.snapshot()[0]}
    assert (latest["amount"].kl, latest["age"].kl) == (0.05, 0.5)  # the newest window of each column
    assert registry.get_sample_value("driftmon_runs_total", {"monitor": "fraud"}) == 2


def test_epoch_interval_trigger_fires_on_the_grid_after_any_previous_run():
    from driftmon.serving.daemon import EpochIntervalTrigger

    every_minute = EpochIntervalTrigger(timedelta(minutes=1))
    catch_up = datetime(2026, 11, 24, 8, 12, 49, 250000, tzinfo=UTC)  # the start-up
    assert every_minute.get_next_fire_time(catch_up, catch_up) == datetime(2026, 11, 24, 8, 13, tzinfo=UTC)
    on_tick = datetime(2026, 11, 24, 8, 13, tzinfo=UTC)
    assert every_minute.get_next_fire_time(on_tick, on_tick) == datetime(2026, 11, 24, 8, 14, tzinfo=UTC)
    assert every_minute.get_next_fire_time(None, catch_up) == datetime(2026, 11, 24, 8, 13, tzinfo=UTC)
    daily = EpochIntervalTrigger(timedelta(days=1))
    assert daily.get_next_fire_time(catch_up, catch_up) == datetime(2026, 11, 25, tzinfo=UTC)
    offset = EpochIntervalTrigger(timedelta(seconds=4), offset=timedelta(seconds=2))
    assert offset.get_next_fire_time(on_tick, on_tick) == on_tick + timedelta(seconds=2)


def test_source_outage_while_serving(tmp_path, db_url, live_log, engine):
    port = free_port()
    daemon = start_daemon(write_config(tmp_path, db_url, port, every="1s"), tmp_path / "daemon.log")
    try:
        wait_ready(port, daemon)
        wait_for(lambda: samples_named(scrape(port), "driftmon_kl_divergence"), 60, "first results")
        with engine.begin() as connection:
            connection.execute(sa.text("ALTER TABLE inference_log RENAME TO inference_log_away"))

        def failures():
            return sum(samples_named(scrape(port), "driftmon_run_failures_total").values())

        wait_for(lambda: failures() >= 2, 30, "failed runs to be counted")
        assert http_get(f"http://127.0.0.1:{port}/metrics")[0] == 200
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        seen = scrape(port)
        (last_success,) = samples_named(seen, "driftmon_last_success_timestamp_seconds").values()
        with engine.begin() as connection:
            connection.execute(sa.text("ALTER TABLE inference_log_away RENAME TO inference_log"))
        wait_for(lambda: max(samples_named(scrape(port), "driftmon_last_success_timestamp_seconds").values())
                 > last_success, 30, "a good run after the outage")
    finally:
        assert stop(daemon) == 0
    failed = [json.loads(line) for line in (tmp_path / "daemon.log").read_text().splitlines()
              if '"run.failed"' in line]
    assert failed and "inference_log" in failed[0]["message"]
    assert_no_partial_results(engine)


@pytest.mark.skipif(shutil.which("prometheus") is None,
                    reason="Prometheus (Debian package 'prometheus') is not installed")
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # one backend proves the scrape
def test_real_prometheus_scrapes_every_column(tmp_path, db_url, live_log):
    port, prometheus_port = free_port(), free_port()
    daemon = start_daemon(write_config(tmp_path, db_url, port), tmp_path / "daemon.log")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "driftmon", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
    }))
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prometheus_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, daemon)

        def series():
            status, body = http_get(
                f"http://127.0.0.1:{prometheus_port}/api/v1/query?query=driftmon_kl_divergence")
            found = json.loads(body)["data"]["result"] if status == 200 else []
            return found if len(found) == len(FEATURES) else None

        found = wait_for(series, 60, "Prometheus to hold driftmon_kl_divergence for every column")
        assert {s["metric"]["feature"] for s in found} == {f["column"] for f in FEATURES}
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)
        assert stop(daemon) == 0
