"""Stored state that can be trusted: profiles, slices and results are reused only while
what shaped them is unchanged, and an incomplete reference is never frozen.

Each test runs on SQLite and, when DRIFTMON_TEST_DATABASE_URL is set, on a
PostgreSQL results database; the sources are SQLite files of their own.
"""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from driftmon import app as application
from driftmon.pipeline import Pipeline
from driftmon.store.database import create_db_engine
from driftmon.windows import TimeRange
from tests.sourcedata import START, create_and_fill, events_table
from tests.test_pipeline import (
    AT,
    DAY,
    FEATURES,
    HOUR,
    REFERENCE,
    WINDOW,
    drifted_rows,
    make_config,
    results_table,
)


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def _source(tmp_path, name: str, rows: list[dict]) -> str:
    url = f"sqlite:///{tmp_path / name}"
    engine = create_db_engine(url)
    create_and_fill(engine, events_table(tenure=sa.Double, age=sa.Double), rows)
    engine.dispose()
    return url


def _add_rows(url: str, rows: list[dict]) -> None:
    engine = create_db_engine(url)
    create_and_fill(engine, events_table(tenure=sa.Double, age=sa.Double), rows)
    engine.dispose()


def _run(db_url, source_url, window=WINDOW, clock=None, source=None, **monitor):
    config = make_config(db_url, source_extra={"url": source_url, **(source or {})}, **monitor)
    app = application.open_app(config)
    if clock is not None:
        app.pipeline = Pipeline(app.results, config.compute, app.engines, clock=clock)
    try:
        return application.run_window(app, config.resolved_monitors()[0], window, trigger="run_once")
    finally:
        app.close()


def _by_column(outcome) -> dict:
    return {r.column: r for r in outcome.results}


def test_a_changed_source_url_counts_its_own_reference(db_url, tmp_path):
    """Moving a monitor from staging (A) to production (B) with the same results database:
    B's windows are compared with B's reference, as a fresh results database would."""
    rng = np.random.default_rng(1)
    calm = drifted_rows(rng, 3000, START, 7 * DAY, False) + drifted_rows(rng, 300, WINDOW.start, HOUR, False)
    shifted = [{**row, "amount": row["amount"] + 500, "country": "XX"} for row in calm]
    staging, production = _source(tmp_path, "a.db", calm), _source(tmp_path, "b.db", shifted)
    _run(db_url, staging)
    moved = _by_column(_run(db_url, production))
    fresh = _by_column(_run(f"sqlite:///{tmp_path / 'fresh.db'}", production))
    for column, result in fresh.items():
        assert moved[column].status == result.status == "ok", column
        assert moved[column].kl == pytest.approx(result.kl, rel=1e-12)
        assert moved[column].labels == result.labels


def test_a_timestamp_unit_added_after_a_first_run_recounts_the_reference(db_url, tmp_path):
    """Epoch milliseconds first read as seconds (year 58,000: nothing in range), then fixed."""
    rng = np.random.default_rng(2)
    rows = drifted_rows(rng, 2000, START, 7 * DAY + HOUR, False)
    millis = [{**row, "ts": int(row["ts"].timestamp() * 1000)} for row in rows]
    url = f"sqlite:///{tmp_path / 'ms.db'}"
    engine = create_db_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE inference_log (ts BIGINT, model_version TEXT, amount FLOAT, "
                                   "country TEXT, score FLOAT, tenure FLOAT, age FLOAT)"))
        connection.execute(sa.text("INSERT INTO inference_log VALUES (:ts, :model_version, :amount, :country, "
                                   ":score, :tenure, :age)"), millis)
    engine.dispose()
    first = _by_column(_run(db_url, url))
    assert first["amount"].samples_reference == 0
    fixed = _by_column(_run(db_url, url, source={"timestamp_unit": "ms"}))
    expected = sum(REFERENCE.start <= r["ts"] < REFERENCE.end for r in rows)
    assert fixed["amount"].samples_reference == expected > 0


def test_an_empty_reference_is_counted_again_once_the_history_is_loaded(db_url, tmp_path):
    """Set up the monitor, run it, THEN load the table's history (the most common first try)."""
    url = _source(tmp_path, "late.db", [])
    assert {r.status for r in _run(db_url, url).results} == {"insufficient_data"}
    rng = np.random.default_rng(3)
    history = drifted_rows(rng, 2000, START, 7 * DAY, False) + drifted_rows(rng, 300, WINDOW.start, HOUR, False)
    _add_rows(url, history)
    loaded = _by_column(_run(db_url, url))
    assert loaded["amount"].samples_reference == 2000 and loaded["amount"].samples_current == 300
    assert loaded["amount"].status != "insufficient_data"


def test_a_reference_counted_before_its_end_is_recounted_once_it_has_ended(db_url, tmp_path):
    rng = np.random.default_rng(4)
    early = drifted_rows(rng, 900, START, 3 * DAY, False)
    url = _source(tmp_path, "open.db", early)
    early_window = TimeRange(START + 3 * DAY - HOUR, START + 3 * DAY)
    during = _by_column(_run(db_url, url, window=early_window, clock=Clock(START + 3 * DAY)))
    assert during["amount"].samples_reference == 900
    _add_rows(url, drifted_rows(rng, 1200, START + 3 * DAY, 4 * DAY, False)
              + drifted_rows(rng, 300, WINDOW.start, HOUR, False))
    after = _by_column(_run(db_url, url, clock=Clock(AT)))
    assert after["amount"].samples_reference == 2100


def test_a_profile_of_too_few_rows_is_not_final(db_url, tmp_path):
    """Fewer than min_samples rows in the reference: counted again on the next run."""
    rng = np.random.default_rng(5)
    url = _source(tmp_path, "few.db", drifted_rows(rng, 20, START, 7 * DAY, False))
    assert _by_column(_run(db_url, url))["amount"].samples_reference == 20
    _add_rows(url, drifted_rows(rng, 500, START, 7 * DAY, False))
    assert _by_column(_run(db_url, url))["amount"].samples_reference == 520


def test_recount_recounts_the_reference_once_for_all_its_windows(db_url, engine, tmp_path, monkeypatch):
    """Rows inserted late inside a complete reference: --recount counts them, once per range."""
    rng = np.random.default_rng(6)
    url = _source(tmp_path, "recount.db", drifted_rows(rng, 2000, START, 7 * DAY + 3 * HOUR, False))
    config = make_config(db_url, source_extra={"url": url})
    monitor = config.resolved_monitors()[0]
    before = application.open_app(config)
    done = application.backfill_with_progress(before, [monitor], WINDOW.start, WINDOW.start + 3 * HOUR)
    before.close()
    reference_before = {o.results[0].samples_reference for o in done.outcomes}
    _add_rows(url, drifted_rows(rng, 300, START, 7 * DAY, False))
    app = application.open_app(config)
    counted = []
    original = app.pipeline.source_for

    def counting_source(*args):
        source = original(*args)
        if not getattr(source, "_counting_profiles", False):
            profile = source.profile
            source.profile = lambda reference: counted.append(reference) or profile(reference)
            source._counting_profiles = True
        return source

    monkeypatch.setattr(app.pipeline, "source_for", counting_source)
    again = application.backfill_with_progress(app, [monitor], WINDOW.start, WINDOW.start + 3 * HOUR, recount=True)
    app.close()
    assert len(again.outcomes) == 3 and len(counted) == 1
    assert {o.results[0].samples_reference for o in again.outcomes} == {r + 300 for r in reference_before}
    stored = results_table(engine)
    assert set(stored["samples_reference"]) == {r + 300 for r in reference_before}


def test_a_backfill_recomputes_windows_whose_settings_changed(db_url, engine, tmp_path):
    rng = np.random.default_rng(7)
    url = _source(tmp_path, "settings.db", drifted_rows(rng, 2000, START, 7 * DAY + 3 * HOUR, False))
    span = (WINDOW.start, WINDOW.start + 3 * HOUR)
    for smoothing, expected in ((None, 3), (None, 0), ({"method": "epsilon"}, 3)):
        extra = {"smoothing": smoothing} if smoothing else {}
        config = make_config(db_url, source_extra={"url": url}, **extra)
        app = application.open_app(config)
        try:
            done = application.backfill_with_progress(app, config.resolved_monitors(), *span)
        finally:
            app.close()
        assert len(done.outcomes) == expected, smoothing
    stored = results_table(engine)
    assert stored["fingerprint"].nunique() == 1 and len(stored) == 3 * len(FEATURES)



def test_recount_with_a_rolling_reference_equals_a_clean_backfill(db_url, tmp_path):
    """300 rows inserted late inside a rolling reference: after --recount every window equals
    a backfill into a fresh results database, reference samples and statuses included."""
    rng = np.random.default_rng(8)
    url = _source(tmp_path, "rolling.db", drifted_rows(rng, 3000, START, 8 * DAY, False)
                  + drifted_rows(rng, 400, START + 8 * DAY, 6 * HOUR, True))
    rolling = {"reference": {"kind": "rolling", "size": "2d", "refresh": "1d"}}
    span = (START + 8 * DAY - HOUR, START + 8 * DAY + 6 * HOUR)

    def backfill(results_url, recount=False):
        config = make_config(results_url, source_extra={"url": url}, **rolling)
        app = application.open_app(config)
        try:
            done = application.backfill_with_progress(app, config.resolved_monitors(), *span, recount=recount)
        finally:
            app.close()
        return {(o.window.end, r.column): (r.samples_reference, r.status, r.kl) for o in done.outcomes
                for r in o.results}

    first = backfill(db_url)
    _add_rows(url, drifted_rows(rng, 300, START + 6 * DAY, 2 * DAY, False))
    recounted = backfill(db_url, recount=True)
    clean = backfill(f"sqlite:///{tmp_path / 'clean.db'}")
    assert recounted.keys() == clean.keys() == first.keys() and len(clean) == 7 * len(FEATURES)
    for key, (samples, status, kl) in clean.items():
        assert recounted[key][:2] == (samples, status)
        assert recounted[key][2] == (kl if kl is None else pytest.approx(kl, rel=1e-12))
    assert all(first[key][0] < clean[key][0] for key in clean)
