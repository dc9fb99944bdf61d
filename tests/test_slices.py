"""Incremental windows: slice counts summed equal a full count, and a cycle reads only what is new."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from driftmon.config import ComputeConfig
from driftmon.config_file import parse_config
from driftmon.counting.incremental import SliceCounter
from driftmon.counting.profiles import reference_profile
from driftmon.counting.slices import derived_length, grid_problem, is_sealed, slice_length, slices_of
from driftmon.pipeline import Pipeline
from driftmon.sources import open_source
from driftmon.store.database import EngineRegistry
from driftmon.store.models import Result, Run, SliceCounts
from driftmon.store.repository import Repository
from driftmon.windows import TimeRange
from tests.sourcedata import START, create_and_fill, events_table, random_events

DAY, HOUR, MINUTE = timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)
REFERENCE = TimeRange(START, START + 2 * DAY)
LIVE = START + 2 * DAY  # the monitored traffic starts here

FEATURES = [
    {"column": "amount", "bins": 10},  # quantile
    {"column": "score", "binning": "uniform", "bins": 7},  # uniform from the reference's span
    {"column": "country", "type": "categorical", "top_k": 3},  # "other" for the rest
]
OTHER_BINNINGS = [
    {"column": "amount", "edges": [50.0, 100.0, 150.0]},  # explicit
    {"column": "score", "binning": "uniform", "range": [0.2, 0.8], "bins": 4},
    {"column": "country", "type": "categorical", "top_k": 1},
]


def features():
    return FEATURES


def settings(url, feature_list=None, **monitor):
    raw = {
        "database": {"url": url},
        "defaults": {"schedule": {"every": "5m"}, "window": {"size": "1h"}, "min_samples": 1,
                     "reference": {"kind": "fixed", "start": REFERENCE.start.isoformat(),
                                   "end": REFERENCE.end.isoformat()}},
        "monitors": [{"name": "m", "features": feature_list or features(),
                      "source": {"kind": "events", "table": "inference_log", "timestamp_column": "ts",
                                 "where": {"model_version": "v3"}}, **monitor}],
    }
    return parse_config(raw, {})


def edge_rows(at: datetime) -> list[dict]:
    """NULL, NaN, ±inf, an unseen category, and rows on both sides of a slice edge."""
    def row(ts, amount, country="DE", score=0.5):
        return {"ts": ts, "model_version": "v3", "amount": amount, "country": country, "score": score}

    return [row(at, math.inf), row(at, -math.inf, "ZZ"), row(at, math.nan, None, None),
            row(at + 5 * MINUTE, 1e9, "BR", 7.0), row(at + 5 * MINUTE - timedelta(milliseconds=1), 100.0),
            row(at + 10 * MINUTE, None, "ZZ", 0.2)]


@pytest.fixture
def traffic(engine):
    rng = np.random.default_rng(3)
    rows = random_events(rng, 2000, START, 2 * DAY) + random_events(rng, 1500, LIVE, 6 * HOUR, shift=10)
    rows += random_events(rng, 200, LIVE, 6 * HOUR, version="v2") + edge_rows(LIVE + HOUR)
    create_and_fill(engine, events_table(), rows)
    return rows


def add_rows(engine, rows):
    with engine.begin() as connection:
        connection.execute(events_table().insert(), [
            {**r, "ts": r["ts"].astimezone(UTC).replace(tzinfo=None)} for r in rows])


def late_row(ts, amount=5000.0):
    return {"ts": ts, "model_version": "v3", "amount": amount, "country": "LATE", "score": 0.9}


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


_registries: list[EngineRegistry] = []


def pipeline_for(engine, clock):
    _registries.append(EngineRegistry())
    return Pipeline(engine, ComputeConfig(device="cpu"), _registries[-1], clock=clock)


@pytest.fixture(autouse=True)
def _dispose_source_engines():
    yield
    while _registries:
        _registries.pop().dispose()


def run(pipe, monitor, url, end, **kwargs):
    outcome = pipe.run(monitor, url, TimeRange(end - monitor.window.size, end), **kwargs)
    assert outcome.status == "ok", outcome.error
    return outcome


def stored_results(engine, end=None):
    table = Result.__table__
    statement = sa.select(table)
    if end is not None:
        statement = statement.where(table.c.window_end == end)
    with engine.connect() as connection:
        return {(r["column"], r["window_end"]): r for r in connection.execute(statement).mappings()}


def slice_rows(engine):
    with engine.connect() as connection:
        return list(connection.execute(sa.select(SliceCounts.__table__)).mappings())


# --- the grid ---------------------------------------------------------------------


@pytest.mark.parametrize("schedule, window, expected", [
    ({"every": "5m"}, "1h", timedelta(minutes=5)),
    ({"every": "1h"}, "24h", HOUR),
    ({"every": "10m"}, "45m", timedelta(minutes=5)),  # the largest duration dividing both
    ({"every": "1d"}, "7d", DAY),
    ({"cron": "*/5 * * * *"}, "1h", timedelta(minutes=5)),
    ({"cron": "0 9 * * 1-5"}, "1h", HOUR),
    ({"cron": "30 9 * * *"}, "1d", timedelta(minutes=30)),
])
def test_slice_length_divides_the_schedule_and_the_window(schedule, window, expected):
    monitor = settings("sqlite://", schedule=schedule, window={"size": window}).resolved_monitors()[0]
    assert derived_length(monitor) == expected == slice_length(monitor)
    assert grid_problem(monitor) is None


@pytest.mark.parametrize("extra, words", [
    ({"schedule": {"every": "1500ms"}, "window": {"size": "1h"}}, "not whole seconds"),
    ({"schedule": {"every": "7s"}, "window": {"size": "7d"}}, "per window"),
    ({"slice": "7m"}, "does not divide"),
    ({"slice": "off"}, "slices are off"),
])
def test_no_grid_fits_falls_back_to_a_full_count(extra, words):
    monitor = settings("sqlite://", **extra).resolved_monitors()[0]
    assert words in grid_problem(monitor)
    assert slice_length(monitor) is None


def test_slices_tile_a_window_and_seal_after_lateness():
    window = TimeRange(START, START + HOUR)
    pieces = slices_of(window, 5 * MINUTE)
    assert len(pieces) == 12 and pieces[0].start == window.start and pieces[-1].end == window.end
    assert all(a.end == b.start for a, b in zip(pieces, pieces[1:], strict=False))
    assert not is_sealed(pieces[-1], 5 * MINUTE, window.end + 4 * MINUTE)
    assert is_sealed(pieces[-1], 5 * MINUTE, window.end + 5 * MINUTE)


# --- sums of slices equal a full count -----------------------------------------------


@pytest.mark.parametrize("window", [
    TimeRange(LIVE, LIVE + HOUR),
    TimeRange(LIVE + 30 * MINUTE, LIVE + 90 * MINUTE),  # holds the edge rows
    TimeRange(LIVE + 7 * HOUR, LIVE + 8 * HOUR),  # empty
    TimeRange(LIVE - 30 * MINUTE, LIVE + 30 * MINUTE),  # half empty
])
@pytest.mark.parametrize("binnings", [FEATURES, OTHER_BINNINGS], ids=["quantile-span", "explicit-range"])
def test_window_from_slices_equals_a_full_count(engine, db_url, traffic, window, binnings):
    monitor = settings(db_url, binnings).resolved_monitors()[0]
    source = open_source(monitor, engine)
    profile = reference_profile(Repository(), engine, source, "m", REFERENCE)
    full = source.counts(profile, window)
    sliced = SliceCounter(Repository(), engine, Clock(window.end + DAY)).window(monitor, source, profile, window)
    assert sliced.counts.labels == full.labels
    assert np.array_equal(sliced.counts.current, full.current)  # integers: exactly equal
    assert np.array_equal(sliced.counts.mask, full.mask)
    assert np.array_equal(sliced.counts.current_missing, full.current_missing)
    assert sliced.counts.rows_scanned == full.rows_scanned
    assert len(sliced.fresh) == 12 and sum(c.rows for c in sliced.fresh.values()) == full.rows_scanned


def test_histogram_windows_from_slices_equal_a_full_count(engine, db_url):
    table = sa.Table("feature_histograms", sa.MetaData(), sa.Column("bucket_start", sa.DateTime),
                     sa.Column("feature", sa.String(50)), sa.Column("bin", sa.String(50)),
                     sa.Column("count", sa.Double), sa.Column("role", sa.String(20)))
    rng = np.random.default_rng(5)
    rows = []
    for minute in range(0, 24 * 60, 7):
        for feature, labels in (("age", ["0-18", "18-65", "65+"]), ("score", ["low", "high"])):
            for label in labels:
                if rng.random() < 0.8:
                    rows.append({"bucket_start": START + minute * MINUTE, "feature": feature, "bin": label,
                                 "count": float(rng.integers(0, 50)) + (0.5 if label == "65+" else 0.0),
                                 "role": "prediction" if feature == "score" else "feature"})
    rows.append({"bucket_start": START + 20 * HOUR, "feature": "age", "bin": "new", "count": 3.0, "role": None})
    create_and_fill(engine, table, [{**r, "bucket_start": r["bucket_start"].replace(tzinfo=None)} for r in rows])
    raw = {"database": {"url": db_url}, "defaults": {"schedule": {"every": "15m"}, "window": {"size": "2h"},
           "reference": {"kind": "fixed", "start": START.isoformat(), "end": (START + 12 * HOUR).isoformat()}},
           "monitors": [{"name": "h", "source": {"kind": "histograms", "table": "feature_histograms",
                                                  "timestamp_column": "bucket_start", "role_column": "role"}}]}
    monitor = parse_config(raw, {}).resolved_monitors()[0]
    source = open_source(monitor, engine)
    profile = reference_profile(Repository(), engine, source, "h", TimeRange(START, START + 12 * HOUR))
    for window in (TimeRange(START + 19 * HOUR, START + 21 * HOUR), TimeRange(START + 30 * HOUR, START + 32 * HOUR)):
        full = source.counts(profile, window)
        sliced = SliceCounter(Repository(), engine, Clock(window.end + DAY)).window(monitor, source, profile, window)
        assert sliced.counts.labels == full.labels and sliced.counts.roles == full.roles
        assert np.array_equal(sliced.counts.current, full.current)
        assert sliced.counts.errors == full.errors and sliced.counts.rows_scanned == full.rows_scanned


# --- the cycle -----------------------------------------------------------------------------


def test_a_steady_cycle_reads_only_new_and_unsealed_slices(engine, db_url, traffic):
    monitor = settings(db_url).resolved_monitors()[0]
    clock = Clock(LIVE + 2 * HOUR)
    pipe = pipeline_for(engine, clock)
    first = run(pipe, monitor, db_url, LIVE + 2 * HOUR)
    statements = pipe.source_for(monitor, db_url).statements
    clock.now = LIVE + 2 * HOUR + 5 * MINUTE
    second = run(pipe, monitor, db_url, LIVE + 2 * HOUR + 5 * MINUTE)
    # The newest slice, and the one before it, counted while it was still open to late rows.
    assert pipe.source_for(monitor, db_url).statements == statements + 1
    in_two_slices = sum(1 for r in traffic if r["model_version"] == "v3"
                        and LIVE + 2 * HOUR - 5 * MINUTE <= r["ts"] < LIVE + 2 * HOUR + 5 * MINUTE)
    assert second.rows_scanned == in_two_slices < first.rows_scanned
    with engine.connect() as connection:
        rows_scanned = connection.execute(sa.select(Run.__table__.c.rows_scanned).order_by(Run.__table__.c.id)).all()
    assert [r for (r,) in rows_scanned] == [first.rows_scanned, second.rows_scanned]
    # The results equal those of a full count of the same window.
    full = settings(db_url, slice="off").resolved_monitors()[0]
    other = pipeline_for(engine, clock)
    expected = other._compute(full, db_url, second.window, second.reference).results
    assert [(r.column, r.kl, r.psi, r.js, r.samples_current) for r in second.results] == [
        (r.column, r.kl, r.psi, r.js, r.samples_current) for r in expected]


def test_late_rows_within_lateness_recompute_the_stored_window(engine, db_url, traffic):
    monitor = settings(db_url, lateness="5m").resolved_monitors()[0]
    end = LIVE + 2 * HOUR
    clock = Clock(end + MINUTE)
    pipe = pipeline_for(engine, clock)
    run(pipe, monitor, db_url, end)
    before = stored_results(engine, end)
    # A row of the window's last slice arrives 3 minutes late; another one, of an older
    # (sealed) slice, arrives too late to count.
    add_rows(engine, [late_row(end - MINUTE), late_row(end - 30 * MINUTE)])
    clock.now = end + 5 * MINUTE + MINUTE
    outcome = run(pipe, monitor, db_url, end + 5 * MINUTE)
    assert [o.window.end for o in outcome.recomputed] == [end]
    assert [o.trigger for o in outcome.recomputed] == ["late_data"]
    after = stored_results(engine, end)
    assert after[("amount", end)]["samples_current"] == before[("amount", end)]["samples_current"] + 1
    assert after[("amount", end)]["kl"] != before[("amount", end)]["kl"]
    with engine.connect() as connection:
        triggers = connection.execute(sa.select(Run.__table__.c.trigger, Run.__table__.c.window_end)).all()
    assert ("late_data", end) in [(t, e) for t, e in triggers]
    # The same run's own window holds the late row too; the too-late one is in neither.
    current = stored_results(engine, end + 5 * MINUTE)
    in_window = _rows_in(traffic, end - 55 * MINUTE, end + 5 * MINUTE)
    assert current[("amount", end + 5 * MINUTE)]["samples_current"] == in_window + 1
    # A row later than lateness is not counted by the cycle, but a recount picks it up.
    add_rows(engine, [late_row(end - 2 * MINUTE)])
    clock.now = end + HOUR
    run(pipe, monitor, db_url, end + 10 * MINUTE)
    assert stored_results(engine, end)[("amount", end)]["samples_current"] == \
        after[("amount", end)]["samples_current"]
    run(pipe, monitor, db_url, end, trigger="recount", recount=True)
    assert stored_results(engine, end)[("amount", end)]["samples_current"] == \
        after[("amount", end)]["samples_current"] + 2  # the sealed slice's too-late row as well


def test_a_profile_change_recounts_and_drops_the_old_slices(engine, db_url, traffic):
    end = LIVE + 2 * HOUR
    clock = Clock(end + DAY)
    pipe = pipeline_for(engine, clock)
    run(pipe, settings(db_url).resolved_monitors()[0], db_url, end)
    keys = {r["profile_key"] for r in slice_rows(engine)}
    changed = settings(db_url, [{**features()[0], "bins": 4}, *features()[1:]]).resolved_monitors()[0]
    outcome = run(pipe, changed, db_url, end)
    new_keys = {r["profile_key"] for r in slice_rows(engine)}
    assert len(keys) == len(new_keys) == 1 and keys != new_keys
    assert outcome.rows_scanned == sum(1 for r in traffic if r["model_version"] == "v3"
                                       and end - HOUR <= r["ts"] < end)
    assert len(slice_rows(engine)) == 12


def test_retention_deletes_slices_no_window_needs(engine, db_url, traffic):
    monitor = settings(db_url, lateness="10m").resolved_monitors()[0]
    clock = Clock(LIVE + 6 * HOUR)
    pipe = pipeline_for(engine, clock)
    for k in range(24):  # two hours of 5-minute cycles
        run(pipe, monitor, db_url, LIVE + 2 * HOUR + k * 5 * MINUTE)
    last = LIVE + 2 * HOUR + 23 * 5 * MINUTE
    starts = sorted(r["slice_start"] for r in slice_rows(engine))
    # The last window's 12 slices, and those within lateness before it.
    assert starts[0] == last - HOUR - 10 * MINUTE and starts[-1] == last - 5 * MINUTE
    assert len(starts) == 14


def test_an_interrupted_backfill_ends_like_an_uninterrupted_one(engine, db_url, traffic, tmp_path):
    from driftmon.store import migrate
    from driftmon.store.database import create_db_engine

    monitor = settings(db_url).resolved_monitors()[0]
    ends = [LIVE + HOUR + k * 5 * MINUTE for k in range(30)]
    pipe = pipeline_for(engine, Clock(LIVE + DAY))
    for end in ends[:11]:
        run(pipe, monitor, db_url, end, trigger="backfill")
    resumed = pipeline_for(engine, Clock(LIVE + DAY))  # a new process
    for end in ends[11:]:
        run(resumed, monitor, db_url, end, trigger="backfill")
    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    other = create_db_engine(other_url)
    try:
        migrate.upgrade(other)
        whole = pipeline_for(other, Clock(LIVE + DAY))
        for end in ends:
            outcome = whole.run(monitor, db_url, TimeRange(end - HOUR, end), trigger="backfill")
            assert outcome.status == "ok"
        def keyed(rows):
            return sorted((r["slice_start"], r["profile_key"], r["rows"], r["sealed"], str(r["counts"])) for r in rows)

        assert keyed(slice_rows(engine)) == keyed(slice_rows(other))
        statistics = ("kl", "psi", "js", "samples_current", "missing_current", "status")
        mine, theirs = stored_results(engine), stored_results(other)
        assert mine.keys() == theirs.keys() and len(mine) == 30 * len(features())
        assert all([mine[k][s] for s in statistics] == [theirs[k][s] for s in statistics] for k in mine)
    finally:
        other.dispose()


def test_backfill_reads_each_row_once(engine, db_url, traffic):
    monitor = settings(db_url).resolved_monitors()[0]
    pipe = pipeline_for(engine, Clock(LIVE + DAY))
    ends = [LIVE + HOUR + k * 5 * MINUTE for k in range(48)]
    scanned = sum(run(pipe, monitor, db_url, end, trigger="backfill").rows_scanned for end in ends)
    span_rows = sum(1 for r in traffic if r["model_version"] == "v3" and ends[0] - HOUR <= r["ts"] < ends[-1])
    assert scanned == span_rows


@pytest.mark.postgresql
def test_two_racing_replicas_count_a_slice_once(engine, db_url, traffic, backend):
    if backend != "postgresql":
        pytest.skip("one daemon per SQLite file: replicas share PostgreSQL")
    monitor = settings(db_url).resolved_monitors()[0]
    end = LIVE + 3 * HOUR
    pipes = [pipeline_for(engine, Clock(end + MINUTE)) for _ in range(2)]
    barrier, outcomes = threading.Barrier(2), []

    def replica(pipe):
        barrier.wait(timeout=10)
        outcomes.append(pipe.run(monitor, db_url, TimeRange(end - HOUR, end)))

    threads = [threading.Thread(target=replica, args=(p,)) for p in pipes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [o.status for o in outcomes] == ["ok", "ok"]
    rows = slice_rows(engine)
    assert len(rows) == 12 and len({r["slice_start"] for r in rows}) == 12
    expected = sum(1 for r in traffic if r["model_version"] == "v3" and end - HOUR <= r["ts"] < end)
    assert sum(r["rows"] for r in rows) == expected
    assert len(stored_results(engine, end)) == len(features())
    assert {r["samples_current"] for r in stored_results(engine, end).values()} == {float(expected)}


def test_a_recount_elsewhere_reaches_a_running_daemons_windows(engine, db_url, traffic):
    monitor = settings(db_url).resolved_monitors()[0]
    end = LIVE + 2 * HOUR
    clock = Clock(end + DAY)  # every slice sealed when counted
    daemon = pipeline_for(engine, clock)
    run(daemon, monitor, db_url, end)
    add_rows(engine, [late_row(end - 50 * MINUTE)])  # too late for any cycle
    run(daemon, monitor, db_url, end + 5 * MINUTE)
    before = stored_results(engine, end)[("amount", end)]["samples_current"]
    moved = _rows_in(traffic, end, end + 5 * MINUTE) - _rows_in(traffic, end - HOUR, end - 55 * MINUTE)
    assert stored_results(engine, end + 5 * MINUTE)[("amount", end + 5 * MINUTE)]["samples_current"] == before + moved
    backfill = pipeline_for(engine, Clock(end + DAY + MINUTE))  # another process: backfill --recount
    run(backfill, monitor, db_url, end, trigger="recount", recount=True)
    clock.now = end + DAY + 2 * MINUTE
    outcome = run(daemon, monitor, db_url, end + 10 * MINUTE)
    assert outcome.rows_scanned == _rows_in(traffic, end + 5 * MINUTE, end + 10 * MINUTE)  # only the new slice
    expected = _rows_in(traffic, end - 50 * MINUTE, end + 10 * MINUTE) + 1  # the recounted late row
    assert stored_results(engine, end + 10 * MINUTE)[("amount", end + 10 * MINUTE)]["samples_current"] == expected


def _rows_in(traffic, start, end):
    return sum(1 for r in traffic if r["model_version"] == "v3" and start <= r["ts"] < end)


def test_a_schedule_change_never_reads_slices_of_another_length(engine, db_url, traffic):
    end = LIVE + 3 * HOUR
    clock = Clock(end + DAY)
    pipe = pipeline_for(engine, clock)
    run(pipe, settings(db_url).resolved_monitors()[0], db_url, end)  # 5-minute slices
    hourly = settings(db_url, schedule={"every": "1h"}).resolved_monitors()[0]
    outcome = run(pipe, hourly, db_url, end)  # 1-hour slices: counted afresh
    expected = _rows_in(traffic, end - HOUR, end)
    assert outcome.rows_scanned == expected
    assert {r.samples_current for r in outcome.results} == {float(expected)}
    assert {r["slice_end"] - r["slice_start"] for r in slice_rows(engine)} == {HOUR}  # the old ones dropped
