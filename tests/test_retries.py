"""Failures that heal: released and renewed leases, retried windows, crashed replicas taken over."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry

from driftmon.config_file import parse_config
from driftmon.serving.daemon import Daemon
from driftmon.serving.leases import Leases
from driftmon.serving.retries import FIRST_DELAY, PendingWindows
from driftmon.store.lease_queries import LeaseQueries
from driftmon.store.models import Lease, Result
from driftmon.windows import TimeRange, latest_tick
from tests.sourcedata import create_and_fill, events_table
from tests.test_pipeline import drifted_rows

END = datetime(2024, 3, 8, tzinfo=UTC)


def postgresql_only(backend):
    if backend != "postgresql":
        pytest.skip("leases serve replicas, which share PostgreSQL")


def test_a_held_lease_is_renewed_then_released(engine, backend):
    postgresql_only(backend)
    mine, theirs = (Leases(engine, LeaseQueries(), owner, timedelta(seconds=1.5)) for owner in ("a", "b"))
    assert mine.claim("m", END)
    with mine.held("m", END):
        time.sleep(2.5)  # past the ttl: the renewals keep it
        assert not theirs.claim("m", END)
    assert theirs.claim("m", END)  # released at once, not after the ttl


def test_a_dead_owners_lease_runs_out_within_its_ttl(engine, backend):
    postgresql_only(backend)
    dead, alive = (Leases(engine, LeaseQueries(), owner, timedelta(seconds=1)) for owner in ("dead", "alive"))
    assert dead.claim("m", END)  # and never renews: SIGKILLed
    assert not alive.claim("m", END)
    time.sleep(1.3)
    assert alive.claim("m", END)


def test_backoff_doubles_up_to_half_the_interval():
    monitor = parse_config({"monitors": [{"name": "m", "features": [{"column": "x"}], "schedule": {"every": "1m"},
                                          "source": {"kind": "events", "table": "t", "timestamp_column": "ts"}}]},
                           {}).resolved_monitors()[0]
    pending, window = PendingWindows(), TimeRange(END - timedelta(hours=1), END)
    delays = [pending.failed(monitor, window, END) - END for _ in range(4)]
    assert delays == [FIRST_DELAY, 2 * FIRST_DELAY, 4 * FIRST_DELAY, timedelta(seconds=30)]
    assert pending.next_retry("m") == END + timedelta(seconds=30)
    pending.done("m", window)
    assert pending.windows("m") == {} and pending.next_retry("m") is None


def daemon_for(db_url, tmp_path, table="inference_log", lease_ttl="2s"):
    raw = {"database": {"url": db_url}, "server": {"port": 1, "lease_ttl": lease_ttl},
           "defaults": {"schedule": {"every": "1h"}, "min_samples": 10,
                        "reference": {"kind": "fixed", "start": (datetime.now(UTC) - timedelta(days=8)).isoformat(),
                                      "end": (datetime.now(UTC) - timedelta(days=1)).isoformat()}},
           "monitors": [{"name": "fraud", "features": [{"column": "amount"}, {"column": "age"}],
                         "source": {"kind": "events", "table": table, "timestamp_column": "ts"}}]}
    daemon = Daemon(parse_config(raw, {}), CollectorRegistry())
    daemon.open()
    daemon.scheduler = BackgroundScheduler(timezone=UTC)  # not started: the retry jobs are only queued
    return daemon


def fill_log(engine):
    import numpy as np

    rng = np.random.default_rng(5)
    now = datetime.now(UTC)
    rows = drifted_rows(rng, 800, now - timedelta(days=8), timedelta(days=8), False)
    create_and_fill(engine, events_table(tenure=sa.Double, age=sa.Double), rows)


def stored_window_ends(engine):
    with engine.connect() as connection:
        return set(connection.execute(sa.select(Result.__table__.c.window_end).distinct()).scalars())


def leases_left(engine):
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(Lease.__table__)).scalar()


def test_a_failed_window_is_released_and_retried(engine, db_url, tmp_path):
    daemon = daemon_for(db_url, tmp_path)
    try:
        monitor = daemon.monitors[0]
        daemon.run_monitor(monitor)  # the table does not exist yet
        (window,) = daemon.claims.pending.windows(monitor.name)
        assert stored_window_ends(engine) == set() and leases_left(engine) == 0
        job = daemon.scheduler.get_job("fraud:retry")
        assert job is not None and job.trigger.run_date - datetime.now(UTC) <= FIRST_DELAY
        fill_log(engine)  # the table is back
        daemon.run_monitor(monitor)  # the retry job's call
        assert stored_window_ends(engine) == {window.end}
        assert daemon.claims.pending.windows(monitor.name) == {}
        assert leases_left(engine) == 0
    finally:
        daemon.app.close()


def test_a_crashed_replicas_window_is_taken_over(engine, db_url, tmp_path, backend):
    postgresql_only(backend)
    fill_log(engine)
    daemon = daemon_for(db_url, tmp_path)
    try:
        monitor = daemon.monitors[0]
        end = latest_tick(monitor.schedule, datetime.now(UTC))
        window = TimeRange(end - monitor.window.size, end)  # the one window due
        crashed = Leases(engine, LeaseQueries(), "crashed", daemon.claims.lease_ttl)
        assert crashed.claim(monitor.name, window.end)  # then SIGKILLed: no renewal, no release
        daemon.run_monitor(monitor)
        assert stored_window_ends(engine) == set()
        job = daemon.scheduler.get_job("fraud:retry")
        assert job.trigger.run_date - datetime.now(UTC) <= daemon.claims.lease_ttl + timedelta(seconds=1)
        time.sleep(daemon.claims.lease_ttl.total_seconds() + 0.2)
        daemon.run_monitor(monitor)  # the retry job's call
        assert stored_window_ends(engine) == {window.end}
    finally:
        daemon.app.close()


def test_sigkilled_replica_mid_run_is_taken_over_by_another(engine, db_url, tmp_path, backend):
    """Two replicas, the defaults but a short lease: one is SIGKILLed while it computes a window."""
    import yaml

    from tests.live import free_port, start_daemon, stop, wait_for, wait_ready

    postgresql_only(backend)
    now = datetime.now(UTC)
    reference = TimeRange(now - timedelta(days=8), now - timedelta(days=1))
    with engine.begin() as connection:  # 4 M reference rows: cutting their quantiles takes seconds
        connection.exec_driver_sql("CREATE TABLE big_log (ts timestamptz, amount float8, age float8)")
        connection.execute(sa.text(
            "INSERT INTO big_log SELECT :start + i * (:span / 4000000.0) * interval '1 second', random(), random() "
            "FROM generate_series(0, 3999999) AS i"), {"start": reference.start, "span": 7 * 86400})
        connection.execute(sa.text(
            "INSERT INTO big_log SELECT :start + i * interval '1 second', random() + 0.5, random() "
            "FROM generate_series(0, 7199) AS i"), {"start": now - timedelta(hours=2)})
    config = {"database": {"url": db_url},
              "defaults": {"schedule": {"every": "1h"}, "window": {"size": "1h"}, "min_samples": 50,
                           "reference": {"kind": "fixed", "start": reference.start.isoformat(),
                                         "end": reference.end.isoformat()}},
              "monitors": [{"name": "big", "features": [{"column": "amount"}, {"column": "age"}],
                            "source": {"kind": "events", "table": "big_log", "timestamp_column": "ts"}}]}
    paths = []
    for name in ("a", "b"):
        port = free_port()
        paths.append((tmp_path / f"{name}.yaml", port))
        paths[-1][0].write_text(yaml.safe_dump({**config, "server": {"host": "127.0.0.1", "port": port,
                                                                      "lease_ttl": "3s"}}))
    first = start_daemon(paths[0][0], tmp_path / "a.log")
    try:
        def claimed_by_first():
            with engine.connect() as connection:
                owners = connection.execute(sa.select(Lease.__table__.c.owner)).scalars().all()
            return any(f":{first.pid}:" in owner for owner in owners)

        wait_for(claimed_by_first, 60, "the first replica's lease")
        assert stored_window_ends(engine) == set(), "the run ended before it could be killed"
        first.kill()  # SIGKILL, mid-run: no release, no renewal
        first.wait(timeout=10)
        killed_at = time.monotonic()
        second = start_daemon(paths[1][0], tmp_path / "b.log")
        try:
            wait_ready(paths[1][1], second)
            wait_for(lambda: stored_window_ends(engine), 90, "the window taken over")
            taken_over_after = time.monotonic() - killed_at
        finally:
            assert stop(second) == 0
    finally:
        if first.poll() is None:
            first.kill()
    with engine.connect() as connection:
        runs = connection.execute(sa.text("SELECT status, count(*) FROM runs GROUP BY status")).all()
    assert dict(runs) == {"ok": 1}  # the killed run wrote nothing; the window was computed once
    assert taken_over_after < 60
    print(f"taken over {taken_over_after:.1f} s after the SIGKILL")


def test_failed_writes_and_a_hung_store_make_readyz_say_so(engine, db_url, tmp_path, monkeypatch):
    fill_log(engine)
    daemon = daemon_for(db_url, tmp_path)
    try:
        daemon.store_health.timeout = 1.0
        daemon._restore()  # ready once the gauges are back, as serve does
        daemon.heartbeat()
        assert daemon.health.ready_problem() is None and daemon.state.store_up

        def full_disk(connection, rows):
            raise sa.exc.OperationalError("INSERT INTO runs", {}, Exception("database or disk is full"))

        monkeypatch.setattr("driftmon.pipeline.write_run", full_disk)  # the run's results
        monkeypatch.setattr(daemon.app.pipeline.repository, "insert_run", full_disk)  # its failed run row
        daemon.run_monitor(daemon.monitors[0])
        daemon.heartbeat()  # reads still answer: the failed write is what counts
        assert daemon.health.ready_problem().startswith("the last write to the results database failed:")
        assert "database or disk is full" in daemon.health.ready_problem() and not daemon.state.store_up
        monkeypatch.undo()

        hung = threading.Event()
        monkeypatch.setattr(daemon.app.pipeline.repository, "ping", lambda connection: hung.wait(30))
        began = time.monotonic()
        daemon.heartbeat()
        assert time.monotonic() - began < 2.5  # bounded, though the ping never returns
        assert daemon.health.ready_problem().startswith("results database has not answered a ping for")
        daemon.heartbeat()  # no second ping is stacked on the stuck one
        hung.set()
        monkeypatch.undo()
        daemon.run_monitor(daemon.monitors[0])  # a write that works
        daemon.heartbeat()
        assert daemon.health.ready_problem() is None and daemon.state.store_up
    finally:
        daemon.store_health.close()
        daemon.app.close()
