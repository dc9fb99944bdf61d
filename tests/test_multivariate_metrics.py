"""Multivariate drift in /metrics (driftmon/serving/multivariate_metrics.py): each monitor's
newest reconstruction error with its band, Gaussian KL with its threshold, and status, from
finished runs and from the results database (issue #27). The alert on them,
DriftmonMultivariateDrift, is unit-tested by promtool through tests/test_alerts.py."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from driftmon.config_file import parse_config
from driftmon.multivariate.result import MultivariateResult
from driftmon.outcomes import RunOutcome
from driftmon.serving.multivariate_metrics import MultivariateCollector, MultivariateState
from driftmon.store import multivariate_queries
from driftmon.windows import TimeRange
from tests.live import free_port
from tests.test_metrics import END, REFERENCE, WINDOW

HOUR = timedelta(hours=1)
SOURCE = {"kind": "events", "table": "t", "timestamp_column": "ts"}
FEATURES = [{"column": "amount"}, {"column": "age"}]
STATUSES = ("ok", "warning", "critical", "insufficient_data")
FRAUD = (("monitor", "fraud"),)


def raw_config(**extra):
    """fraud and ranker write `multivariate:`, plain does not."""
    return {**extra, "defaults": {"schedule": {"every": "5m"}}, "monitors": [
        {"name": "fraud", "source": SOURCE, "features": FEATURES, "multivariate": {}},
        {"name": "ranker", "source": SOURCE, "features": FEATURES, "multivariate": {"columns": ["amount", "age"]}},
        {"name": "plain", "source": SOURCE, "features": FEATURES}]}


def monitors():
    return parse_config(raw_config(), {}).resolved_monitors()


def multivariate(status="critical", monitor="fraud", window=WINDOW, error=0.9512, lower=0.71, upper=0.87,
                 kl=0.42, kl_threshold=0.3, rows=1008.0) -> MultivariateResult:
    return MultivariateResult(monitor, window, REFERENCE, rows, error, 0.0123, lower, upper, kl, kl_threshold, status,
                              "k" * 64, "f" * 64, {"gaussian_kl": [["amount", 0.8]], "residuals": []})


def outcome(result: MultivariateResult | None, monitor="fraud", window=WINDOW, status="ok") -> RunOutcome:
    return RunOutcome(monitor, window, status, [], REFERENCE, reason=None if status == "ok" else "source",
                      error=None if status == "ok" else "no such table", multivariate=result)


def exported(state: MultivariateState, monitors_=None) -> dict[tuple[str, tuple], float]:
    """The samples of the exposition text, parsed back: (name, sorted labels) -> value."""
    text = b"".join(MultivariateCollector(state, monitors_ or monitors()).exposition_parts()).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def of(samples: dict, name: str) -> dict[tuple, float]:
    return {labels: value for (metric, labels), value in samples.items() if metric == name}


def bound(name: str) -> tuple:
    return (("bound", name), ("monitor", "fraud"))


def one_hot(status: str, monitor="fraud") -> dict[tuple, float]:
    return {(("monitor", monitor), ("status", s)): 1.0 if s == status else 0.0 for s in STATUSES}


def test_a_recorded_run_exports_error_band_kl_and_status():
    state = MultivariateState()
    state.record(outcome(multivariate()))
    samples = exported(state)
    assert of(samples, "driftmon_reconstruction_error") == {FRAUD: 0.9512}
    assert of(samples, "driftmon_reconstruction_error_threshold") == {bound("lower"): 0.71, bound("upper"): 0.87}
    assert of(samples, "driftmon_multivariate_kl") == {FRAUD: 0.42}
    assert of(samples, "driftmon_multivariate_kl_threshold") == {FRAUD: 0.3}
    # As driftmon_volume_status and driftmon_drift_status: every status, 1 for the window's, 0 for the others.
    assert of(samples, "driftmon_multivariate_status") == one_hot("critical")
    # ranker writes multivariate: too, but no run of it finished: no series yet.
    assert not [key for key in samples if ("monitor", "ranker") in key[1]]


def test_absent_bounds_and_values_that_are_none_or_not_finite_have_no_sample():
    state = MultivariateState()
    # A calibrated lower bound at or below 0 is dropped (None), as NannyML does; a singular
    # window's KL is infinite (stored as null).
    state.record(outcome(multivariate("ok", lower=None, kl=math.inf)))
    # ranker: too few rows in its window: insufficient_data, no error and no KL, its band still known.
    state.record(outcome(multivariate("insufficient_data", "ranker", error=None, kl=None, rows=3.0), "ranker"))
    samples = exported(state)
    ranker = (("monitor", "ranker"),)
    assert of(samples, "driftmon_reconstruction_error") == {FRAUD: 0.9512}
    assert of(samples, "driftmon_reconstruction_error_threshold") == {
        bound("upper"): 0.87, (("bound", "lower"), ranker[0]): 0.71, (("bound", "upper"), ranker[0]): 0.87}
    assert of(samples, "driftmon_multivariate_kl") == {}
    assert of(samples, "driftmon_multivariate_kl_threshold") == {FRAUD: 0.3, ranker: 0.3}
    assert of(samples, "driftmon_multivariate_status") == {**one_hot("ok"), **one_hot("insufficient_data", "ranker")}
    # No band at all (a reference too short to calibrate on) and a NaN error: neither has a sample.
    later = TimeRange(WINDOW.start + HOUR, WINDOW.end + HOUR)
    state.record(outcome(multivariate("insufficient_data", window=later, error=math.nan, lower=None, upper=None,
                                      kl=None, kl_threshold=None), window=later))
    samples = exported(state)
    assert [name for name, labels in samples if ("monitor", "fraud") in labels] == ["driftmon_multivariate_status"] * 4
    assert b"NaN" not in b"".join(MultivariateCollector(state, monitors()).exposition_parts())


def test_only_configured_monitors_and_ok_runs_are_exported():
    state = MultivariateState()
    state.record(outcome(multivariate(monitor="gone"), "gone"))  # left the config
    state.record(outcome(multivariate(monitor="plain"), "plain"))  # stored before multivariate: was removed
    state.record(outcome(multivariate(monitor="ranker"), "ranker", status="failed"))  # a failed run stores nothing
    state.record(outcome(None, "ranker"))  # a run without a multivariate result
    assert exported(state) == {}
    assert state.version == 2  # gone and plain are kept (a config may come back), just not exported


def test_the_newest_window_is_kept():
    state = MultivariateState()
    state.record(outcome(multivariate("ok", error=0.8)))
    older = TimeRange(WINDOW.start - 2 * HOUR, WINDOW.end - 2 * HOUR)
    # A backfill of an older window finishes later: not the newest.
    state.record(outcome(multivariate("critical", window=older, error=2.0), window=older))
    samples = exported(state)
    assert of(samples, "driftmon_reconstruction_error") == {FRAUD: 0.8}
    assert of(samples, "driftmon_multivariate_status") == one_hot("ok")
    # The same window recomputed (late rows) replaces it.
    state.record(outcome(multivariate("critical", error=0.95)))
    assert of(exported(state), "driftmon_reconstruction_error") == {FRAUD: 0.95}


def test_exposition_equals_prometheus_client_rendering_and_rerenders_only_on_change():
    state = MultivariateState()
    collector = MultivariateCollector(state, monitors())
    registry = CollectorRegistry()
    registry.register(collector)

    def check():
        assert b"".join(collector.exposition_parts()) == generate_latest(registry)
        assert b"".join(collector.exposition_parts(openmetrics=True)) + b"# EOF\n" == generate_openmetrics(registry)

    check()
    state.record(outcome(multivariate(lower=None)))
    check()
    first = collector.exposition_parts()
    state.record(outcome(multivariate(lower=None)))  # nothing new
    assert collector.exposition_parts()[0] is first[0]  # not rendered again
    later = TimeRange(WINDOW.start + HOUR, WINDOW.end + HOUR)
    state.record(outcome(multivariate("ok", window=later, error=0.8), window=later))
    assert b'driftmon_reconstruction_error{monitor="fraud"} 0.8' in collector.exposition_parts()[0]
    check()


def store(engine, *results: MultivariateResult) -> None:
    with engine.begin() as connection:
        for result in results:
            multivariate_queries.write_multivariate(connection, result.monitor, None, [], None,
                                                    result.as_row(END + timedelta(minutes=1)))


def test_restored_from_the_store_equals_recorded(engine):
    later = TimeRange(WINDOW.start + HOUR, WINDOW.end + HOUR)
    results = [multivariate("critical"),
               multivariate("ok", window=later, error=0.8, lower=None, kl=math.inf),
               multivariate("insufficient_data", "ranker", error=None, kl=None, rows=3.0),
               multivariate(monitor="gone")]
    recorded = MultivariateState()
    for result in results:
        recorded.record(outcome(result, result.monitor, result.window))
    store(engine, *results)
    restored = MultivariateState()
    with engine.connect() as connection:
        restored.restore(connection)
    assert exported(restored) == exported(recorded)
    samples = exported(restored)
    assert of(samples, "driftmon_reconstruction_error") == {FRAUD: 0.8}  # the newest window
    assert of(samples, "driftmon_reconstruction_error_threshold")[bound("upper")] == 0.87
    assert bound("lower") not in of(samples, "driftmon_reconstruction_error_threshold")  # stored as null
    assert of(samples, "driftmon_multivariate_kl") == {}  # infinite: stored as null
    assert of(samples, "driftmon_multivariate_status") == {**one_hot("ok"), **one_hot("insufficient_data", "ranker")}
    version = restored.version
    with engine.connect() as connection:
        restored.restore(connection)  # a refresh that brings nothing new changes nothing
    assert restored.version == version


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the wiring needs no second backend
def test_the_daemon_restores_records_refreshes_and_serves_multivariate_drift(db_url, engine):
    from driftmon.serving.daemon import Daemon

    store(engine, multivariate("critical"))
    raw = raw_config(database={"url": db_url}, server={"host": "127.0.0.1", "port": free_port(), "report": False})
    daemon = Daemon(parse_config(raw, {}), CollectorRegistry())
    daemon.open()
    server = daemon._bind()  # listening, never started: /metrics is read through exposition()
    try:
        daemon._restore()
        body, _ = daemon.exposition(None)
        assert b'driftmon_multivariate_status{monitor="fraud",status="critical"} 1.0' in body
        assert b'driftmon_reconstruction_error_threshold{bound="lower",monitor="fraud"} 0.71' in body
        later = TimeRange(WINDOW.start + HOUR, WINDOW.end + HOUR)
        daemon._record(outcome(multivariate("ok", window=later, error=0.8, lower=None), window=later))
        body, _ = daemon.exposition("application/openmetrics-text; version=1.0.0")
        assert b'driftmon_reconstruction_error{monitor="fraud"} 0.8' in body
        assert b'bound="lower"' not in body
        assert body.endswith(b"# EOF\n") and body.count(b"# EOF") == 1
        # Another replica (or a backfill) stores a newer window: the refresh takes it in.
        newest = TimeRange(WINDOW.start + 2 * HOUR, WINDOW.end + 2 * HOUR)
        store(engine, multivariate("warning", window=newest, error=0.75))
        daemon.refresh()
        body, _ = daemon.exposition(None)
        assert b'driftmon_multivariate_status{monitor="fraud",status="warning"} 1.0' in body
        families = {f.name for f in text_string_to_metric_families(body.decode())}
        assert {"driftmon_reconstruction_error", "driftmon_reconstruction_error_threshold", "driftmon_multivariate_kl",
                "driftmon_multivariate_kl_threshold", "driftmon_multivariate_status", "driftmon_window_rows",
                "driftmon_kl_divergence", "driftmon_runs"} <= families
    finally:
        server.stop()
        daemon.store_health.close()
        daemon.app.close()
