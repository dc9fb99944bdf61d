"""Missed windows: counted in driftmon_windows_missed_total, left without results, filled by backfill."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import yaml

from driftmon.store.models import Run
from tests.cli_helpers import driftmon
from tests.test_retries import daemon_for, fill_log, leases_left, stored_window_ends


def test_a_missed_window_has_no_results_and_backfill_fills_it(engine, db_url, tmp_path):
    """The source is away when the hourly window is due and stays away past catch_up plus the
    lease time: the window is given up, counted once, and keeps no results and no lease, so
    that `driftmon backfill` (which computes windows without results) fills it."""
    daemon = daemon_for(db_url, tmp_path)  # every: 1h, catch_up 1, lease_ttl 2s
    try:
        monitor = daemon.monitors[0]
        daemon.run_monitor(monitor)  # the table does not exist yet: the run fails
        (window,) = daemon.claims.pending.windows(monitor.name)
        missed = {"monitor": monitor.name}
        assert not daemon.registry.get_sample_value("driftmon_windows_missed_total", missed)
        # The next tick's run, past catch_up (one hour) plus the lease time (2 s).
        # (due() claims the next window on PostgreSQL: released, as a daemon that stops does.)
        daemon.claims.release(monitor, daemon.claims.due(monitor, window.end + timedelta(hours=1, seconds=2)))
        assert daemon.registry.get_sample_value("driftmon_windows_missed_total", missed) == 1
        assert window not in daemon.claims.pending.windows(monitor.name)
        daemon.claims.release(monitor, daemon.claims.due(monitor, window.end + timedelta(hours=1, seconds=3)))
        assert daemon.registry.get_sample_value("driftmon_windows_missed_total", missed) == 1  # counted once
    finally:
        daemon.app.close()
    with engine.connect() as connection:
        runs = connection.execute(sa.select(Run.__table__.c.status).where(
            Run.__table__.c.window_end == window.end)).scalars().all()
    assert runs == ["failed"] and stored_window_ends(engine) == set() and leases_left(engine) == 0

    fill_log(engine)  # the source is back
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(daemon.config.model_dump(mode="json", exclude_none=True)))
    done = driftmon("backfill", "--config", str(config), "--start", (window.start - timedelta(hours=1)).isoformat(),
                    "--end", min(window.end + timedelta(minutes=30), datetime.now(UTC)).isoformat())
    assert done.returncode == 0, done.stderr
    assert "backfilled 2 window(s): 0 failed" in done.stdout  # the missed one and the one before it
    assert window.end in stored_window_ends(engine)
