"""Segments end to end on real databases (README, "Segments"), against independent pandas/scipy counts."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from scipy.stats import entropy, false_discovery_control

from driftmon import app as application
from driftmon.commands.outputs import as_json
from driftmon.config_file import parse_config
from driftmon.errors import ConfigError
from driftmon.outcomes import CRITICAL, INSUFFICIENT, OK
from driftmon.pipeline import Pipeline
from driftmon.store.database import EngineRegistry
from driftmon.store.models import Result
from driftmon.windows import TimeRange
from tests.sourcedata import START, create_and_fill, events_table

DAY, HOUR, MINUTE = timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)
REFERENCE = TimeRange(START, START + 7 * DAY)
WINDOW = TimeRange(START + 7 * DAY, START + 7 * DAY + HOUR)
AT = WINDOW.end + MINUTE
EDGES = [-1.0, -0.5, 0.0, 0.5, 1.0]  # explicit bins: the independent count needs no quantiles
REGIONS = ["A", "B", "C", "D", "E", None]
SHARES = [0.5, 0.22, 0.18, 0.05, 0.04, 0.01]


def traffic(rng, n, start, span, drifted_region=None, regions=REGIONS, shares=SHARES) -> list[dict]:
    rows = []
    for _ in range(n):
        region = regions[rng.choice(len(regions), p=shares)]
        rows.append({
            "ts": start + timedelta(seconds=float(rng.uniform(0, span.total_seconds()))),
            "model_version": "v3",
            "amount": float(rng.normal(1.0 if region == drifted_region and region else 0.0, 1.0)),
            "country": str(rng.choice(["x", "y", "z"])),
            "score": float(rng.random()),
            "region": region,
            "app": str(rng.choice(["web", "ios"])),
        })
    return rows


def config_for(url, segments=None, **monitor):
    raw = {
        "database": {"url": url},
        "defaults": {"schedule": {"every": "1h"}, "min_samples": 50,
                     "reference": {"kind": "fixed", "start": REFERENCE.start.isoformat(),
                                   "end": REFERENCE.end.isoformat()}},
        "monitors": [{"name": "m", "features": [{"column": "amount", "edges": EDGES},
                                                {"column": "country", "type": "categorical"}],
                      "source": {"kind": "events", "table": "inference_log", "timestamp_column": "ts",
                                 "where": {"model_version": "v3"}},
                      **({"segments": segments} if segments is not None else {}), **monitor}],
    }
    return parse_config(raw, {})


@pytest.fixture
def log(engine):
    """A reference week, then a current hour in which only region D (5 % of traffic) shifts by +1 sd."""
    rng = np.random.default_rng(5)
    rows = traffic(rng, 12_000, REFERENCE.start, 7 * DAY) + traffic(rng, 12_000, WINDOW.start, HOUR, "D")
    create_and_fill(engine, events_table(region=sa.String(5), app=sa.String(5)), rows)
    return pd.DataFrame(rows)


@pytest.fixture
def run_with(db_url):
    opened = []

    def run(config, at=AT):
        opened.append(application.open_app(config))
        (outcome,) = application.run_latest(opened[-1], config.resolved_monitors(), at)
        assert outcome.status == "ok", outcome.error
        return outcome, opened[-1]

    yield run
    for app in opened:
        app.close()


def by_key(outcome):
    return {(r.segment_key, r.column): r for r in outcome.results}


def expected_counts(frame: pd.DataFrame, span: TimeRange, rows: pd.Series) -> tuple[list[float], list[float]]:
    """Independent counts of ``amount`` (explicit edges) and ``country`` for the selected rows of a span."""
    ts = pd.to_datetime(frame["ts"], utc=True)
    part = frame[rows & (ts >= span.start) & (ts < span.end)]
    amount = np.histogram(part["amount"], bins=[-np.inf, *EDGES, np.inf])[0].astype(float).tolist()
    country = [float((part["country"] == c).sum()) for c in ("x", "y", "z")]
    return amount, country


def test_a_drift_in_a_5_percent_segment_is_critical_there_while_the_whole_stays_ok(log, db_url, run_with):
    outcome, app = run_with(config_for(db_url, {"by": ["region"]}))
    found = by_key(outcome)
    assert found[("", "amount")].status == OK
    assert found[("region=D", "amount")].status == CRITICAL
    assert found[("region=D", "amount")].segment == {"region": "D"}
    assert all(r.status == OK for (key, column), r in found.items() if key not in ("region=D",)
               and column != "segment" and r.samples_current >= 50), "only region D drifts"
    assert app.pipeline.engine_calls == 1  # every (segment, column) row in ONE engine call
    # The pooled KL is tiny next to the segment's: what the unsegmented monitor sees.
    assert found[("", "amount")].kl < found[("region=D", "amount")].kl / 20


def test_segment_counts_and_statistics_equal_an_independent_groupby(log, db_url, run_with):
    outcome, _ = run_with(config_for(db_url, {"by": ["region"], "max": 3}))
    found = by_key(outcome)
    region = log["region"]
    members = ["A", "B", "C"]  # the 3 largest in the reference; D and E pool into __other__
    selections = {f"region={m}": region == m for m in members}
    selections["region=__other__"] = region.notna() & ~region.isin(members)
    selections["region=__missing__"] = region.isna()
    for key, rows in selections.items():
        ref_amount, ref_country = expected_counts(log, REFERENCE, rows)
        cur_amount, cur_country = expected_counts(log, WINDOW, rows)
        amount, country = found[(key, "amount")], found[(key, "country")]
        assert list(amount.reference_counts[:6]) == ref_amount and list(amount.current_counts[:6]) == cur_amount
        order = [country.labels.index(c) for c in ("x", "y", "z")]  # categories by whole-population frequency
        assert [country.reference_counts[i] for i in order] == ref_country
        assert [country.current_counts[i] for i in order] == cur_country
        if amount.kl is not None:
            p, q = (np.asarray(ref_amount) + .5) / (sum(ref_amount) + 3), (np.asarray(cur_amount) + .5) / (
                sum(cur_amount) + 3)
            assert amount.kl == pytest.approx(entropy(p, q), rel=1e-9, abs=1e-12)
    # The whole population is the sum of its segments, and __other__ pools D and E exactly.
    assert sum(found[(k, "amount")].current_counts[0] for k in selections) == found[("", "amount")].current_counts[0]
    assert found[("region=__other__", "amount")].samples_current == float(
        (region.isin(["D", "E"]) & (pd.to_datetime(log["ts"], utc=True) >= WINDOW.start)
         & (pd.to_datetime(log["ts"], utc=True) < WINDOW.end)).sum())
    # The mix: reference and current rows per segment, compared like a categorical column.
    mix = found[("", "segment")]
    assert mix.role == "segment" and mix.labels[:3] == ("region=A", "region=B", "region=C")
    assert mix.labels[3:] == ("__other__", "__missing__")
    assert mix.current_counts == tuple(found[(k, "amount")].samples_current for k in selections)


def test_the_whole_population_is_exactly_the_unsegmented_monitor(log, db_url, run_with, engine):
    plain, _ = run_with(config_for(db_url))
    with engine.begin() as connection:
        connection.execute(sa.delete(Result.__table__))
    segmented, _ = run_with(config_for(db_url, {"by": ["region"]}))
    whole = [r for r in segmented.results if r.segment is None and r.column != "segment"]
    fields = ("column", "samples_current", "samples_reference", "kl", "psi", "js", "status", "labels",
              "reference_counts", "current_counts")
    assert [[getattr(r, f) for f in fields] for r in whole] == [[getattr(r, f) for f in fields]
                                                               for r in plain.results]
    # The G-test's p-value is summed in a batch of other rows: equal to rounding (1e-12 here).
    for mine, theirs in zip(whole, plain.results, strict=True):
        assert (mine.p_value, mine.q_value) == pytest.approx((theirs.p_value, theirs.q_value), rel=1e-9)


def test_benjamini_hochberg_runs_across_every_tested_segment_and_column(log, db_url, run_with):
    outcome, _ = run_with(config_for(db_url, {"by": ["region"]}))
    family = [r for r in outcome.results if r.segment is not None or r.column == "segment"]
    tested = [r for r in family if r.p_value is not None]
    assert len(tested) >= 10 and any(r.status == INSUFFICIENT for r in family)  # region=__missing__: ~10 rows
    expected = false_discovery_control([r.p_value for r in tested], method="bh")
    assert [r.q_value for r in tested] == pytest.approx(expected.tolist(), rel=1e-12)
    # The whole population keeps its own family: its q-values are those of its columns alone.
    whole = [r for r in outcome.results if r.segment is None and r.column != "segment"]
    assert [r.q_value for r in whole] == pytest.approx(
        false_discovery_control([r.p_value for r in whole], method="bh").tolist(), rel=1e-12)


def test_a_segment_gone_from_the_current_window_is_reported_with_zero(engine, db_url, run_with):
    rng = np.random.default_rng(2)
    rows = traffic(rng, 6000, REFERENCE.start, 7 * DAY)
    rows += traffic(rng, 3000, WINDOW.start, HOUR, regions=["A", "B", "C"], shares=[.5, .3, .2])
    create_and_fill(engine, events_table(region=sa.String(5), app=sa.String(5)), rows)
    outcome, _ = run_with(config_for(db_url, {"by": ["region"]}))
    found = by_key(outcome)
    for key in ("region=D", "region=E", "region=__missing__"):
        gone = found[(key, "amount")]
        assert gone.samples_current == 0 and gone.samples_reference > 0 and gone.status == INSUFFICIENT
        assert gone.kl is None and sum(gone.current_counts) == 0


def test_a_value_only_in_the_current_window_lands_in_other(engine, db_url, run_with):
    rng = np.random.default_rng(3)
    rows = traffic(rng, 6000, REFERENCE.start, 7 * DAY)
    rows += traffic(rng, 3000, WINDOW.start, HOUR, regions=["A", "NEW"], shares=[.5, .5])
    create_and_fill(engine, events_table(region=sa.String(5), app=sa.String(5)), rows)
    outcome, _ = run_with(config_for(db_url, {"by": ["region"]}))
    found = by_key(outcome)
    new_rows = sum(1 for r in rows if r["region"] == "NEW")
    assert found[("region=__other__", "amount")].samples_current == new_rows
    assert ("region=NEW", "amount") not in found


def test_several_by_columns_segment_by_their_combinations(log, db_url, run_with):
    outcome, _ = run_with(config_for(db_url, {"by": ["region", "app"], "max": 4}))
    found = by_key(outcome)
    reference = log[(pd.to_datetime(log["ts"], utc=True) < REFERENCE.end) & log["region"].notna()]
    sizes = reference.groupby(["region", "app"]).size()
    top = sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))[:4]
    keys = [f"region={r},app={a}" for (r, a), _ in top]
    assert [k for k, c in found if c == "amount" and k not in ("", "region=__other__,app=__other__",
                                                               "region=__missing__,app=__missing__")] == keys
    for ((region, app), size), key in zip(top, keys, strict=True):
        assert found[(key, "amount")].samples_reference == size
        assert found[(key, "amount")].segment == {"region": region, "app": app}


def test_run_once_json_names_each_segment(log, db_url, run_with):
    outcome, _ = run_with(config_for(db_url, {"by": ["region"]}))
    records = json.loads(as_json([outcome]))
    assert [r["segment"] for r in records if r["column"] == "amount"][:2] == [None, {"region": "A"}]
    assert sum(r["segment"] is None for r in records) == 3  # amount, country and the mix


def test_results_are_stored_per_segment_and_a_rerun_replaces_them(log, db_url, run_with, engine):
    config = config_for(db_url, {"by": ["region"]})
    first, _ = run_with(config)
    run_with(config)
    with engine.connect() as connection:
        stored = pd.DataFrame(connection.execute(sa.select(Result.__table__)).mappings().all())
    assert len(stored) == len(first.results) == 3 + 2 * 7  # whole (2 + mix) and 7 segments × 2 columns
    assert stored.groupby(["column", "segment_key"]).size().max() == 1
    d = stored[(stored["segment_key"] == "region=D") & (stored["column"] == "amount")].iloc[0]
    assert d["segment"] == {"region": "D"} and d["status"] == CRITICAL
    assert stored[stored["segment_key"] == ""]["segment"].isna().all()


def test_one_source_statement_per_steady_cycle_whatever_the_segments(engine, db_url):
    rng = np.random.default_rng(4)
    live = START + 7 * DAY
    rows = traffic(rng, 4000, REFERENCE.start, 7 * DAY) + traffic(rng, 4000, live, 3 * HOUR)
    create_and_fill(engine, events_table(region=sa.String(5), app=sa.String(5)), rows)
    config = config_for(db_url, {"by": ["region", "app"]}, schedule={"every": "5m"}, window={"size": "1h"},
                        lateness="0s")
    monitor = config.resolved_monitors()[0]
    application.open_app(config).close()  # migrates
    engines = EngineRegistry()
    pipe = Pipeline(engine, config.compute, engines, clock=lambda: live + 3 * HOUR)
    try:
        end = live + HOUR
        assert pipe.run(monitor, db_url, TimeRange(end - HOUR, end)).status == "ok"
        source = pipe.source_for(monitor, db_url)
        for step in range(1, 4):
            before = source.statements
            window = TimeRange(end - HOUR + step * 5 * MINUTE, end + step * 5 * MINUTE)
            sliced = pipe.run(monitor, db_url, window)
            assert source.statements == before + 1, "one statement, grouped by slice and segment"
            full = Pipeline(engine, config.compute, engines, clock=lambda: live + 3 * HOUR).run(
                monitor.model_copy(update={"slice": "off"}), db_url, window)
            assert [(r.segment_key, r.column, r.current_counts, r.kl) for r in sliced.results] == [
                (r.segment_key, r.column, r.current_counts, r.kl) for r in full.results]
        assert len(sliced.results) == 3 + 2 * 12  # whole (2 + mix); 5 regions × 2 apps, __other__, __missing__
    finally:
        engines.dispose()


@pytest.mark.parametrize(("segments", "problem"), [
    ({"by": ["country"]}, "a column cannot segment itself"),
    ({"by": ["region", "region"]}, "listed twice"),
    ({"by": []}, "at least 1"),
    ({"by": ["region"], "max": 0}, "greater than or equal to 1"),
])
def test_segments_that_cannot_apply_are_config_errors(segments, problem):
    with pytest.raises(ConfigError, match=problem):
        config_for("sqlite:///x.db", segments)


def test_segments_need_an_events_source():
    raw = {"monitors": [{"name": "h", "segments": {"by": ["region"]},
                         "source": {"kind": "histograms", "table": "h", "timestamp_column": "ts"}}]}
    with pytest.raises(ConfigError, match="segments need an events source"):
        parse_config(raw, {})
