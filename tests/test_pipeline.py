"""One monitor run end to end, on real databases, against an independent computation."""

from __future__ import annotations

import threading
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from scipy.stats import entropy

from driftmon import app as application
from driftmon.config_file import parse_config
from driftmon.outcomes import CRITICAL, INSUFFICIENT, OK
from driftmon.pipeline import Pipeline
from driftmon.store import run_writes
from driftmon.store.models import Result, Run
from driftmon.windows import TimeRange
from tests.sourcedata import START, create_and_fill, events_table

DAY, HOUR = timedelta(days=1), timedelta(hours=1)
REFERENCE = TimeRange(START, START + 7 * DAY)
WINDOW = TimeRange(START + 7 * DAY, START + 7 * DAY + HOUR)
AT = WINDOW.end + timedelta(minutes=1)


def drifted_rows(rng, n, start, span, drifted: bool) -> list[dict]:
    """Known drift in the current hour: amount shifts, a category appears,
    tenure goes missing far more often; age (the control) does not change."""
    rows = []
    for _ in range(n):
        country = rng.choice(["DE", "FR", "US"], p=[.5, .3, .2])
        if drifted and rng.random() < 0.3:
            country = "BR"
        rows.append({
            "ts": start + timedelta(seconds=float(rng.uniform(0, span.total_seconds()))),
            "model_version": "v3",
            "amount": float(rng.normal(130 if drifted else 100, 20)),
            "country": str(country),
            "score": float(rng.beta(5 if drifted else 2, 2)),
            "tenure": None if rng.random() < (0.4 if drifted else 0.02) else float(rng.exponential(3)),
            "age": float(rng.normal(40, 10)),
        })
    return rows


FEATURES = [
    {"column": "amount", "bins": 10},
    {"column": "country", "type": "categorical", "top_k": 5},
    {"column": "tenure", "bins": 5},
    {"column": "age", "bins": 8},
    {"column": "score", "role": "prediction", "binning": "uniform", "range": [0, 1], "bins": 10},
]


def make_config(url, features=FEATURES, table="inference_log", extra_monitors=(), source_extra=None,
                **monitor):
    raw = {
        "database": {"url": url},
        "defaults": {"schedule": {"every": "1h"}, "min_samples": 50,
                     "reference": {"kind": "fixed", "start": REFERENCE.start.isoformat(),
                                   "end": REFERENCE.end.isoformat()}},
        "monitors": [{"name": "fraud", "features": features,
                      "source": {"kind": "events", "table": table, "timestamp_column": "ts",
                                 "where": {"model_version": "v3"}, **(source_extra or {})},
                      **monitor}, *extra_monitors],
    }
    return parse_config(raw, {})


@pytest.fixture
def drift_log(engine):
    rng = np.random.default_rng(11)
    rows = drifted_rows(rng, 4000, START, 7 * DAY, False) + drifted_rows(rng, 600, WINDOW.start, HOUR, True)
    rows += drifted_rows(rng, 30, WINDOW.end, 2 * DAY, False)  # later traffic, small windows
    create_and_fill(engine, events_table(tenure=sa.Double, age=sa.Double), rows)
    return pd.DataFrame(rows)


@pytest.fixture
def app_for(db_url):
    opened = []

    def open_(config):
        opened.append(application.open_app(config))
        return opened[-1]

    yield open_
    for app in opened:
        app.close()


def results_table(engine) -> pd.DataFrame:
    with engine.connect() as connection:
        return pd.DataFrame(connection.execute(sa.select(Result.__table__)).mappings().all())


def runs_table(engine) -> pd.DataFrame:
    with engine.connect() as connection:
        return pd.DataFrame(connection.execute(sa.select(Run.__table__)).mappings().all())


def smoothed(counts, alpha=0.5):
    counts = np.asarray(counts, dtype=float)
    return (counts + alpha) / (counts.sum() + alpha * len(counts))


def expected_bins(frame: pd.DataFrame, feature: dict) -> tuple[list[float], list[float]]:
    """Independent: numpy/pandas bins of one column per the README's "What driftmon measures"."""
    ts = pd.to_datetime(frame["ts"], utc=True)
    ref = frame[(ts >= REFERENCE.start) & (ts < REFERENCE.end)][feature["column"]]
    cur = frame[(ts >= WINDOW.start) & (ts < WINDOW.end)][feature["column"]]
    if feature.get("type") == "categorical":
        freq = ref.value_counts()
        top = [k for k, _ in sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))[: feature["top_k"]]]
        r = [float((ref == k).sum()) for k in top]
        c = [float((cur == k).sum()) for k in top]
        extra = [(float((~ref.isin(top) & ref.notna()).sum()), float((~cur.isin(top) & cur.notna()).sum())),
                 (float(ref.isna().sum()), float(cur.isna().sum()))]
    else:
        k = feature["bins"]
        finite = ref.dropna().to_numpy(dtype=float)
        if feature.get("binning") == "uniform":
            lo, hi = feature["range"]
            cuts = sorted({lo + i * (hi - lo) / k for i in range(1, k)})
        else:
            cuts = sorted(set(np.quantile(finite, np.arange(1, k) / k).tolist()))
        outer = [-1e12, *cuts, 1e12]
        r = np.histogram(finite, bins=outer)[0].astype(float).tolist()
        c = np.histogram(cur.dropna().to_numpy(dtype=float), bins=outer)[0].astype(float).tolist()
        extra = [(0.0, 0.0), (float(ref.isna().sum()), float(cur.isna().sum()))]
    for in_ref, in_cur in extra:  # other, missing: only where either window has any
        if in_ref > 0 or in_cur > 0:
            r.append(in_ref)
            c.append(in_cur)
    return r, c


def test_known_drift_end_to_end(engine, db_url, drift_log, app_for):
    config = make_config(db_url)
    app = app_for(config)
    outcomes = application.run_latest(app, config.resolved_monitors(), AT)
    assert [o.status for o in outcomes] == ["ok"]
    assert app.pipeline.engine_calls == 1

    stored = results_table(engine).set_index("column")
    for feature in FEATURES:
        ref, cur = expected_bins(drift_log, feature)
        p, q = smoothed(ref), smoothed(cur)
        row = stored.loc[feature["column"]]
        assert row["kl"] == pytest.approx(entropy(p, q), abs=1e-9, rel=1e-9)
        assert row["psi"] == pytest.approx(entropy(p, q) + entropy(q, p), abs=1e-9, rel=1e-9)
        m = (p + q) / 2
        assert row["js"] == pytest.approx(0.5 * entropy(p, m) + 0.5 * entropy(q, m), abs=1e-9, rel=1e-9)
        assert row["samples_current"] == sum(cur) == 600
        assert row["samples_reference"] == sum(ref) == 4000
        expected_status = CRITICAL if row["kl"] >= 0.25 else ("warning" if row["kl"] >= 0.1 else OK)
        assert row["status"] == expected_status
    assert stored.loc["amount", "status"] == CRITICAL
    assert stored.loc["country", "status"] == CRITICAL
    assert stored.loc["tenure", "status"] == CRITICAL
    assert stored.loc["age", "status"] == OK  # the control column
    assert stored.loc["score", "role"] == "prediction"
    assert stored.loc["tenure", "missing_ratio"] == pytest.approx(expected_bins(drift_log, FEATURES[2])[1][-1] / 600)
    (run,) = runs_table(engine).itertuples()
    assert (run.status, run.columns, run.rows_scanned, run.error) == ("ok", 5, 600, None)


def test_per_feature_thresholds_and_statistic(engine, db_url, drift_log, app_for):
    config = make_config(db_url, thresholds={"statistic": "js", "warning": 0.001, "critical": 0.9,
                                             "per_feature": {"age": {"warning": 0.5, "critical": 0.6}}})
    application.run_latest(app_for(config), config.resolved_monitors(), AT)
    stored = results_table(engine).set_index("column")
    assert stored.loc["amount", "status"] == "warning"
    assert stored.loc["age", "status"] == OK
    assert (stored.loc["age", "threshold_warning"], stored.loc["age", "threshold_critical"]) == (0.5, 0.6)
    assert set(stored["statistic"]) == {"js"}


def test_same_window_twice_leaves_one_row_per_column(engine, db_url, drift_log, app_for):
    config = make_config(db_url)
    app = app_for(config)
    for _ in range(2):
        application.run_latest(app, config.resolved_monitors(), AT)
    assert len(results_table(engine)) == len(FEATURES)
    assert len(runs_table(engine)) == 2


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_racing_runs_on_postgresql(engine, db_url, drift_log, app_for):
    config = make_config(db_url)
    apps = [app_for(config) for _ in range(4)]
    barrier = threading.Barrier(len(apps))

    def race(app):
        barrier.wait(timeout=30)
        application.run_latest(app, config.resolved_monitors(), AT)

    threads = [threading.Thread(target=race, args=(a,)) for a in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    results = results_table(engine)
    assert len(results) == len(FEATURES)
    assert results.groupby(["monitor", "column", "window_end"]).size().max() == 1


def test_failure_before_commit_writes_nothing(engine, db_url, drift_log, app_for, monkeypatch):
    config = make_config(db_url)
    app = app_for(config)

    def explode(connection, write):  # every row written, then the commit never comes
        run_writes.write_run(connection, write)
        raise sa.exc.OperationalError("INSERT", {}, RuntimeError("disk full"))

    monkeypatch.setattr("driftmon.pipeline.write_run", explode)
    (outcome,) = application.run_latest(app, config.resolved_monitors(), AT)
    assert outcome.status == "failed" and "disk full" in outcome.error
    assert results_table(engine).empty
    (run,) = runs_table(engine).itertuples()
    assert run.status == "failed" and "monitor 'fraud'" in run.error


def test_an_unexpected_exception_is_a_failed_run_counted_as_other(engine, db_url, drift_log, app_for,
                                                                   monkeypatch, caplog):
    config = make_config(db_url)
    app = app_for(config)

    def defect(*args, **kwargs):
        raise TypeError("'<' not supported between instances of 'str' and 'float'")

    monkeypatch.setattr("driftmon.window_results.compute_statistics", defect)
    with caplog.at_level("ERROR", logger="driftmon.pipeline"):
        (outcome,) = application.run_latest(app, config.resolved_monitors(), AT)
    assert (outcome.status, outcome.reason) == ("failed", "other")
    assert outcome.error.startswith("monitor 'fraud': unexpected TypeError: '<' not supported")
    (run,) = runs_table(engine).itertuples()
    assert run.status == "failed" and "unexpected TypeError" in run.error
    logged = [r for r in caplog.records if getattr(r, "event", None) == "run.unexpected_error"]
    assert len(logged) == 1 and logged[0].monitor == "fraud" and logged[0].exc_info
    assert results_table(engine).empty


def test_source_error_fails_only_that_monitor(engine, db_url, drift_log, app_for):
    broken = {"name": "broken", "features": [{"column": "amount"}],
              "source": {"kind": "events", "table": "dropped_table", "timestamp_column": "ts"}}
    closed = {"name": "closed_port", "features": [{"column": "amount"}],
              "source": {"kind": "events", "url": "postgresql://u:topsecret@127.0.0.1:1/x",
                         "table": "t", "timestamp_column": "ts"}}
    config = make_config(db_url, extra_monitors=[broken, closed])
    outcomes = application.run_latest(app_for(config), config.resolved_monitors(), AT)
    assert [o.status for o in outcomes] == ["ok", "failed", "failed"]
    assert "monitor 'broken', table 'dropped_table'" in outcomes[1].error
    assert "does not exist" in outcomes[1].error
    assert "monitor 'closed_port', table 't'" in outcomes[2].error
    assert "topsecret" not in outcomes[2].error
    assert set(results_table(engine)["monitor"]) == {"fraud"}
    assert sorted(runs_table(engine)["status"]) == ["failed", "failed", "ok"]


def test_table_dropped_after_profile(engine, db_url, drift_log, app_for):
    config = make_config(db_url)
    app = app_for(config)
    application.run_latest(app, config.resolved_monitors(), AT)
    with engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE inference_log"))
    (outcome,) = application.run_latest(app, config.resolved_monitors(), AT + HOUR)
    assert outcome.status == "failed" and "inference_log" in outcome.error
    assert len(results_table(engine)) == len(FEATURES)  # only the first run's


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_statement_timeout(engine, db_url, drift_log, app_for):
    with engine.begin() as connection:
        connection.execute(sa.text(
            "CREATE VIEW slow_log AS SELECT l.* FROM inference_log l, (SELECT pg_sleep(3)) s"))
    config = make_config(db_url, table="slow_log", source_extra={"timeout": "500ms"})
    (outcome,) = application.run_latest(app_for(config), config.resolved_monitors(), AT)
    assert outcome.status == "failed"
    assert "statement timeout" in outcome.error
    assert results_table(engine).empty


def test_insufficient_and_empty_windows(engine, db_url, drift_log, app_for):
    config = make_config(db_url)
    app = app_for(config)
    monitors = config.resolved_monitors()
    later = application.run_latest(app, monitors, WINDOW.end + 30 * HOUR)  # ~1 row an hour
    empty = application.run_latest(app, monitors, START - DAY)  # before any data
    for outcome in later + empty:
        assert outcome.status == "ok"
        assert {r.status for r in outcome.results} == {INSUFFICIENT}
        assert all(r.kl is None and r.psi is None and r.js is None for r in outcome.results)
    assert all(r.samples_current == 0 and r.missing_ratio is None for r in empty[0].results)


def test_all_categorical_monitor(engine, db_url, drift_log, app_for):
    config = make_config(db_url, features=[{"column": "country", "type": "categorical"},
                                           {"column": "model_version", "type": "categorical"}])
    (outcome,) = application.run_latest(app_for(config), config.resolved_monitors(), AT)
    assert outcome.status == "ok"
    statuses = {r.column: r.status for r in outcome.results}
    assert statuses == {"country": CRITICAL, "model_version": OK}


def test_two_hundred_columns_one_engine_call(engine, db_url, app_for, monkeypatch):
    rng = np.random.default_rng(3)
    names = [f"f{i:03d}" for i in range(200)]
    table = sa.Table("wide", sa.MetaData(), sa.Column("ts", sa.DateTime),
                     *(sa.Column(n, sa.Double) for n in names))
    times = [START + timedelta(minutes=float(m)) for m in rng.uniform(0, 8 * 24 * 60, 1500)]
    values = rng.normal(size=(1500, 200))
    create_and_fill(engine, table, [{"ts": t, **dict(zip(names, map(float, v), strict=True))}
                                    for t, v in zip(times, values, strict=True)])
    config = make_config(db_url, features=[{"column": n, "bins": 4} for n in names], table="wide",
                         source_extra={"where": {}}, window={"size": "1d"}, min_samples=5)
    calls = []
    from driftmon import window_results

    original = window_results.divergences
    monkeypatch.setattr(window_results, "divergences",
                        lambda *a, **k: calls.append(a[0].shape) or original(*a, **k))
    (outcome,) = application.run_latest(app_for(config), config.resolved_monitors(), START + 7 * DAY + HOUR)
    assert outcome.status == "ok" and len(outcome.results) == 200
    assert calls == [(200, 4)]  # 4 quantile bins, no missing values: no padding needed
    assert all(r.status == OK for r in outcome.results)


def test_backfill_resumes_and_is_idempotent(engine, db_url, drift_log, app_for):
    config = make_config(db_url)
    app = app_for(config)
    monitors = config.resolved_monitors()
    start, end = WINDOW.start - DAY, WINDOW.start + DAY
    plan = application.plan_backfill(app, monitors, start, end)
    assert len(plan) == 48
    for monitor, window in plan[:20]:  # interrupted after 20 windows
        application.run_window(app, monitor, window, trigger="backfill")
    rest = application.plan_backfill(app, monitors, start, end)
    assert [w for _, w in rest] == [w for _, w in plan[20:]]
    for monitor, window in rest:
        application.run_window(app, monitor, window, trigger="backfill")
    assert len(results_table(engine)) == 48 * len(FEATURES)
    assert application.plan_backfill(app, monitors, start, end) == []
    windows = [w for _, w in plan]
    assert windows == sorted(windows) and windows[0].start == start and windows[-1].end == end


def test_pipeline_reuses_one_source_per_monitor(engine, db_url, drift_log, app_for):
    config = make_config(db_url)
    app = app_for(config)
    monitors = config.resolved_monitors()
    application.run_latest(app, monitors, AT)
    source = app.pipeline.source_for(monitors[0], db_url)
    before = source.statements
    application.run_latest(app, monitors, AT + HOUR)
    assert source.statements == before + 1  # the stored profile is reused: one query a window
    assert isinstance(app.pipeline, Pipeline)


def test_a_store_that_hangs_fails_the_run_within_its_timeout(engine, db_url, drift_log, app_for, monkeypatch,
                                                              backend):
    if backend != "postgresql":
        pytest.skip("a lock held by another session: PostgreSQL")
    import time

    monkeypatch.setattr("driftmon.pipeline.STORE_TIMEOUT", timedelta(seconds=1))
    config = make_config(db_url)
    app = app_for(config)
    with engine.connect() as blocker:
        blocker.exec_driver_sql("BEGIN")
        blocker.exec_driver_sql("LOCK TABLE results IN ACCESS EXCLUSIVE MODE")  # a store that does not answer
        began = time.monotonic()
        (outcome,) = application.run_latest(app, config.resolved_monitors(), AT)
        took = time.monotonic() - began
        blocker.exec_driver_sql("ROLLBACK")
    assert (outcome.status, outcome.reason) == ("failed", "store") and "statement timeout" in outcome.error
    assert took < 30
