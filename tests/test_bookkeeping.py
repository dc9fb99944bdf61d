"""A run's bookkeeping at scale (issue #25): due windows claimed in the statement that checks for
results, one keeper renewing every lease, the worker pool and connection pools sized to the work."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from driftmon.config import AUTO_WORKERS_MAX, AUTO_WORKERS_PER_CPU, ComputeConfig
from driftmon.config_file import parse_config
from driftmon.serving.claims import WindowClaims
from driftmon.serving.leases import Leases
from driftmon.store.lease_queries import LeaseQueries
from driftmon.store.repository import Repository
from driftmon.windows import TimeRange

T = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a tick of every 1 m
TTL = timedelta(seconds=30)


def monitor(name: str = "fraud"):
    raw = {"monitors": [{"name": name, "features": [{"column": "x"}], "schedule": {"every": "1m"},
                         "window": {"size": "1h"},
                         "source": {"kind": "events", "table": "t", "timestamp_column": "ts"}}]}
    return parse_config(raw, {}).resolved_monitors()[0]


@contextmanager
def statements(engine):
    """The SQL statements sent through ``engine`` inside the block (pool pings are not statements)."""
    sent: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


def claims_for(engine, backend: str, owner: str = "a", ttl: timedelta = TTL) -> WindowClaims:
    leases = Leases(engine, LeaseQueries(), owner, ttl) if backend == "postgresql" else None
    return WindowClaims(engine, Repository(), leases, ttl, lambda name, n: None, started=T)


def test_a_steady_runs_bookkeeping_is_one_statement_and_the_release(engine, backend):
    """Today's steady cycle: due windows listed, checked for results and claimed in ONE statement
    (SQLite: no leases, one query), the window released after its run in one more. The daemon
    did eight round trips before: results, claim, results again, release, each with its ping."""
    fraud = monitor()
    claims = claims_for(engine, backend)
    first = claims.due(fraud, T + timedelta(seconds=1))  # start-up: the catch-up window
    assert first == [TimeRange(T - timedelta(hours=1), T)]
    for window in first:
        with claims.running(fraud, window):
            pass
        claims.finished(fraud, window, True, T + timedelta(seconds=2))
    with statements(engine) as sent:
        (window,) = claims.due(fraud, T + timedelta(minutes=1, seconds=1))
        with claims.running(fraud, window):
            pass
    assert window.end == T + timedelta(minutes=1)
    assert len(sent) == (2 if backend == "postgresql" else 1), sent


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_one_claim_statement_skips_stored_and_held_windows(engine):
    from driftmon.store.models import Result, Run

    a, b = (Leases(engine, LeaseQueries(), owner, TTL) for owner in ("a", "b"))
    ends = [T + timedelta(minutes=k) for k in range(4)]
    with engine.begin() as connection:
        run_id = connection.execute(Run.__table__.insert().returning(Run.__table__.c.id), {
            "monitor": "m", "started_at": T, "window_start": ends[0] - timedelta(hours=1),
            "window_end": ends[0], "status": "ok", "trigger": "schedule"}).scalar_one()
        connection.execute(Result.__table__.insert(), {
            "run_id": run_id, "monitor": "m", "column": "x", "role": "feature",
            "window_start": ends[0] - timedelta(hours=1), "window_end": ends[0],
            "reference_start": T - timedelta(days=7), "reference_end": T, "samples_current": 10.0,
            "samples_reference": 10.0, "missing_current": 0.0, "kl": 0.0, "psi": 0.0, "js": 0.0,
            "statistic": "kl", "threshold_warning": 0.1, "threshold_critical": 0.2, "status": "ok",
            "computed_at": T})
    assert b.claim("m", ends[1])  # another replica computes this one
    with statements(engine) as sent:
        stored, claimed = a.claim_due("m", ends, ends[:3])
    assert len(sent) == 1
    assert stored == {ends[0]} and claimed == {ends[2]}  # ends[3]: a candidate not wanted now
    a.release("m", sorted(claimed))
    b.release("m", [ends[1]])


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_one_keeper_renews_every_held_lease_in_one_statement(engine):
    mine, theirs = (Leases(engine, LeaseQueries(), owner, timedelta(seconds=1.5)) for owner in ("a", "b"))
    ends = [T, T + timedelta(minutes=1), T + timedelta(minutes=2)]
    with statements(engine) as sent:
        _, claimed = mine.claim_due("m", ends, ends)
        assert claimed == set(ends)
        time.sleep(2.2)  # past the ttl: renewed every 0.5 s, all three at once
        renewals = [s for s in sent if s.lstrip().upper().startswith("UPDATE")]
        assert len(renewals) in (3, 4, 5), renewals
        assert not theirs.claim_due("m", ends, ends)[1]
    mine.release("m", ends[:2])
    time.sleep(2.0)  # the third is still held and renewed; the two released are free at once
    assert theirs.claim_due("m", ends, ends)[1] == set(ends[:2])
    mine.release("m", ends[2:])
    assert theirs.claim_due("m", ends, ends)[1] == {ends[2]}
    theirs.release("m", ends)


def test_workers_default_to_several_per_cpu_and_the_pools_follow():
    assert ComputeConfig().workers == "auto"
    assert ComputeConfig().worker_count == min(AUTO_WORKERS_MAX, AUTO_WORKERS_PER_CPU * (os.cpu_count() or 1))
    assert ComputeConfig(workers=3).worker_count == 3
    with pytest.raises(ValueError):
        ComputeConfig(workers="many")


def test_serve_sizes_its_pools_to_its_workers(tmp_path):
    from prometheus_client import CollectorRegistry

    from driftmon.serving.daemon import Daemon

    raw = {"database": {"url": f"sqlite:///{tmp_path / 'r.db'}"}, "compute": {"workers": 6},
           "server": {"port": 1},
           "monitors": [{"name": "m", "features": [{"column": "x"}], "schedule": {"every": "1m"},
                         "source": {"kind": "events", "table": "t", "timestamp_column": "ts"}}]}
    daemon = Daemon(parse_config(raw, {}), CollectorRegistry())
    daemon.open()
    try:
        assert daemon.app.results.pool.size() == 6 + 3
        scheduler = daemon._start_scheduler()
        try:
            assert scheduler._lookup_executor("default")._pool._max_workers == 6
        finally:
            scheduler.shutdown(wait=False)
    finally:
        daemon.app.close()


def test_a_config_of_two_thousand_24_column_monitors_loads(tmp_path):
    """The capacity the daemon is sized for (bench/README.md) fits the config's own limits."""
    import yaml

    from driftmon.config_file import load_config

    features = [{"column": f"x{i}"} for i in range(24)]
    raw = {"monitors": [{"name": f"m{k:04d}", "features": features, "schedule": {"every": "1m"},
                         "source": {"kind": "events", "table": "t", "timestamp_column": "ts"}}
                        for k in range(2000)]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert len(load_config(path, {}).resolved_monitors()) == 2000


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_connection_dropped_while_idle_is_replaced_and_a_busy_one_is_not_pinged(db_url, engine):
    """Pings only for connections idle over a second: a restarted server's dropped connection
    is replaced before use, while back-to-back runs skip the round trip."""
    import psycopg

    from driftmon.store.database import PING_AFTER_IDLE_SECONDS, create_db_engine

    pooled = create_db_engine(db_url)
    pings = []
    ping = pooled.dialect.do_ping
    pooled.dialect.do_ping = lambda dbapi_connection: pings.append(1) or ping(dbapi_connection)
    try:
        with pooled.connect() as connection:
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with pooled.connect() as connection:
            assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar() == pid
        assert pings == []  # in use a moment ago: no ping
        time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)
        with psycopg.connect(pooled.url.set(drivername="postgresql").render_as_string(hide_password=False),
                             autocommit=True) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pooled.connect() as connection:
            assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar() != pid
        assert pings == [1]
    finally:
        pooled.dispose()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_claims_releases_and_renewals_are_single_round_trips(engine, monkeypatch):
    """In autocommit: psycopg sends no BEGIN before them and no COMMIT after (3 round trips each before)."""
    queries = LeaseQueries()
    seen = []
    for name in ("claim_due_leases", "release_leases", "renew_leases"):
        method = getattr(queries, name)

        def wrapped(connection, *args, _method=method, _name=name, **kwargs):
            seen.append((_name, connection.connection.dbapi_connection.autocommit))
            return _method(connection, *args, **kwargs)

        monkeypatch.setattr(queries, name, wrapped)
    leases = Leases(engine, queries, "a", timedelta(seconds=0.6))
    _, claimed = leases.claim_due("m", [T], [T])
    time.sleep(0.4)  # one renewal
    leases.release("m", sorted(claimed))
    assert {name for name, _ in seen} == {"claim_due_leases", "release_leases", "renew_leases"}
    assert all(autocommit for _, autocommit in seen), seen
    with engine.connect() as connection:  # the pool's connections go back to transactions
        assert connection.connection.dbapi_connection.autocommit is False
