"""Data health through the pipeline (issue #24): what a run stores of volume, freshness and schema.

The statistics are tested in test_volume_stats.py, the schema comparison in
test_schema_watch.py, the gauges and alerts in test_health_metrics.py and
test_alerts.py; here, a real run on a real source and results database.
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa

from driftmon.config_file import parse_config
from driftmon.store import health_queries, inventory
from driftmon.store.database import create_db_engine
from driftmon.windows import TimeRange
from tests.seasonaldata import DAY, HOUR, START, run_window, seasonal_config, seasonal_rows, write_log

ROLLING = {"kind": "rolling", "size": "2d"}


def _stored(db_url):
    engine = create_db_engine(db_url)
    try:
        with engine.connect() as connection:
            return (health_queries.window_health_history(connection, "seasonal"),
                    health_queries.load_schema(connection, "seasonal"),
                    connection.execute(sa.text("SELECT count(*) FROM results")).scalar_one())
    finally:
        engine.dispose()


def test_a_run_stores_its_volume_and_freshness_and_a_quiet_window_keeps_the_newest_row(db_url, tmp_path):
    source = f"sqlite:///{tmp_path / 'log.db'}"
    write_log(source, seasonal_rows(np.random.default_rng(1), START, 2 * 24 + 3))  # rows end at 03:00 on day 3
    config = parse_config(seasonal_config(db_url, source, ROLLING), {})
    busy = TimeRange(START + 2 * DAY + 2 * HOUR, START + 2 * DAY + 3 * HOUR)
    outcome = run_window(config, busy)
    assert outcome.status == "ok" and outcome.volume.status == "ok"
    # An hourly schedule and window: one slice per window, so the newest row is "since 02:00".
    assert outcome.newest_row_at == busy.start
    quiet = TimeRange(busy.start + 2 * HOUR, busy.end + 2 * HOUR)
    silent = run_window(config, quiet)
    assert silent.newest_row_at is None
    assert silent.volume.status == "critical" and silent.volume.rows == 0 and silent.volume.change == -1.0
    history, schema, _ = _stored(db_url)
    assert [(r["window_end"], r["status"]) for r in history] == [(busy.end, "ok"), (quiet.end, "critical")]
    assert history[0]["rows"] == outcome.volume.rows and history[0]["expected"] == outcome.volume.expected
    assert schema["status"] == "ok" and set(schema["baseline"]) >= {"ts", "x1", "x8"}
    engine = create_db_engine(db_url)
    try:
        with engine.connect() as connection:
            (latest,) = health_queries.latest_window_health(connection)
        # The newest row seen by any window, not by the newest window (which saw none).
        assert latest["window_end"] == quiet.end and latest["newest_row_at"] == busy.start
        with engine.begin() as connection:
            deleted = inventory.delete_windows_after(connection, "seasonal", busy.end)
        assert deleted["health"] == 1
    finally:
        engine.dispose()


def test_a_dropped_column_fails_the_run_naming_it_and_writes_nothing_partial(db_url, tmp_path):
    source = f"sqlite:///{tmp_path / 'log.db'}"
    write_log(source, seasonal_rows(np.random.default_rng(2), START, 3 * 24))
    config = parse_config(seasonal_config(db_url, source, ROLLING), {})
    first = TimeRange(START + 2 * DAY, START + 2 * DAY + HOUR)
    assert run_window(config, first).status == "ok"
    _, _, results_before = _stored(db_url)
    engine = create_db_engine(source)
    with engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE seasonal_log DROP COLUMN x5"))
        connection.execute(sa.text("ALTER TABLE seasonal_log ADD COLUMN region TEXT"))
    engine.dispose()
    broken = run_window(config, TimeRange(first.start + HOUR, first.end + HOUR))
    assert broken.status == "failed" and broken.results == [] and broken.volume is None
    assert "x5" in broken.error and "[source schema broken: column 'x5' dropped]" in broken.error
    assert broken.schema["status"] == "broken"
    assert {(c["column"], c["change"]) for c in broken.schema["changes"]} == {("x5", "dropped"), ("region", "added")}
    history, schema, results_after = _stored(db_url)
    assert results_after == results_before and [r["window_end"] for r in history] == [first.end]
    assert schema["status"] == "broken"


def test_a_monitor_moved_to_another_database_takes_a_new_schema_baseline(db_url, tmp_path):
    """Staging to production with the same results database: production's table (one column more)
    is not a schema change of staging's (the stored baseline carries the source's fingerprint)."""
    staging, production = f"sqlite:///{tmp_path / 'staging.db'}", f"sqlite:///{tmp_path / 'production.db'}"
    rows = seasonal_rows(np.random.default_rng(3), START, 3 * 24)
    write_log(staging, rows)
    write_log(production, rows)
    engine = create_db_engine(production)
    with engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE seasonal_log ADD COLUMN region TEXT"))
    engine.dispose()
    window = TimeRange(START + 2 * DAY, START + 2 * DAY + HOUR)
    assert run_window(parse_config(seasonal_config(db_url, staging, ROLLING), {}), window).schema["status"] == "ok"
    moved = run_window(parse_config(seasonal_config(db_url, production, ROLLING), {}), window)
    assert moved.status == "ok" and moved.schema["status"] == "ok" and moved.schema["changes"] == []
    assert "region" in moved.schema["baseline"]


def test_a_changed_volume_check_is_computed_again_by_backfill(db_url, tmp_path):
    """A health row carries the fingerprint of the volume check that made it: stale rows are redone."""
    from driftmon.app import backfill_with_progress, open_app

    source = f"sqlite:///{tmp_path / 'log.db'}"
    write_log(source, seasonal_rows(np.random.default_rng(4), START, 3 * 24))
    span = (START + 2 * DAY, START + 2 * DAY + 3 * HOUR)

    def backfill(volume):
        config = parse_config(seasonal_config(db_url, source, ROLLING, volume=volume), {})
        app = open_app(config)
        try:
            return backfill_with_progress(app, config.resolved_monitors(), *span).outcomes
        finally:
            app.close()

    assert len(backfill({"critical": 0.3})) == 3
    assert backfill({"critical": 0.3}) == []  # nothing stale
    redone = backfill({"critical": 0.5})
    assert len(redone) == 3
    history, _, _ = _stored(db_url)
    assert {row["threshold_critical"] for row in history} == {0.5}
