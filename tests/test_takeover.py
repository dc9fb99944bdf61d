"""A crashed replica's window is taken over under short schedules (`every: 5s`, the default 30 s lease).

Three real `driftmon serve` replicas on one PostgreSQL results database. The
first reads its source through a view that sleeps, so it holds the lease of
its catch-up window for as long as the test needs; it is SIGKILLed while it
holds it. The window must still be computed, once, by another replica after
the lease ran out, and no expired lease row may stay behind.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import yaml

from driftmon.store.models import Lease, Run
from tests.live import free_port, samples_named, scrape, start_daemon, stop, wait_for, wait_ready
from tests.test_retries import fill_log, stored_window_ends

DEFAULT_LEASE_SECONDS = 30


def replica_config(tmp_path, db_url, name: str, table: str) -> tuple:
    now = datetime.now(UTC)
    port = free_port()
    config = {
        "database": {"url": db_url},
        "server": {"host": "127.0.0.1", "port": port, "shutdown_grace": "2s"},  # lease_ttl: the default
        "defaults": {"schedule": {"every": "5s"}, "window": {"size": "1h"}, "min_samples": 10,
                     "reference": {"kind": "fixed", "start": (now - timedelta(days=8)).isoformat(),
                                   "end": (now - timedelta(days=1)).isoformat()}},
        "monitors": [{"name": "fraud", "features": [{"column": "amount"}, {"column": "age"}],
                      "source": {"kind": "events", "table": table, "timestamp_column": "ts"}}],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, port


def leases(engine) -> list[tuple[datetime, str, bool]]:
    """(window end, owner, expired) of every lease row, by the database's clock."""
    table = Lease.__table__
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(
            sa.select(table.c.window_end, table.c.owner, table.c.expires_at < sa.func.now()))]


def runs_of(engine, window_end: datetime) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(
            sa.select(Run.__table__.c.status).where(Run.__table__.c.window_end == window_end)).scalars())


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_three_replicas_every_5s_take_over_a_sigkilled_replicas_window(tmp_path, db_url, engine):
    fill_log(engine)
    with engine.begin() as connection:  # the first replica's source: it sleeps while holding its lease
        connection.execute(sa.text(
            "CREATE VIEW slow_log AS SELECT l.* FROM inference_log l, (SELECT pg_sleep(300)) s"))
    slow, *fast = [replica_config(tmp_path, db_url, name, table)
                   for name, table in (("a", "slow_log"), ("b", "inference_log"), ("c", "inference_log"))]
    first = start_daemon(slow[0], tmp_path / "a.log")
    others = []
    try:
        def held_by_first():
            return [end for end, owner, _ in leases(engine) if f":{first.pid}:" in owner]

        (window_end,) = wait_for(held_by_first, 60, "the first replica's lease")
        others = [start_daemon(path, tmp_path / f"{name}.log") for (path, _), name in zip(fast, "bc", strict=True)]
        for (_, port), replica in zip(fast, others, strict=True):
            wait_ready(port, replica)
        assert window_end not in stored_window_ends(engine)
        assert held_by_first() == [window_end], "the first replica let go of its lease before it was killed"
        first.kill()  # SIGKILL while it holds the lease: no renewal, no release
        first.wait(timeout=10)
        killed_at = time.monotonic()
        wait_for(lambda: window_end in stored_window_ends(engine), DEFAULT_LEASE_SECONDS + 60,
                 f"the window ending {window_end.isoformat()} to be taken over")
        taken_over_after = time.monotonic() - killed_at
        # Its lease row went with the take-over, and no expired row stays behind.
        wait_for(lambda: not [row for row in leases(engine) if row[0] == window_end or row[2]], 20,
                 "the expired lease rows to be cleaned")
        # The gap counter across the live replicas: the taken-over window is no gap.
        missed = [samples_named(scrape(port), "driftmon_windows_missed_total") for _, port in fast]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=10)
        codes = [stop(replica) for replica in others]
    assert codes == [0] * len(others)
    assert runs_of(engine, window_end) == ["ok"]  # computed once, by a live replica
    assert all(samples for samples in missed) and sum(v for samples in missed for v in samples.values()) == 0
    assert taken_over_after < DEFAULT_LEASE_SECONDS + 30
    print(f"taken over {taken_over_after:.1f} s after the SIGKILL")
