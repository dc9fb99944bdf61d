"""What the commands ask of the pipeline: each run's trigger, and what --recount plans."""

from __future__ import annotations

import pytest

from driftmon import app as application
from tests.test_pipeline import (
    AT,
    DAY,
    HOUR,
    WINDOW,
    drift_log,  # noqa: F401  (a fixture)
    make_config,
)


@pytest.fixture
def recorded(db_url, drift_log):  # noqa: F811
    """An app whose pipeline runs for real and records how each run was asked for."""
    app = application.open_app(make_config(db_url))
    calls = []
    run = app.pipeline.run

    def recording(monitor, source_url, window, scheduled_at=None, **options):
        calls.append((window, options))
        return run(monitor, source_url, window, scheduled_at, **options)

    app.pipeline.run = recording
    yield app, calls
    app.close()


def test_run_once_and_backfill_name_their_trigger(recorded):
    app, calls = recorded
    monitors = app.config.resolved_monitors()
    application.run_latest(app, monitors, AT)
    application.backfill_with_progress(app, monitors, WINDOW.start - 3 * HOUR, WINDOW.end)
    assert calls[0] == (WINDOW, {"trigger": "run_once", "recount": False})
    assert [options for _, options in calls[1:]] == [{"trigger": "backfill", "recount": False}] * 3


def test_recount_plans_every_window_stored_or_not(recorded):
    app, calls = recorded
    monitors = app.config.resolved_monitors()
    start, end = WINDOW.start - DAY, WINDOW.end
    first = application.backfill_with_progress(app, monitors, start, end)
    assert application.plan_backfill(app, monitors, start, end) == []  # all stored
    planned = application.plan_backfill(app, monitors, start, end, recount=True)
    assert [w for _, w in planned] == [o.window for o in first.outcomes]
    del calls[:]
    again = application.backfill_with_progress(app, monitors, start, end, recount=True)
    assert len(again.outcomes) == len(first.outcomes) and not again.interrupted
    assert {(o["trigger"], o["recount"]) for _, o in calls} == {("recount", True)}
