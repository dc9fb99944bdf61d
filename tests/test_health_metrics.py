"""Data health in /metrics (driftmon/serving/health_metrics.py): volume, freshness and schema
of each configured monitor, from finished runs and from the results database."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from driftmon.config_file import parse_config
from driftmon.outcomes import RunOutcome
from driftmon.serving.health_metrics import HealthCollector, HealthState
from driftmon.stats.volume import VolumeCheck, volume_check
from driftmon.store import health_queries
from driftmon.windows import TimeRange
from tests.live import free_port
from tests.test_metrics import END, REFERENCE, WINDOW

HOUR = timedelta(hours=1)
SOURCE = {"kind": "events", "table": "t", "timestamp_column": "ts"}
BASELINE = {"ts": "TIMESTAMP", "amount": "DOUBLE PRECISION", "country": "TEXT"}
THRESHOLDS = {"warning": 0.15, "critical": 0.3, "significance": 0.001}


def raw_config(**extra):
    return {**extra, "defaults": {"schedule": {"every": "5m"}},
            "monitors": [{"name": "fraud", "source": SOURCE, "features": [{"column": "amount"}]},
                         {"name": "daily", "source": SOURCE, "features": [{"column": "amount"}],
                          "schedule": {"cron": "0 3 * * *"}, "volume": None}]}


def monitors():
    return parse_config(raw_config(), {}).resolved_monitors()


def volume(rows, reference_rows=4000.0, share=0.25) -> VolumeCheck:
    """4000 reference rows for 4 windows' length: 1000 expected."""
    return volume_check(rows, reference_rows, share, **THRESHOLDS)


def outcome(check=None, monitor="fraud", window=WINDOW, status="ok", newest=None, schema=None):
    return RunOutcome(monitor, window, status, [], REFERENCE, reason=None if status == "ok" else "source",
                      error=None if status == "ok" else "column amount does not exist",
                      volume=check, newest_row_at=newest, schema=schema)


def schema_row(status="ok", changes=(), monitor="fraud", checked_at=END):
    return {"monitor": monitor, "baseline": BASELINE, "baseline_at": END - timedelta(days=8), "status": status,
            "changes": list(changes), "checked_at": checked_at}


def exported(state: HealthState, monitors_=None) -> dict[tuple[str, tuple], float]:
    """The samples of the exposition text, parsed back: (name, sorted labels) -> value."""
    text = b"".join(HealthCollector(state, monitors_ or monitors()).exposition_parts()).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def of(samples: dict, name: str) -> dict[tuple, float]:
    return {labels: value for (metric, labels), value in samples.items() if metric == name}


def test_a_recorded_run_exports_volume_freshness_and_schema():
    state = HealthState()
    check = volume(600)  # 40 % fewer rows than expected
    assert (check.status, check.expected, round(check.change, 9)) == ("critical", 1000.0, -0.4)
    newest = END - timedelta(minutes=5)
    state.record(outcome(check, newest=newest, schema=schema_row()))
    samples = exported(state)
    fraud = (("monitor", "fraud"),)
    assert of(samples, "driftmon_window_rows") == {fraud: 600.0}
    assert of(samples, "driftmon_window_rows_expected") == {fraud: 1000.0}
    assert of(samples, "driftmon_volume_change_ratio") == {fraud: pytest.approx(-0.4)}
    assert of(samples, "driftmon_volume_status") == {
        (("monitor", "fraud"), ("status", s)): 1.0 if s == "critical" else 0.0
        for s in ("ok", "warning", "critical", "insufficient_data")}
    assert of(samples, "driftmon_source_newest_timestamp_seconds") == {fraud: newest.timestamp()}
    assert of(samples, "driftmon_schema_status") == {fraud: 0.0}
    assert of(samples, "driftmon_schema_change") == {}
    # Every configured monitor's interval, from the start (the freshness alert divides by it).
    assert of(samples, "driftmon_schedule_interval_seconds") == {
        fraud: 300.0, (("monitor", "daily"),): 86400.0}


def test_without_reference_rows_the_volume_is_insufficient_and_has_no_expectation():
    state = HealthState()
    state.record(outcome(volume(12, reference_rows=0)))
    samples = exported(state)
    assert of(samples, "driftmon_window_rows") == {(("monitor", "fraud"),): 12.0}
    assert of(samples, "driftmon_window_rows_expected") == {}
    assert of(samples, "driftmon_volume_change_ratio") == {}
    status = of(samples, "driftmon_volume_status")
    assert {dict(k)["status"] for k, v in status.items() if v == 1} == {"insufficient_data"}
    assert len(status) == 4  # every status, zeros included, as driftmon_drift_status


def test_only_configured_monitors_and_checks_are_exported():
    state = HealthState()
    state.record(outcome(volume(1000), monitor="gone", newest=END, schema=schema_row(monitor="gone")))
    # daily has `volume: null`: a row stored before the check was turned off exports nothing,
    # while its freshness and schema still do.
    state.record(outcome(volume(600), monitor="daily", newest=END, schema=schema_row(monitor="daily")))
    samples = exported(state)
    assert not [key for key in samples if ("monitor", "gone") in key[1]]
    daily = [name for name, labels in samples if ("monitor", "daily") in labels]
    assert sorted(daily) == ["driftmon_schedule_interval_seconds", "driftmon_schema_status",
                             "driftmon_source_newest_resolution_seconds", "driftmon_source_newest_timestamp_seconds"]


def test_the_newest_window_is_kept_and_the_newest_row_only_moves_forward():
    state = HealthState()
    state.record(outcome(volume(950), newest=END - timedelta(minutes=10)))
    older = TimeRange(WINDOW.start - 2 * HOUR, WINDOW.end - 2 * HOUR)
    # A backfill of an older window finishes later: its volume is not the newest, and
    # its newest row is older than the one already seen.
    state.record(outcome(volume(300), window=older, newest=END - 2 * HOUR))
    samples = exported(state)
    assert of(samples, "driftmon_window_rows") == {(("monitor", "fraud"),): 950.0}
    assert of(samples, "driftmon_source_newest_timestamp_seconds") == {
        (("monitor", "fraud"),): (END - timedelta(minutes=10)).timestamp()}
    # A quiet newest window (no rows, so no newest row of its own) keeps the older news.
    later = TimeRange(WINDOW.start + HOUR, WINDOW.end + HOUR)
    state.record(outcome(volume(0), window=later, newest=None))
    samples = exported(state)
    assert of(samples, "driftmon_window_rows") == {(("monitor", "fraud"),): 0.0}
    assert of(samples, "driftmon_source_newest_timestamp_seconds") == {
        (("monitor", "fraud"),): (END - timedelta(minutes=10)).timestamp()}


def test_a_failed_run_with_a_schema_row_exports_the_broken_schema_naming_the_changes():
    state = HealthState()
    state.record(outcome(volume(1000), newest=END - timedelta(minutes=5), schema=schema_row()))
    changes = [{"column": "amount", "change": "dropped", "was": "DOUBLE PRECISION", "now": None},
               {"column": "country", "change": "retyped", "was": "TEXT", "now": "INTEGER"},
               {"column": "channel", "change": "added", "was": None, "now": "TEXT"}]
    later = TimeRange(WINDOW.start + HOUR, WINDOW.end + HOUR)
    state.record(outcome(volume(10), window=later, status="failed", newest=END + HOUR,
                         schema=schema_row("broken", changes, checked_at=END + HOUR)))
    samples = exported(state)
    assert of(samples, "driftmon_schema_status") == {(("monitor", "fraud"),): 2.0}
    assert of(samples, "driftmon_schema_change") == {
        (("change", "dropped"), ("column", "amount"), ("monitor", "fraud")): 1.0,
        (("change", "retyped"), ("column", "country"), ("monitor", "fraud")): 1.0,
        (("change", "added"), ("column", "channel"), ("monitor", "fraud")): 1.0}
    # The failed run stored no window: its volume and newest row are not taken.
    assert of(samples, "driftmon_window_rows") == {(("monitor", "fraud"),): 1000.0}
    assert of(samples, "driftmon_source_newest_timestamp_seconds") == {
        (("monitor", "fraud"),): (END - timedelta(minutes=5)).timestamp()}
    # Columns only added: changed (1), informational.
    state.record(outcome(schema=schema_row("changed", changes[2:], checked_at=END + 2 * HOUR)))
    samples = exported(state)
    assert of(samples, "driftmon_schema_status") == {(("monitor", "fraud"),): 1.0}
    assert list(of(samples, "driftmon_schema_change")) == [
        (("change", "added"), ("column", "channel"), ("monitor", "fraud"))]


def test_exposition_equals_prometheus_client_rendering_and_rerenders_only_on_change():
    state = HealthState()
    collector = HealthCollector(state, monitors())
    registry = CollectorRegistry()
    registry.register(collector)

    def check():
        assert b"".join(collector.exposition_parts()) == generate_latest(registry)
        assert b"".join(collector.exposition_parts(openmetrics=True)) + b"# EOF\n" == generate_openmetrics(registry)

    check()
    state.record(outcome(volume(600), newest=END, schema=schema_row(
        "broken", [{"column": "amo\"unt", "change": "dropped", "was": "DOUBLE PRECISION", "now": None}])))
    check()
    first = collector.exposition_parts()
    state.record(outcome(volume(600), newest=END))  # nothing new
    assert collector.exposition_parts()[0] is first[0]  # not rendered again
    state.record(outcome(volume(700), window=TimeRange(WINDOW.start + HOUR, WINDOW.end + HOUR)))
    assert b'driftmon_window_rows{monitor="fraud"} 700.0' in collector.exposition_parts()[0]
    check()


def health_row(window: TimeRange, check: VolumeCheck, newest: datetime | None, monitor="fraud") -> dict:
    return {"monitor": monitor, "window_start": window.start, "window_end": window.end, "rows": check.rows,
            "reference_rows": check.reference_rows, "expected": check.expected, "change": check.change,
            "p_value": check.p_value, "status": check.status, "threshold_warning": THRESHOLDS["warning"],
            "threshold_critical": THRESHOLDS["critical"], "newest_row_at": newest, "computed_at": END,
            "fingerprint": "f" * 64}


def test_restored_from_the_store_equals_recorded(engine):
    newest = END - timedelta(minutes=5)
    changes = [{"column": "amount", "change": "retyped", "was": "DOUBLE PRECISION", "now": "TEXT"}]
    later = TimeRange(WINDOW.start + HOUR, WINDOW.end + HOUR)
    recorded = HealthState()
    recorded.record(outcome(volume(600), newest=newest))
    recorded.record(outcome(volume(0), window=later, status="failed", schema=schema_row("broken", changes)))
    recorded.record(outcome(volume(0), window=later, newest=None))
    with engine.begin() as connection:
        health_queries.save_window_health(connection, health_row(WINDOW, volume(600), newest))
        health_queries.save_window_health(connection, health_row(later, volume(0), None))  # quiet: no rows
        health_queries.save_window_health(connection, health_row(WINDOW, volume(5), END, monitor="gone"))
        health_queries.save_schema(connection, schema_row("broken", changes))
    restored = HealthState()
    with engine.connect() as connection:
        restored.restore(connection)
    assert exported(restored) == exported(recorded)
    samples = exported(restored)
    assert of(samples, "driftmon_window_rows") == {(("monitor", "fraud"),): 0.0}  # the newest window
    assert of(samples, "driftmon_source_newest_timestamp_seconds") == {
        (("monitor", "fraud"),): newest.timestamp()}  # from the older window: the newest row any run saw
    assert of(samples, "driftmon_schema_change") == {
        (("change", "retyped"), ("column", "amount"), ("monitor", "fraud")): 1.0}
    version = restored.version
    with engine.connect() as connection:
        restored.restore(connection)  # a refresh that brings nothing new changes nothing
    assert restored.version == version


def test_a_window_stored_without_a_volume_check_restores_freshness_only(engine):
    """A window stored while the check was off (status "off") has rows 0 and no status: no volume
    series from it, though its newest row time still counts."""
    row = {**health_row(WINDOW, volume(600), END - timedelta(minutes=5)), "rows": 0.0, "reference_rows": 0.0,
           "expected": None, "change": None, "p_value": None, "status": "off"}
    with engine.begin() as connection:
        health_queries.save_window_health(connection, row)
    state = HealthState()
    with engine.connect() as connection:
        state.restore(connection)
    samples = exported(state)
    assert of(samples, "driftmon_window_rows") == of(samples, "driftmon_volume_status") == {}
    assert of(samples, "driftmon_source_newest_timestamp_seconds") == {
        (("monitor", "fraud"),): (END - timedelta(minutes=5)).timestamp()}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the wiring needs no second backend
def test_the_daemon_restores_records_and_serves_data_health(db_url, engine):
    from driftmon.serving.daemon import Daemon

    newest = END - timedelta(minutes=5)
    with engine.begin() as connection:
        health_queries.save_window_health(connection, health_row(WINDOW, volume(600), newest))
    raw = raw_config(database={"url": db_url}, server={"host": "127.0.0.1", "port": free_port(), "report": False})
    daemon = Daemon(parse_config(raw, {}), CollectorRegistry())
    daemon.open()
    server = daemon._bind()  # listening, never started: /metrics is read through exposition()
    try:
        daemon._restore()
        body, _ = daemon.exposition(None)
        assert b'driftmon_volume_status{monitor="fraud",status="critical"} 1.0' in body
        assert b'driftmon_schedule_interval_seconds{monitor="daily"} 86400.0' in body
        later = TimeRange(WINDOW.start + HOUR, WINDOW.end + HOUR)
        dropped = schema_row("broken", [{"column": "amount", "change": "dropped", "was": "DOUBLE PRECISION",
                                         "now": None}], checked_at=END + HOUR)
        daemon._record(outcome(window=later, status="failed", schema=dropped))
        body, _ = daemon.exposition("application/openmetrics-text; version=1.0.0")
        assert b'driftmon_schema_change{change="dropped",column="amount",monitor="fraud"} 1.0' in body
        assert body.endswith(b"# EOF\n") and body.count(b"# EOF") == 1
        families = {f.name for f in text_string_to_metric_families(daemon.exposition(None)[0].decode())}
        assert {"driftmon_window_rows", "driftmon_schema_status", "driftmon_kl_divergence", "driftmon_runs"} <= families
    finally:
        server.stop()
        daemon.store_health.close()
        daemon.app.close()
