"""Seasonal references (issue #24): a daily cycle is not drift, a shift still is, exclusions stay out.

The simulation is the issue's: hourly windows of data with a 0.3 sd daily cycle
and no drift, tested with the G-test at p < 0.01, through ``backfill``. Against a
rolling 7-day reference most windows are flagged; against the same hour of the
last days about 1 % are. The same backfills carry an injected +0.5 sd shift and an
hour with 40 % of its rows missing, so that power and the volume check are shown
on the same data.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from driftmon import app as application
from driftmon.config import SeasonalReference
from driftmon.config_file import parse_config
from driftmon.errors import ConfigError
from driftmon.windows import TimeRange, excluded_spans, reference_range, seasonal_lags
from tests.seasonaldata import (
    DAY,
    FEATURES,
    HOUR,
    START,
    add_app_segment,
    run_window,
    seasonal_config,
    seasonal_rows,
    write_log,
)

LAGS = 4
HISTORY = 7  # days before the backfilled ones: the rolling reference's full week
EVALUATED = (START + HISTORY * DAY, START + (HISTORY + 4) * DAY)  # window ends backfilled: 4 days, 96 windows
SHIFT_AT = (HISTORY + 3) * 24 + 12  # hour index: x1 moves +0.5 sd from the last day's noon on
THIN_AT = (HISTORY + 3) * 24 + 3  # hour index: 40 % of the rows of 03:00 on the last day are missing
QUIET = range(16, 20)  # the daily low of the rate (hours UTC): 44-50 % below the day's mean


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory):
    """Both references over the same simulated log: {kind: outcomes}."""
    folder = tmp_path_factory.mktemp("seasonal")
    source = f"sqlite:///{folder / 'log.db'}"
    rng = np.random.default_rng(24)
    write_log(source, seasonal_rows(rng, START, (HISTORY + 4) * 24, volume_cycle=0.5,
                                    shift={SHIFT_AT: 0.5}, thin={THIN_AT: 0.6}))
    found = {}
    for kind, reference in (("seasonal", {"kind": "seasonal", "period": "1d", "lags": LAGS}),
                            ("rolling", {"kind": "rolling", "size": "7d"})):
        config = parse_config(seasonal_config(f"sqlite:///{folder / kind}.db", source, reference), {})
        app = application.open_app(config)
        try:
            done = application.backfill_with_progress(app, config.resolved_monitors(), *EVALUATED)
        finally:
            app.close()
        assert done.outcomes and all(o.status == "ok" for o in done.outcomes), kind
        found[kind] = done.outcomes
    return found


def _hour(outcome) -> int:
    return int((outcome.window.start - START) / HOUR)


def _false_alarms(outcomes) -> tuple[int, int]:
    """(flagged, tested) over the columns with no drift: x1 after its shift is a true one."""
    tested = [r for o in outcomes for r in o.results
              if r.p_value is not None and not (r.column == "x1" and _hour(o) >= SHIFT_AT)]
    return sum(r.p_value < 0.01 for r in tested), len(tested)


def test_a_daily_cycle_is_no_drift_against_the_same_hour_of_past_days(backfilled):
    flagged, tested = _false_alarms(backfilled["seasonal"])
    rolling_flagged, rolling_tested = _false_alarms(backfilled["rolling"])
    # Measured (seed 24, 96 hourly windows x 8 columns): seasonal 3 of 756 (0.4 %), rolling 7d 296 of 756 (39 %).
    print(f"\nfalse alarms at p < 0.01: seasonal {flagged}/{tested} ({flagged / tested:.1%}), "
          f"rolling 7d {rolling_flagged}/{rolling_tested} ({rolling_flagged / rolling_tested:.1%})")
    assert tested > 700 and rolling_tested == tested
    assert flagged / tested <= 2 * 0.01
    assert rolling_flagged / rolling_tested > 0.2


def test_a_half_sd_shift_is_still_flagged_within_two_windows(backfilled):
    after = [o for o in backfilled["seasonal"] if _hour(o) in (SHIFT_AT, SHIFT_AT + 1)]
    x1 = [next(r for r in o.results if r.column == "x1") for o in after]
    assert len(x1) == 2
    assert any(r.p_value < 0.01 and r.status != "ok" for r in x1), [(r.p_value, r.status, r.kl) for r in x1]


def test_volume_is_seasonal_too(backfilled):
    """A quiet night is no volume alarm against the same hour of past nights; it is against a pooled week.
    An hour with 40 % fewer rows is critical either way."""
    seasonal = {_hour(o): o.volume for o in backfilled["seasonal"]}
    rolling = {_hour(o): o.volume for o in backfilled["rolling"]}
    assert seasonal[THIN_AT].status == "critical" and seasonal[THIN_AT].change == pytest.approx(-0.4, abs=0.1)
    others = [v.status for hour, v in seasonal.items() if hour != THIN_AT]
    assert others.count("critical") == 0 and others.count("warning") <= 1, others
    quiet = [v for hour, v in rolling.items() if (hour % 24) in QUIET]
    assert len(quiet) == 16
    assert all(v.status == "critical" and v.change < -0.3 for v in quiet), [(v.status, v.change) for v in quiet]
    assert all(v.status == "ok" for hour, v in seasonal.items() if (hour % 24) in QUIET)


# --- what a seasonal reference is made of ----------------------------------------------------------


def test_the_lags_are_the_same_phase_of_past_periods():
    reference = SeasonalReference(kind="seasonal", period=timedelta(days=7), lags=3)
    window = TimeRange(datetime(2024, 3, 25, 3, tzinfo=UTC), datetime(2024, 3, 25, 4, tzinfo=UTC))
    assert seasonal_lags(reference, window) == [
        TimeRange(window.start - k * timedelta(days=7), window.end - k * timedelta(days=7)) for k in (3, 2, 1)]
    bins = reference_range(reference, window)  # cut once per refresh (the period) from lags x period
    assert bins.end <= window.start and bins.end - bins.start == timedelta(days=21)
    assert reference_range(reference, TimeRange(window.start + HOUR, window.end + HOUR)) == bins


def test_exclusions_merge_ranges_and_cron_stretches():
    reference = SeasonalReference(kind="seasonal", period=timedelta(days=1), exclude=[
        {"cron": "0 0 * * 6", "duration": "2d"},  # weekends
        {"start": "2024-03-08T22:00:00Z", "end": "2024-03-09T02:00:00Z"},  # overlaps Saturday
        {"start": "2024-03-13T10:00:00Z", "end": "2024-03-13T11:00:00Z"},
    ])
    span = TimeRange(datetime(2024, 3, 4, tzinfo=UTC), datetime(2024, 3, 14, tzinfo=UTC))
    assert excluded_spans(reference, span) == [
        TimeRange(datetime(2024, 3, 8, 22, tzinfo=UTC), datetime(2024, 3, 11, tzinfo=UTC)),
        TimeRange(datetime(2024, 3, 13, 10, tzinfo=UTC), datetime(2024, 3, 13, 11, tzinfo=UTC)),
    ]
    # A weekend that began before the span still covers its Sunday.
    sunday = TimeRange(datetime(2024, 3, 10, 5, tzinfo=UTC), datetime(2024, 3, 10, 6, tzinfo=UTC))
    assert excluded_spans(reference, sunday) == [sunday]


@pytest.mark.parametrize(("reference", "window", "source", "message"), [
    ({"kind": "seasonal", "period": "30m"}, None, "events", "longer than the seasonal period"),
    ({"kind": "seasonal", "lags": 0}, None, "events", "lags"),
    ({"kind": "seasonal", "exclude": [{"cron": "0 0 * * 6"}]}, None, "events", "duration"),
    ({"kind": "seasonal", "exclude": [{"start": "2024-03-02", "end": "2024-03-01"}]}, None, "events", "before"),
    ({"kind": "seasonal"}, None, "histograms", "events source"),
])
def test_bad_seasonal_settings_are_refused_naming_the_key(reference, window, source, message):
    raw = seasonal_config("sqlite://", "sqlite://", reference)
    raw["monitors"][0]["source"]["kind"] = source
    if source == "histograms":
        raw["monitors"][0].pop("features")
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, {})


def _window_results(db_url, source, reference, window_end):
    config = parse_config(seasonal_config(db_url, source, reference), {})
    return run_window(config, TimeRange(window_end - HOUR, window_end))


def test_an_excluded_range_never_contributes(db_url, tmp_path):
    """Garbage rows (+5 sd, ten times the traffic) in an excluded day change nothing stored: not the
    bins, not the reference counts, not the expected volume. Without the exclusion they would."""
    rng = np.random.default_rng(7)
    clean = seasonal_rows(rng, START, 4 * 24)
    garbage = seasonal_rows(rng, START + DAY, 24, rate=3000.0, cycle=0.0, shift={0: 5.0})
    write_log(f"sqlite:///{tmp_path / 'clean.db'}", clean)
    dirty = f"sqlite:///{tmp_path / 'dirty.db'}"
    write_log(dirty, clean)
    write_log(dirty, garbage)
    excluded = {"kind": "seasonal", "period": "1d", "lags": 3, "refresh": "4d",
                "exclude": [{"start": (START + DAY).isoformat(), "end": (START + 2 * DAY).isoformat()}]}
    end = START + 3 * DAY + 7 * HOUR
    ours = _window_results(db_url, f"sqlite:///{tmp_path / 'clean.db'}", excluded, end)
    theirs = _window_results(f"sqlite:///{tmp_path / 'other.db'}", dirty, excluded, end)
    assert ours.status == theirs.status == "ok"
    for mine, other in zip(ours.results, theirs.results, strict=True):
        assert (mine.labels, mine.reference_counts, mine.current_counts) == \
            (other.labels, other.reference_counts, other.current_counts)
    assert ours.volume == theirs.volume and ours.volume.reference_rows > 0
    # Two lags of three kept: the expected rows are per kept hour.
    assert ours.volume.share == pytest.approx(0.5)
    unexcluded = {**excluded, "exclude": []}
    shown = _window_results(f"sqlite:///{tmp_path / 'third.db'}", dirty, unexcluded, end)
    assert [r.reference_counts for r in shown.results] != [r.reference_counts for r in theirs.results]


def test_the_lags_sum_to_a_direct_count_of_the_lag_windows(tmp_path):
    """Summed from slices, bin for bin: the reference equals the lag windows counted in the same bins."""
    source = f"sqlite:///{tmp_path / 'log.db'}"
    write_log(source, seasonal_rows(np.random.default_rng(9), START, 4 * 24))
    reference = {"kind": "seasonal", "period": "1d", "lags": 3}
    config = parse_config(seasonal_config(f"sqlite:///{tmp_path / 'r.db'}", source, reference), {})
    app = application.open_app(config)
    try:
        monitor = config.resolved_monitors()[0]
        window = TimeRange(START + 3 * DAY + 5 * HOUR, START + 3 * DAY + 6 * HOUR)
        outcome = application.run_window(app, monitor, window, trigger="run_once")
        pipe = app.pipeline
        src = pipe.source_for(monitor, source)
        base = pipe._profiles[monitor.name]
        direct = [src.counts(base, lag) for lag in seasonal_lags(monitor.reference, window)]
    finally:
        app.close()
    for f, result in enumerate(outcome.results):
        assert list(result.reference_counts) == pytest.approx(
            sum(np.asarray(counts.current[f, :len(result.labels)]) for counts in direct).tolist(), abs=0)
    assert outcome.volume.reference_rows == sum(float(c.current_totals[0]) for c in direct)
    assert [r.column for r in outcome.results] == list(FEATURES)


def test_exclusions_shape_the_profiles_fingerprint_and_the_results_one(tmp_path):
    """A profile cut without an excluded stretch is not the profile of another exclusion list."""
    from driftmon.fingerprints import results_fingerprint
    from driftmon.sources import open_source
    from driftmon.store.database import create_db_engine

    def monitor(exclude):
        reference = {"kind": "seasonal", "period": "1d", "exclude": exclude}
        return parse_config(seasonal_config("sqlite://", "sqlite://", reference), {}).resolved_monitors()[0]

    engine = create_db_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        plain, weekends = monitor([]), monitor([{"cron": "0 0 * * 6", "duration": "2d"}])
        assert open_source(plain, engine).expected_hash("x1") != open_source(weekends, engine).expected_hash("x1")
        assert results_fingerprint(plain, "sqlite://") != results_fingerprint(weekends, "sqlite://")
    finally:
        engine.dispose()


def test_every_lag_excluded_leaves_nothing_to_compare_with(tmp_path):
    source = f"sqlite:///{tmp_path / 'log.db'}"
    write_log(source, seasonal_rows(np.random.default_rng(3), START, 3 * 24))
    everything = {"kind": "seasonal", "period": "1d", "lags": 2, "exclude": [{"cron": "0 * * * *", "duration": "1h"}]}
    outcome = _window_results(f"sqlite:///{tmp_path / 'r.db'}", source, everything, START + 2 * DAY + 5 * HOUR)
    assert outcome.status == "ok"
    assert {r.status for r in outcome.results} == {"insufficient_data"}
    assert all(r.samples_reference == 0 for r in outcome.results)
    assert outcome.volume.status == "insufficient_data" and outcome.volume.expected is None


def test_segments_are_each_compared_with_their_own_lags(tmp_path):
    """A segmented seasonal monitor: each segment's reference is its own rows in the lags."""
    source = f"sqlite:///{tmp_path / 'log.db'}"
    write_log(source, seasonal_rows(np.random.default_rng(4), START, 4 * 24))
    add_app_segment(source)
    reference = {"kind": "seasonal", "period": "1d", "lags": 3}
    raw = seasonal_config(f"sqlite:///{tmp_path / 'r.db'}", source, reference, segments={"by": ["app"]})
    config = parse_config(raw, {})
    app = application.open_app(config)
    try:
        monitor = config.resolved_monitors()[0]
        window = TimeRange(START + 3 * DAY + 5 * HOUR, START + 3 * DAY + 6 * HOUR)
        outcome = application.run_window(app, monitor, window, trigger="run_once")
        src = app.pipeline.source_for(monitor, source)
        base = app.pipeline._profiles[monitor.name]
        direct = [src.counts(base, lag) for lag in seasonal_lags(monitor.reference, window)]
    finally:
        app.close()
    assert outcome.status == "ok", outcome.error
    members = [s.segment_profile for s in direct][0]
    for result in (r for r in outcome.results if r.segment and r.column == "x2"):
        index = members.keys.index(result.segment_key)
        f = direct[0].segments[index].columns.index("x2")
        summed = sum(np.asarray(d.segments[index].current[f, :len(result.labels)]) for d in direct)
        assert list(result.reference_counts) == summed.tolist(), result.segment_key
    assert {r.segment_key for r in outcome.results if r.segment} >= {"app=web", "app=ios"}


def test_a_steady_cycle_reads_only_its_new_slices(tmp_path):
    """The first window after the bins are cut counts its lags' whole span in one statement and
    stores every slice of it; the next windows find their lags stored and read the source for
    their own new slice alone: one statement, the window's rows, however many lags."""
    source = f"sqlite:///{tmp_path / 'log.db'}"
    write_log(source, seasonal_rows(np.random.default_rng(6), START, 5 * 24))
    reference = {"kind": "seasonal", "period": "1d", "lags": 3}
    config = parse_config(seasonal_config(f"sqlite:///{tmp_path / 'r.db'}", source, reference), {})
    app = application.open_app(config)
    try:
        monitor = config.resolved_monitors()[0]
        window = TimeRange(START + 4 * DAY + 5 * HOUR, START + 4 * DAY + 6 * HOUR)
        first = application.run_window(app, monitor, window, trigger="schedule")
        src = app.pipeline.source_for(monitor, source)
        steady = []
        for hour in range(1, 4):
            before = src.statements
            steady.append(application.run_window(app, monitor, TimeRange(window.start + hour * HOUR,
                                                                         window.end + hour * HOUR), trigger="schedule"))
            assert src.statements - before == 1, hour
    finally:
        app.close()
    assert first.status == "ok" and all(o.status == "ok" for o in steady)
    assert all(o.rows_scanned == o.results[0].samples_current > 0 for o in steady)
    assert all(o.results[0].samples_reference > 0 for o in steady)


def test_lags_counted_while_the_table_was_empty_are_counted_again_once_history_is_loaded(tmp_path):
    """Explicit edges keep the same bins whatever the rows, so slices sealed empty would be reused
    for good: too few rows in the lags makes them be counted again (stored state is not trusted blindly)."""
    source = f"sqlite:///{tmp_path / 'log.db'}"
    write_log(source, seasonal_rows(np.random.default_rng(8), START + 3 * DAY, 2 * 24))  # only the last days
    reference = {"kind": "seasonal", "period": "1d", "lags": 3}
    raw = seasonal_config(f"sqlite:///{tmp_path / 'r.db'}", source, reference)
    raw["monitors"][0]["features"] = [{"column": name, "binning": "explicit", "edges": [-1, 0, 1]}
                                      for name in FEATURES]
    config = parse_config(raw, {})
    window = TimeRange(START + 3 * DAY + 5 * HOUR, START + 3 * DAY + 6 * HOUR)
    empty = run_window(config, window)
    assert {r.status for r in empty.results} == {"insufficient_data"}
    write_log(source, seasonal_rows(np.random.default_rng(9), START, 3 * 24))  # the history, loaded late
    loaded = run_window(config, TimeRange(window.start + HOUR, window.end + HOUR))
    assert all(r.samples_reference > 250 for r in loaded.results), [r.samples_reference for r in loaded.results]
    again = run_window(config, TimeRange(window.start + 2 * HOUR, window.end + 2 * HOUR))
    assert all(r.samples_reference > 250 for r in again.results)
