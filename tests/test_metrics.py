"""The collector: exact values on a fresh registry, no queries, no NaN, no stale series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from driftmon.config_file import parse_config
from driftmon.outcomes import ColumnResult, RunOutcome
from driftmon.serving.metrics import DriftCollector, DriftState
from driftmon.serving.run_metrics import RunMetrics
from driftmon.windows import TimeRange

END = datetime(2024, 3, 8, 1, tzinfo=UTC)
WINDOW = TimeRange(END - timedelta(hours=1), END)
REFERENCE = TimeRange(END - timedelta(days=8), END - timedelta(days=1))
BUILD = {"version": "0.1.0", "torch_version": "2.13.0", "device": "cpu"}


def settings(features=("amount", "country")):
    raw = {"monitors": [{"name": "fraud", "source": {"kind": "events", "table": "t", "timestamp_column": "ts"},
                         "features": [{"column": c} for c in features],
                         "thresholds": {"warning": 0.1, "critical": 0.25,
                                        "per_feature": {"amount": {"critical": 0.5}} if "amount" in features else {}}}]}
    return parse_config(raw, {}).resolved_monitors()


def result(column, kl, status, end=END, missing=0.05, samples=400.0, p_value=None, q_value=None):
    window = TimeRange(end - timedelta(hours=1), end)
    return ColumnResult(monitor="fraud", column=column, role="feature", window=window, reference=REFERENCE,
                        samples_current=samples, samples_reference=2000.0, missing_current=20.0,
                        missing_ratio=missing, kl=kl, psi=None if kl is None else 2 * kl,
                        js=None if kl is None else kl / 4, statistic="kl", threshold_warning=0.1,
                        threshold_critical=0.25, status=status, p_value=p_value, q_value=q_value)


def outcome(*results, status="ok", monitor="fraud"):
    return RunOutcome(monitor, WINDOW, status, list(results), REFERENCE, duration_seconds=0.2,
                      reason=None if status == "ok" else "source", error=None if status == "ok" else "boom")


@pytest.fixture
def registry():
    return CollectorRegistry()


def test_exact_values(registry):
    state = DriftState()
    state.record(outcome(result("amount", 0.3, "warning"), result("country", 0.01, "ok")), END)
    registry.register(DriftCollector(state, settings(), BUILD))
    labels = {"monitor": "fraud", "feature": "amount", "role": "feature"}
    assert registry.get_sample_value("driftmon_kl_divergence", labels) == 0.3
    assert registry.get_sample_value("driftmon_psi", labels) == 0.6
    assert registry.get_sample_value("driftmon_js_divergence", labels) == 0.075
    assert registry.get_sample_value("driftmon_drift_status", {**labels, "status": "warning"}) == 1
    assert registry.get_sample_value("driftmon_drift_status", {**labels, "status": "critical"}) == 0
    assert registry.get_sample_value("driftmon_drift_threshold", {
        "monitor": "fraud", "feature": "amount", "severity": "critical", "statistic": "kl"}) == 0.5
    assert registry.get_sample_value("driftmon_drift_threshold", {
        "monitor": "fraud", "feature": "country", "severity": "critical", "statistic": "kl"}) == 0.25
    assert registry.get_sample_value("driftmon_window_samples", {
        "monitor": "fraud", "feature": "amount", "window": "reference"}) == 2000
    assert registry.get_sample_value("driftmon_missing_ratio", {"monitor": "fraud", "feature": "amount"}) == 0.05
    assert registry.get_sample_value("driftmon_last_success_timestamp_seconds", {"monitor": "fraud"}) \
        == END.timestamp()
    assert registry.get_sample_value("driftmon_window_end_timestamp_seconds", {"monitor": "fraud"}) \
        == END.timestamp()
    assert registry.get_sample_value("driftmon_store_up") == 1
    assert registry.get_sample_value("driftmon_build_info", BUILD) == 1


def test_insufficient_data_keeps_the_evidence(registry):
    """Only the statistics are absent: the sample counts and missing ratio say why."""
    state = DriftState()
    state.record(outcome(result("amount", None, "insufficient_data", samples=12.0, missing=0.25),
                         result("country", None, "insufficient_data", samples=0.0, missing=None)), END)
    registry.register(DriftCollector(state, settings(), BUILD))
    text = generate_latest(registry).decode()
    assert "NaN" not in text and "Inf" not in text.replace("+Inf", "")
    labels = {"monitor": "fraud", "feature": "amount", "role": "feature"}
    for metric in ("driftmon_kl_divergence", "driftmon_psi", "driftmon_js_divergence",
                   "driftmon_drift_p_value", "driftmon_drift_q_value"):
        assert registry.get_sample_value(metric, labels) is None, metric
    assert registry.get_sample_value("driftmon_drift_status", {**labels, "status": "insufficient_data"}) == 1
    samples = {"monitor": "fraud", "feature": "amount"}
    assert registry.get_sample_value("driftmon_window_samples", {**samples, "window": "current"}) == 12
    assert registry.get_sample_value("driftmon_window_samples", {**samples, "window": "reference"}) == 2000
    assert registry.get_sample_value("driftmon_missing_ratio", samples) == 0.25
    empty = {"monitor": "fraud", "feature": "country"}  # an empty window: a count of 0, no ratio of 0/0
    assert registry.get_sample_value("driftmon_window_samples", {**empty, "window": "current"}) == 0
    assert registry.get_sample_value("driftmon_missing_ratio", empty) is None


def test_significance_gauges(registry):
    state = DriftState()
    state.record(outcome(result("amount", 0.3, "critical", p_value=1.5e-12, q_value=3e-12),
                         result("country", 0.01, "ok")), END)  # no p/q-values computed: absent
    registry.register(DriftCollector(state, settings(), BUILD))
    amount = {"monitor": "fraud", "feature": "amount", "role": "feature"}
    assert registry.get_sample_value("driftmon_drift_p_value", amount) == 1.5e-12
    assert registry.get_sample_value("driftmon_drift_q_value", amount) == 3e-12
    country = {**amount, "feature": "country"}
    assert registry.get_sample_value("driftmon_drift_p_value", country) is None
    assert registry.get_sample_value("driftmon_drift_q_value", country) is None


def test_columns_that_leave_the_config_disappear(registry):
    state = DriftState()
    state.record(outcome(result("amount", 0.3, "warning"), result("country", 0.01, "ok")), END)
    registry.register(DriftCollector(state, settings(features=("country",)), BUILD))
    assert registry.get_sample_value("driftmon_kl_divergence",
                                     {"monitor": "fraud", "feature": "amount", "role": "feature"}) is None
    assert registry.get_sample_value("driftmon_kl_divergence",
                                     {"monitor": "fraud", "feature": "country", "role": "feature"}) == 0.01
    other = CollectorRegistry()
    other.register(DriftCollector(state, [], BUILD))  # the monitor itself left
    assert "driftmon_kl_divergence{" not in generate_latest(other).decode()


def test_registering_and_describing_read_no_state(registry):
    class Untouchable(DriftState):
        def snapshot(self):
            raise AssertionError("describe() must not read state")

    registry.register(DriftCollector(Untouchable(), settings(), BUILD))  # would call collect() without describe()


def test_newest_window_wins_and_failed_runs_keep_values(registry):
    state = DriftState()
    state.record(outcome(result("amount", 0.3, "warning")), END)
    state.record(outcome(result("amount", 0.9, "critical", end=END - timedelta(hours=5))), END)  # backfilled
    state.record(outcome(status="failed"), END + timedelta(hours=1))
    registry.register(DriftCollector(state, settings(), BUILD))
    assert registry.get_sample_value("driftmon_kl_divergence",
                                     {"monitor": "fraud", "feature": "amount", "role": "feature"}) == 0.3


def test_restore_from_stored_rows(registry):
    state = DriftState()
    row = {"monitor": "fraud", "column": "amount", "role": "feature", "kl": 0.2, "psi": 0.4, "js": 0.05,
           "status": "warning", "samples_current": 10.0, "samples_reference": 20.0, "missing_ratio": 0.0,
           "window_end": END, "id": 1, "statistic": "kl", "p_value": 0.004, "q_value": 0.008}
    old_row = {**row, "column": "country"}
    del old_row["p_value"], old_row["q_value"]  # stored before significance existed
    state.restore([row, old_row], {"fraud": END})
    registry.register(DriftCollector(state, settings(), BUILD))
    labels = {"monitor": "fraud", "feature": "amount", "role": "feature"}
    assert registry.get_sample_value("driftmon_kl_divergence", labels) == 0.2
    assert registry.get_sample_value("driftmon_drift_p_value", labels) == 0.004
    assert registry.get_sample_value("driftmon_drift_q_value", labels) == 0.008
    assert registry.get_sample_value("driftmon_drift_p_value", {**labels, "feature": "country"}) is None


def test_refresh_takes_in_newer_rows_and_changes_nothing_else(registry):
    """The daemon refreshes from the results database every cycle: a row another replica
    stored wins when newer; an unchanged one re-renders nothing; successes only advance."""
    state = DriftState()
    state.record(outcome(result("amount", 0.3, "warning")), END + timedelta(minutes=1))
    row = {"monitor": "fraud", "column": "amount", "role": "feature", "kl": 0.3, "psi": 0.6, "js": 0.075,
           "status": "warning", "samples_current": 400.0, "samples_reference": 2000.0, "missing_ratio": 0.05,
           "window_end": END}
    version, _ = state.results_of("fraud")
    state.restore([row], {"fraud": END})  # what this replica stored itself, read back
    assert state.results_of("fraud")[0] == version
    assert state.snapshot()[1]["fraud"] == END + timedelta(minutes=1)  # not set back
    newer = {**row, "kl": 0.9, "status": "critical", "window_end": END + timedelta(hours=1)}
    state.restore([newer], {"fraud": END + timedelta(hours=1)})  # another replica's window
    registry.register(DriftCollector(state, settings(), BUILD))
    labels = {"monitor": "fraud", "feature": "amount", "role": "feature"}
    assert registry.get_sample_value("driftmon_kl_divergence", labels) == 0.9
    assert registry.get_sample_value("driftmon_last_success_timestamp_seconds", {"monitor": "fraud"}) \
        == (END + timedelta(hours=1)).timestamp()


def test_run_counters(registry):
    metrics = RunMetrics(registry)
    metrics.prepare(["fraud"])
    assert registry.get_sample_value("driftmon_runs_total", {"monitor": "fraud"}) == 0
    for reason in ("source", "store", "compute", "other"):
        assert registry.get_sample_value("driftmon_run_failures_total", {"monitor": "fraud", "reason": reason}) == 0
    metrics.record(outcome(result("amount", 0.3, "warning")))
    metrics.record(outcome(status="failed"))
    assert registry.get_sample_value("driftmon_runs_total", {"monitor": "fraud"}) == 2
    assert registry.get_sample_value("driftmon_run_failures_total", {"monitor": "fraud", "reason": "source"}) == 1
    assert registry.get_sample_value("driftmon_run_duration_seconds_count", {"monitor": "fraud"}) == 2


def test_missed_windows_are_counted_from_zero(registry):
    metrics = RunMetrics(registry)
    metrics.prepare(["fraud"])
    assert registry.get_sample_value("driftmon_windows_missed_total", {"monitor": "fraud"}) == 0
    metrics.record_missed("fraud", 3)
    metrics.record_missed("fraud", 1)
    assert registry.get_sample_value("driftmon_windows_missed_total", {"monitor": "fraud"}) == 4
    assert b'driftmon_windows_missed_total{monitor="fraud"} 4.0' in b"".join(metrics.exposition_parts())


def test_run_counters_exposition_equals_prometheus_client_rendering(registry):
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    metrics = RunMetrics(registry)
    metrics.prepare(["fraud", 'we"ird\\name', "third"])

    def check():
        for _ in range(2):  # the second time from the text kept per monitor
            assert b"".join(metrics.exposition_parts()) == generate_latest(registry)
            assert b"".join(metrics.exposition_parts(openmetrics=True)) == \
                generate_openmetrics(registry).removesuffix(b"# EOF\n")

    check()
    metrics.record(outcome(result("amount", 0.3, "warning")))
    check()
    metrics.record(outcome(status="failed"))
    metrics.record_failure("third", "store")
    metrics.record(outcome(status="failed", monitor="late"))  # not prepared: series of its own
    metrics.record_missed("third", 2)
    metrics.record_missed("missed only", 1)
    check()
    assert registry.get_sample_value("driftmon_run_failures_total", {"monitor": "third", "reason": "store"}) == 1
    assert registry.get_sample_value("driftmon_runs_total", {"monitor": "third"}) == 1  # counted as a run too
    assert registry.get_sample_value("driftmon_runs_total", {"monitor": "late"}) == 1


def test_fast_exposition_equals_prometheus_client_rendering():
    """/metrics writes pre-rendered per-monitor text; it must be byte for byte what
    prometheus_client makes of collect(), in both formats, after incremental updates."""
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    raw = {"monitors": [
        {"name": "fraud", "source": {"kind": "events", "table": "t", "timestamp_column": "ts"},
         "features": [{"column": c} for c in ("amount", 'we"ird\\col', "gone")]},
        {"name": "hist", "source": {"kind": "histograms", "table": "h", "timestamp_column": "ts"}},
    ]}
    monitors = parse_config(raw, {}).resolved_monitors()
    state = DriftState()
    collector = DriftCollector(state, monitors, BUILD)
    registry = CollectorRegistry()
    registry.register(collector)

    def check():
        openmetrics = generate_openmetrics(registry).decode()
        assert collector.exposition() == generate_latest(registry).decode()
        assert collector.exposition(openmetrics=True) == openmetrics.removesuffix("# EOF\n")

    check()  # nothing stored yet
    state.record(outcome(result("amount", 0.3, "warning", p_value=2.5e-7, q_value=5e-7),
                         result('we"ird\\col', None, "insufficient_data", missing=None)), END)
    state.restore([{"monitor": "hist", "column": "age", "role": "prediction", "kl": 1e-300, "psi": 2.0,
                    "js": 0.5, "status": "critical", "samples_current": 1.5, "samples_reference": 3.0,
                    "missing_ratio": 0.25, "window_end": END},
                   {"monitor": "left", "column": "x", "role": "feature", "kl": 1.0, "psi": 1.0, "js": 1.0,
                    "status": "ok", "samples_current": 1.0, "samples_reference": 1.0, "missing_ratio": 0.0,
                    "window_end": END}], {"hist": END})
    check()
    state.record(outcome(result("amount", 0.05, "ok", end=END + timedelta(hours=1))), END + timedelta(hours=1))
    state.store_up = False
    check()
