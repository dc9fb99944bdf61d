"""Rolling references summed from stored slices (issue #25): a move reads nothing from the source,
and the counts equal a full count of the range in the same bins."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from driftmon import app as application
from driftmon.config import RollingReference
from driftmon.config_file import parse_config
from driftmon.windows import TimeRange, bins_range, rebin_phase, reference_range
from tests.seasonaldata import DAY, HOUR, START, add_app_segment, seasonal_config, seasonal_rows, write_log

DAILY_BINS = {"kind": "rolling", "size": "2d", "refresh": "1d", "rebin": "1d"}
# A monitor whose bins are re-cut at midday (its phase), so a midnight move keeps them.
MIDDAY = next(name for name in (f"m{i}" for i in range(100))
              if 6 * HOUR <= rebin_phase(RollingReference(rebin=DAY), name) <= 18 * HOUR)


def _app(tmp_path, reference, rows_days=5, **monitor):
    source = f"sqlite:///{tmp_path / 'log.db'}"
    write_log(source, seasonal_rows(np.random.default_rng(12), START, rows_days * 24, rate=100.0))
    raw = seasonal_config(f"sqlite:///{tmp_path / 'r.db'}", source, reference, **{"name": MIDDAY, **monitor})
    config = parse_config(raw, {})
    return application.open_app(config), config.resolved_monitors()[0], source


def _hour(start, hours=1):
    return TimeRange(start, start + hours * HOUR)


def test_a_moved_reference_reads_nothing_and_equals_a_full_count_in_the_same_bins(tmp_path):
    app, monitor, source = _app(tmp_path, DAILY_BINS)
    try:
        before_midnight = _hour(START + 3 * DAY - HOUR)
        after_midnight = _hour(START + 3 * DAY)
        assert bins_range(monitor.reference, before_midnight, monitor.name) == \
            bins_range(monitor.reference, after_midnight, monitor.name)  # the same bins: no re-cut between
        first = application.run_window(app, monitor, before_midnight, trigger="schedule")
        src = app.pipeline.source_for(monitor, source)
        before = src.statements
        moved = application.run_window(app, monitor, after_midnight, trigger="schedule")
        assert src.statements - before == 1  # its own slice: the new range came from stored slices
        assert moved.reference != first.reference == reference_range(monitor.reference, before_midnight)
        bins = app.pipeline._profiles[monitor.name]
        full = src.counts(bins, moved.reference)  # the whole range counted from the source, same bins
    finally:
        app.close()
    for f, result in enumerate(moved.results):
        assert list(result.reference_counts) == full.current[f, :len(result.labels)].tolist(), result.column
        assert result.samples_reference == full.current_totals[f]
    assert moved.volume.reference_rows == float(full.current_totals.max())


def test_a_re_cut_counts_the_range_in_one_statement_and_still_equals_a_full_count(tmp_path):
    app, monitor, source = _app(tmp_path, {"kind": "rolling", "size": "2d", "refresh": "1h", "rebin": "1d"})
    try:
        window = _hour(START + 3 * DAY + 5 * HOUR)
        application.run_window(app, monitor, window, trigger="schedule")
        recut = next(TimeRange(window.start + k * HOUR, window.end + k * HOUR) for k in range(1, 25)
                     if bins_range(monitor.reference, TimeRange(window.start + k * HOUR, window.end + k * HOUR),
                                   monitor.name) != bins_range(monitor.reference, window, monitor.name))
        src = app.pipeline.source_for(monitor, source)
        outcome = application.run_window(app, monitor, recut, trigger="schedule")
        bins = app.pipeline._profiles[monitor.name]
        assert bins.range == bins_range(monitor.reference, recut, monitor.name)
        full = src.counts(bins, outcome.reference)
    finally:
        app.close()
    for f, result in enumerate(outcome.results):
        assert list(result.reference_counts) == full.current[f, :len(result.labels)].tolist(), result.column


def test_a_grid_that_does_not_fit_counts_the_range_from_the_source(tmp_path):
    """An offset of 7 minutes with hourly slices: the range is counted whole, the numbers alike."""
    app, monitor, source = _app(tmp_path, {**DAILY_BINS, "offset": "7m"})
    try:
        window = _hour(START + 3 * DAY + 2 * HOUR)
        outcome = application.run_window(app, monitor, window, trigger="schedule")
        src = app.pipeline.source_for(monitor, source)
        full = src.counts(app.pipeline._profiles[monitor.name], outcome.reference)
    finally:
        app.close()
    assert outcome.status == "ok"
    assert [list(r.reference_counts) for r in outcome.results] == \
        [full.current[f, :len(r.labels)].tolist() for f, r in enumerate(outcome.results)]


def test_re_cuts_are_spread_over_the_rebin_period_not_all_at_midnight():
    reference = RollingReference(rebin=timedelta(days=7))
    phases = [rebin_phase(reference, f"monitor_{i}") for i in range(200)]
    assert all(timedelta(0) <= p < timedelta(days=7) for p in phases)
    assert len({p // DAY for p in phases}) == 7  # every day of the week
    assert len({(p % DAY) // HOUR for p in phases}) == 24  # every hour of the day
    assert rebin_phase(reference, "fraud") == rebin_phase(reference, "fraud")  # stable across restarts


def test_the_slice_cache_does_not_hold_the_reference(tmp_path):
    """The week's slices live in the results database; memory keeps about a day's (issue #25: per-monitor memory)."""
    app, monitor, _ = _app(tmp_path, {"kind": "rolling", "size": "3d", "refresh": "1d", "rebin": "1d"},
                           schedule={"every": "5m"}, window={"size": "1h"})
    try:
        outcome = application.run_window(app, monitor, _hour(START + 4 * DAY + 22 * HOUR), trigger="schedule")
        cached = sum(len(slices) for (name, _), slices in app.pipeline.slices._cache.items() if name == monitor.name)
    finally:
        app.close()
    assert outcome.status == "ok" and outcome.results[0].samples_reference > 5_000
    assert cached <= (DAY + 2 * HOUR) / timedelta(minutes=5)  # 3 days of 5-minute slices would be 864


def test_a_segmented_reference_moves_from_slices_segment_by_segment(tmp_path):
    app, monitor, source = _app(tmp_path, DAILY_BINS)
    app.close()
    add_app_segment(source)
    raw = seasonal_config(f"sqlite:///{tmp_path / 'seg.db'}", source, DAILY_BINS, name=MIDDAY,
                          segments={"by": ["app"]})
    config = parse_config(raw, {})
    app = application.open_app(config)
    try:
        monitor = config.resolved_monitors()[0]
        application.run_window(app, monitor, _hour(START + 3 * DAY - HOUR), trigger="schedule")
        moved = application.run_window(app, monitor, _hour(START + 3 * DAY), trigger="schedule")
        src = app.pipeline.source_for(monitor, source)
        full = src.counts(app.pipeline._profiles[monitor.name], moved.reference)
    finally:
        app.close()
    keys = full.segment_profile.keys
    checked = 0
    for result in (r for r in moved.results if r.segment and r.column != "segment"):
        counts = full.segments[keys.index(result.segment_key)]
        f = counts.columns.index(result.column)
        assert list(result.reference_counts) == counts.current[f, :len(result.labels)].tolist()
        checked += 1
    assert checked == len(keys) * 8 and {"app=web", "app=ios"} <= set(keys)


def test_a_recount_reads_the_reference_once_per_range_not_once_per_window(tmp_path):
    """backfill --recount: the first window recounts the reference's slices, the next ones of the same
    range recount only their own."""
    app, monitor, source = _app(tmp_path, DAILY_BINS)
    try:
        windows = [_hour(START + 3 * DAY + k * HOUR) for k in range(1, 4)]
        for window in windows:  # stored first
            application.run_window(app, monitor, window, trigger="backfill")
        src = app.pipeline.source_for(monitor, source)
        spent = []
        for window in windows:
            before = src.statements
            outcome = application.run_window(app, monitor, window, trigger="recount", recount=True)
            assert outcome.status == "ok"
            spent.append(src.statements - before)
    finally:
        app.close()
    assert spent[1:] == [1, 1] and spent[0] > 2, spent
