"""Failures that heal: released and renewed leases, retried windows, crashed replicas taken over."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry

from driftmon.config import parse_config
from driftmon.daemon import Daemon
from driftmon.leases import Leases
from driftmon.retries import FIRST_DELAY, Retries
from driftmon.store.models import Lease, Result
from driftmon.store.repository import Repository
from driftmon.windows import TimeRange
from tests.sourcedata import create_and_fill, events_table
from tests.test_pipeline import drifted_rows

END = datetime(2024, 3, 8, tzinfo=UTC)


def postgresql_only(backend):
    if backend != "postgresql":
        pytest.skip("leases serve replicas, which share PostgreSQL")


def test_a_held_lease_is_renewed_then_released(engine, backend):
    postgresql_only(backend)
    mine, theirs = (Leases(engine, Repository(), owner, timedelta(seconds=1.5)) for owner in ("a", "b"))
    assert mine.claim("m", END)
    with mine.held("m", END):
        time.sleep(2.5)  # past the ttl: the renewals keep it
        assert not theirs.claim("m", END)
    assert theirs.claim("m", END)  # released at once, not after the ttl


def test_a_dead_owners_lease_runs_out_within_its_ttl(engine, backend):
    postgresql_only(backend)
    dead, alive = (Leases(engine, Repository(), owner, timedelta(seconds=1)) for owner in ("dead", "alive"))
    assert dead.claim("m", END)  # and never renews: SIGKILLed
    assert not alive.claim("m", END)
    time.sleep(1.3)
    assert alive.claim("m", END)


def test_backoff_doubles_up_to_half_the_interval():
    monitor = parse_config({"monitors": [{"name": "m", "features": [{"column": "x"}], "schedule": {"every": "1m"},
                                          "source": {"kind": "events", "table": "t", "timestamp_column": "ts"}}]},
                           {}).resolved_monitors()[0]
    retries, window = Retries(), TimeRange(END - timedelta(hours=1), END)
    delays = [retries.failed(monitor, window) for _ in range(4)]
    assert delays == [FIRST_DELAY, 2 * FIRST_DELAY, 4 * FIRST_DELAY, timedelta(seconds=30)]
    assert retries.pending(monitor, END - timedelta(minutes=1)) == {window}
    assert retries.pending(monitor, END) == set()  # out of catch_up: given up


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
        (window,) = daemon.retries.pending(monitor, datetime(1970, 1, 1, tzinfo=UTC))
        assert stored_window_ends(engine) == set() and leases_left(engine) == 0
        job = daemon.scheduler.get_job("fraud:retry")
        assert job is not None and job.trigger.run_date - datetime.now(UTC) <= FIRST_DELAY
        fill_log(engine)  # the table is back
        daemon.run_monitor(monitor)  # the retry job's call
        assert stored_window_ends(engine) == {window.end}
        assert daemon.retries.pending(monitor, datetime(1970, 1, 1, tzinfo=UTC)) == set()
        assert leases_left(engine) == 0
    finally:
        daemon.app.close()


def test_a_crashed_replicas_window_is_taken_over(engine, db_url, tmp_path, backend):
    postgresql_only(backend)
    fill_log(engine)
    daemon = daemon_for(db_url, tmp_path)
    try:
        monitor = daemon.monitors[0]
        (window,) = daemon.due_windows(monitor, datetime.now(UTC))
        crashed = Leases(engine, Repository(), "crashed", daemon.leases.ttl)
        assert crashed.claim(monitor.name, window.end)  # then SIGKILLed: no renewal, no release
        daemon.run_monitor(monitor)
        assert stored_window_ends(engine) == set()
        job = daemon.scheduler.get_job("fraud:retry")
        assert job.trigger.run_date - datetime.now(UTC) <= daemon.leases.ttl + timedelta(seconds=1)
        time.sleep(daemon.leases.ttl.total_seconds() + 0.2)
        daemon.run_monitor(monitor)  # the retry job's call
        assert stored_window_ends(engine) == {window.end}
    finally:
        daemon.app.close()
