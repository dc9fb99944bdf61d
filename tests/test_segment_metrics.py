"""Segments in /metrics (README, "Segments"): counts per status, the top_k most drifted
segments with a segment label, no stale series, both feeding paths, and the series bound."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from driftmon import app as application
from driftmon.config_file import parse_config
from driftmon.serving.metrics import DriftCollector, DriftState
from driftmon.serving.run_metrics import RunMetrics
from driftmon.serving.segment_metrics import FAMILIES
from driftmon.store.segment_queries import changed_segment_rows
from driftmon.windows import TimeRange
from tests.sourcedata import START, create_and_fill, events_table
from tests.test_metrics import BUILD, END, outcome, result

SEGMENT_FAMILIES = {metric for _, metric, *_ in FAMILIES}
STATUSES = ("ok", "warning", "critical", "insufficient_data")


def settings(top_k=None, segmented=True):
    segments = {"by": ["region"], **({"top_k": top_k} if top_k is not None else {})}
    raw = {"monitors": [{
        "name": "fraud", "source": {"kind": "events", "table": "t", "timestamp_column": "ts"},
        "features": [{"column": "amount"}, {"column": "country", "type": "categorical"}],
        "thresholds": {"warning": 0.1, "critical": 0.25},
        **({"segments": segments} if segmented else {})}]}
    return parse_config(raw, {}).resolved_monitors()


def segment(column, region, status, kl=None, psi=None, end=END, role="feature", p_value=None, q_value=None):
    """A (segment, column) result; psi defaults to 2 kl, js to kl / 4 (tests.test_metrics.result).
    country's rows say they were judged by PSI, so that the ranking must read the row's statistic."""
    row = result(column, kl, status, end=end, p_value=p_value, q_value=q_value)
    statistic = "psi" if column == "country" else "kl"
    return dataclasses.replace(row, segment={"region": region}, role=role, statistic=statistic,
                               psi=psi if psi is not None else row.psi)


def mix(status="ok", kl=0.02, end=END):
    return dataclasses.replace(result("segment", kl, status, end=end), role="segment")


def collected(state, monitors) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(DriftCollector(state, monitors, BUILD))
    return registry


def series(registry, metric, **labels) -> dict[tuple, float]:
    """Samples of ``metric`` whose labels include ``labels``, keyed by their sorted labels."""
    return {tuple(sorted(s.labels.items())): s.value for family in registry.collect() for s in family.samples
            if s.name == metric and labels.items() <= s.labels.items()}


AMOUNT = [  # region, status, kl: two critical, one warning, three ok, two insufficient
    ("A", "ok", 0.01), ("B", "critical", 0.5), ("C", "warning", 0.2), ("D", "critical", 0.9),
    ("E", "ok", 0.05), ("F", "insufficient_data", None), ("G", "ok", 0.08), ("H", "insufficient_data", None)]


def test_counts_per_status_and_the_top_k_most_drifted():
    state = DriftState()
    rows = [segment("amount", r, s, kl, p_value=0.001, q_value=0.002) for r, s, kl in AMOUNT]
    # Rows judged by PSI (the statistic stored with them): country's order by KL (Y, X, Z)
    # is not its order by PSI (Z, X, Y).
    rows += [segment("country", "X", "ok", 0.05, psi=0.08), segment("country", "Y", "ok", 0.09, psi=0.01),
             segment("country", "Z", "ok", 0.01, psi=0.09)]
    whole = [result("amount", 0.003, "ok"), result("country", 0.001, "ok"), mix()]
    state.record(outcome(*whole, *rows), END)
    registry = collected(state, settings(top_k=3))
    counts = {dict(k)["status"]: v for k, v in series(registry, "driftmon_segments", feature="amount").items()}
    assert counts == {"critical": 2, "warning": 1, "ok": 3, "insufficient_data": 2}
    counts = {dict(k)["status"]: v for k, v in series(registry, "driftmon_segments", feature="country").items()}
    assert counts == {"critical": 0, "warning": 0, "ok": 3, "insufficient_data": 0}

    def top(metric, feature):
        return {dict(k)["segment"]: v for k, v in series(registry, metric, feature=feature).items()}

    assert top("driftmon_segment_kl_divergence", "amount") == {"region=D": 0.9, "region=B": 0.5, "region=C": 0.2}
    assert top("driftmon_segment_psi", "amount") == {"region=D": 1.8, "region=B": 1.0, "region=C": 0.4}
    assert top("driftmon_segment_js_divergence", "amount") == {"region=D": 0.225, "region=B": 0.125,
                                                                "region=C": 0.05}
    assert top("driftmon_segment_drift_p_value", "amount") == dict.fromkeys(("region=D", "region=B", "region=C"),
                                                                             0.001)
    assert top("driftmon_segment_drift_q_value", "amount") == dict.fromkeys(("region=D", "region=B", "region=C"),
                                                                             0.002)
    assert set(top("driftmon_segment_psi", "country")) == {"region=Z", "region=X", "region=Y"}  # all 3 of 3
    status = series(registry, "driftmon_segment_drift_status", feature="amount", segment="region=C")
    assert {dict(k)["status"]: v for k, v in status.items()} == {
        "ok": 0, "warning": 1, "critical": 0, "insufficient_data": 0}
    assert dict(next(iter(status)))["role"] == "feature" and dict(next(iter(status)))["monitor"] == "fraud"
    # The whole population keeps its own values; the mix is a column like any other.
    assert series(registry, "driftmon_kl_divergence", feature="amount") == {
        (("feature", "amount"), ("monitor", "fraud"), ("role", "feature")): 0.003}
    assert series(registry, "driftmon_kl_divergence", feature="segment") == {
        (("feature", "segment"), ("monitor", "fraud"), ("role", "segment")): 0.02}
    assert series(registry, "driftmon_drift_threshold", feature="segment", severity="critical") == {
        (("feature", "segment"), ("monitor", "fraud"), ("severity", "critical"), ("statistic", "kl")): 0.25}


def test_order_is_by_status_then_the_configured_statistic():
    """An independent ranking (pandas) of 40 random segments per column against the export."""
    rng = np.random.default_rng(4)
    regions = [f"r{i:02d}" for i in range(40)]
    frame = pd.DataFrame({"region": regions * 2, "column": ["amount"] * 40 + ["country"] * 40,
                          "status": rng.choice(STATUSES, 80), "kl": rng.random(80), "psi": rng.random(80)})
    frame.loc[frame["status"] == "insufficient_data", ["kl", "psi"]] = np.nan
    rows = [segment(r.column, r.region, r.status, None if np.isnan(r.kl) else r.kl,
                    psi=None if np.isnan(r.psi) else r.psi) for r in frame.itertuples()]
    state = DriftState()
    state.record(outcome(result("amount", 0.0, "ok"), *rows), END)
    registry = collected(state, settings(top_k=7))
    severity = {"critical": 3, "warning": 2, "ok": 1, "insufficient_data": 0}
    frame["severity"] = frame["status"].map(severity)
    frame["value"] = np.where(frame["column"] == "country", frame["psi"], frame["kl"])
    for column in ("amount", "country"):
        expected = frame[frame["column"] == column].fillna({"value": -np.inf}).sort_values(
            ["severity", "value", "region"], ascending=[False, False, True]).head(7)
        exported = series(registry, "driftmon_segment_drift_status", feature=column)
        assert {dict(k)["segment"] for k in exported} == {f"region={r}" for r in expected["region"]}, column
        assert len(exported) == 7 * len(STATUSES)


def test_a_segment_that_leaves_the_top_k_loses_its_series():
    state = DriftState()
    monitors = settings(top_k=2)
    state.record(outcome(result("amount", 0.0, "ok"), segment("amount", "A", "critical", 0.9),
                         segment("amount", "B", "ok", 0.01), segment("amount", "C", "ok", 0.02)), END)
    collector = DriftCollector(state, monitors, BUILD)
    assert 'segment="region=A"' in collector.exposition()
    later = END + timedelta(hours=1)
    state.record(outcome(result("amount", 0.0, "ok", end=later), segment("amount", "A", "ok", 0.001, end=later),
                         segment("amount", "B", "warning", 0.2, end=later),
                         segment("amount", "C", "ok", 0.02, end=later)), later)
    text = collector.exposition()
    assert 'segment="region=A"' not in text  # not even a 0
    assert 'segment="region=B"' in text and 'segment="region=C"' in text
    registry = collected(state, monitors)
    assert series(registry, "driftmon_segment_kl_divergence", segment="region=A") == {}
    assert {dict(k)["status"]: v for k, v in series(registry, "driftmon_segments").items()} == {
        "ok": 2, "warning": 1, "critical": 0, "insufficient_data": 0}
    # A backfilled older window changes nothing: the newest one stays.
    state.record(outcome(result("amount", 0.0, "ok"), segment("amount", "A", "critical", 0.9)), later)
    assert collector.exposition() == text


def test_unsegmented_monitors_and_unconfigured_columns_export_no_segment_series():
    state = DriftState()
    state.record(outcome(result("amount", 0.3, "warning"), mix(), segment("amount", "A", "critical", 0.9),
                         segment("gone", "A", "critical", 0.9)), END)
    plain = collected(state, settings(segmented=False))
    for metric in SEGMENT_FAMILIES:
        assert series(plain, metric) == {}, metric
    assert series(plain, "driftmon_drift_status", feature="segment") == {}  # the mix: a column of segmented ones
    assert series(plain, "driftmon_kl_divergence", feature="amount") == {
        (("feature", "amount"), ("monitor", "fraud"), ("role", "feature")): 0.3}
    segmented = collected(state, settings())
    assert {dict(k)["feature"] for k in series(segmented, "driftmon_segments")} == {"amount"}


def test_fast_exposition_equals_prometheus_client_rendering_with_segments():
    monitors = settings(top_k=2)
    state = DriftState()
    collector = DriftCollector(state, monitors, BUILD)
    registry = CollectorRegistry()
    registry.register(collector)

    def check():
        assert collector.exposition() == generate_latest(registry).decode()
        assert collector.exposition(openmetrics=True) == generate_openmetrics(registry).decode().removesuffix(
            "# EOF\n")

    check()
    state.record(outcome(result("amount", 0.3, "warning"), mix(),
                         segment("amount", 'we"ird\\one', "critical", 0.9, p_value=1e-9, q_value=2e-9),
                         segment("amount", "B", "insufficient_data"), segment("amount", "C", "ok", 0.01),
                         segment("country", "B", "ok", 0.01, psi=0.3)), END)
    check()
    later = END + timedelta(hours=1)
    state.record(outcome(result("amount", 0.1, "ok", end=later), segment("amount", "C", "ok", 0.2, end=later)),
                 later)
    check()


# --- the real pipeline: the restore path and the series bound ---------------------------------

DAY, HOUR = timedelta(days=1), timedelta(hours=1)
REFERENCE = TimeRange(START, START + 7 * DAY)
WINDOW = TimeRange(START + 7 * DAY, START + 7 * DAY + HOUR)


def zipf_traffic(rng, n, span: TimeRange, regions: int, drifted: str | None = None) -> list[dict]:
    """``regions`` segment values with Zipf-like shares (and a few NULLs); ``drifted`` shifts by +1 sd."""
    shares = 1 / np.arange(1, regions + 1)
    names = np.array([f"r{i:03d}" for i in range(regions)], dtype=object)
    region = names[rng.choice(regions, n, p=shares / shares.sum())]
    region[rng.random(n) < 0.01] = None
    amount = rng.normal(0, 1, n) + (region == drifted)
    seconds = rng.uniform(0, (span.end - span.start).total_seconds(), n)
    country = rng.choice(["x", "y", "z"], n)
    return [{"ts": span.start + timedelta(seconds=float(seconds[i])), "model_version": "v3",
             "amount": float(amount[i]), "country": str(country[i]), "score": 0.5, "region": region[i]}
            for i in range(n)]


def pipeline_config(url, segments):
    raw = {"database": {"url": url},
           "defaults": {"schedule": {"every": "1h"}, "min_samples": 50,
                        "reference": {"kind": "fixed", "start": REFERENCE.start.isoformat(),
                                      "end": REFERENCE.end.isoformat()}},
           "monitors": [{"name": "m", "features": [{"column": "amount"}, {"column": "country", "type": "categorical"}],
                         "source": {"kind": "events", "table": "inference_log", "timestamp_column": "ts"},
                         **({"segments": segments} if segments else {})}]}
    return parse_config(raw, {})


@pytest.fixture
def zipf_log(engine):
    rng = np.random.default_rng(23)
    rows = zipf_traffic(rng, 60_000, REFERENCE, 200) + zipf_traffic(rng, 30_000, WINDOW, 200, drifted="r003")
    create_and_fill(engine, events_table(region=sa.String(8)), rows)


def run(db_url, segments, window=WINDOW):
    config = pipeline_config(db_url, segments)
    (monitor,) = config.resolved_monitors()
    app = application.open_app(config)
    try:
        found = app.pipeline.run(monitor, config.source_url(monitor.source), window)
        assert found.status == "ok", found.error
        return found, monitor
    finally:
        app.close()


def exposition(state: DriftState, monitor, outcome_=None) -> str:
    """What the daemon serves (Daemon.exposition): the drift families and the run counters."""
    registry = CollectorRegistry()
    collector = DriftCollector(state, [monitor], BUILD)
    registry.register(collector)  # first, as Daemon.exposition writes it
    runs = RunMetrics(registry)
    runs.prepare([monitor.name])
    if outcome_ is not None:
        runs.record(outcome_)
    text = b"".join([*collector.exposition_parts(), *runs.exposition_parts()]).decode()
    assert text == generate_latest(registry).decode()
    return text


def monitor_series(text: str, monitor: str) -> list[str]:
    """The monitor's series: sample lines labelled with it."""
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return [line for line in lines if re.search(rf'[{{,]monitor="{monitor}"[,}}]', line)]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the bound needs no second backend
def test_series_bound_with_200_segments(db_url, zipf_log):
    """README, "Segments": a monitor's series = 14 F + 32 unsegmented; segmented, at most
    14 (F + 1) + 32 + F (4 + 9 k); with 200 segments and the defaults, under 10x (here 4.5x at most)."""
    features, k, statuses = 2, 5, len(STATUSES)
    counts = {}
    for name, segments in (("unsegmented", None), ("defaults", {"by": ["region"]}),
                           ("200 segments", {"by": ["region"], "max": 200})):
        found, monitor = run(db_url, segments)
        state = DriftState()
        state.record(found, END)
        text = exposition(state, monitor, found)
        counts[name] = len(monitor_series(text, "m"))
        tested = {r.segment_key for r in found.results if r.segment and r.status != "insufficient_data"}
        if segments:
            assert len({r.segment_key for r in found.results if r.segment}) == (
                52 if segments.get("max") is None else 202)  # 50 or 200, __other__, __missing__
            assert len(tested) >= k  # the top k export every value: the bound is reached
            assert "region=r003" in text  # the drifted segment is among the most drifted
            families = {f.name for f in text_string_to_metric_families(text) if f.samples}
            assert SEGMENT_FAMILIES <= families
    run_series = 2 + 2 * 4 + (15 + 3) + 2  # runs, failures by reason, the duration histogram, missed (+ _created)
    unsegmented = features * (10 + statuses) + 2 + run_series
    bound = unsegmented + (10 + statuses) + features * (statuses + k * (5 + statuses))
    assert counts == {"unsegmented": unsegmented, "defaults": bound, "200 segments": bound}
    assert (unsegmented, bound) == (60, 172)
    assert counts["200 segments"] <= 10 * counts["unsegmented"]


def test_restored_from_the_store_equals_recorded_and_refreshes_only_what_changed(db_url, engine, zipf_log):
    from driftmon.store.repository import Repository

    found, monitor = run(db_url, {"by": ["region"], "max": 20, "top_k": 3})
    recorded = DriftState()
    recorded.record(found, END)

    def read(state):
        with engine.connect() as connection:
            rows = Repository().latest_results(connection)
            return rows + changed_segment_rows(connection, rows, ["m"], state.segment_marks())

    restored = DriftState()
    rows = read(restored)
    assert len([r for r in rows if r["segment_key"]]) == 22 * 2  # 20, __other__, __missing__; 2 columns
    restored.restore(rows, {"m": END})
    text = DriftCollector(restored, [monitor], BUILD).exposition()
    assert text == DriftCollector(recorded, [monitor], BUILD).exposition()
    assert text.count("\ndriftmon_segment_drift_status{") == 2 * 3 * 4  # 2 columns, top 3, 4 statuses
    assert [r for r in read(restored) if r["segment_key"]] == []  # unchanged: not read again
    recorded.restore(read(recorded), {})  # recorded from the run: read once, changes nothing
    assert [r for r in read(recorded) if r["segment_key"]] == []
    later = TimeRange(WINDOW.start - HOUR, WINDOW.end - HOUR)  # an older window: not the newest
    run(db_url, {"by": ["region"], "max": 20, "top_k": 3}, later)
    assert [r for r in read(restored) if r["segment_key"]] == []
    run(db_url, {"by": ["region"], "max": 20, "top_k": 3})  # the newest window stored again
    again = [r for r in read(restored) if r["segment_key"]]
    assert len(again) == 44 and {r["window_end"] for r in again} == {WINDOW.end}
