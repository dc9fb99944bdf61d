"""Windows: alignment to interval and cron schedules, references, backfill."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from driftmon.config import FixedReference, RollingReference, Schedule
from driftmon.windows import (
    TimeRange,
    align_down,
    backfill_windows,
    current_window,
    latest_tick,
    reference_range,
    ticks,
)

H, D, M = timedelta(hours=1), timedelta(days=1), timedelta(minutes=1)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


EVERY_5M = Schedule(every=5 * M)


def test_interval_window_is_latest_complete_interval():
    window = current_window(EVERY_5M, H, utc(2024, 3, 10, 12, 7, 31))
    assert window == TimeRange(utc(2024, 3, 10, 11, 5), utc(2024, 3, 10, 12, 5))


def test_now_exactly_on_a_tick_counts_that_tick():
    assert latest_tick(EVERY_5M, utc(2024, 3, 10, 12, 5)) == utc(2024, 3, 10, 12, 5)


def test_naive_and_other_zone_times_are_utc():
    naive = current_window(EVERY_5M, H, datetime(2024, 3, 10, 12, 7))
    zoned = current_window(EVERY_5M, H, datetime(2024, 3, 10, 13, 7, tzinfo=timezone(H)))
    assert naive == zoned == TimeRange(utc(2024, 3, 10, 11, 5), utc(2024, 3, 10, 12, 5))
    assert naive.end.tzinfo is UTC


def test_no_daylight_saving_jumps():
    # 2024-03-31 is the EU spring-forward day; UTC has no gap, so neither do windows.
    windows = backfill_windows(Schedule(every=H), H, utc(2024, 3, 31, 0), utc(2024, 3, 31, 4))
    assert [w.end.hour for w in windows] == [1, 2, 3, 4]
    assert all(w.end - w.start == H for w in windows)


def test_cron_windows():
    daily_at_6 = Schedule(cron="0 6 * * *")
    assert current_window(daily_at_6, D, utc(2024, 3, 1, 5, 59)) == TimeRange(
        utc(2024, 2, 28, 6), utc(2024, 2, 29, 6)  # leap year February
    )
    assert latest_tick(Schedule(cron="*/15 * * * *"), utc(2024, 1, 1, 0, 44, 59)) == utc(2024, 1, 1, 0, 30)
    monthly = Schedule(cron="0 0 1 * *")
    assert latest_tick(monthly, utc(2024, 5, 17)) == utc(2024, 5, 1)
    assert latest_tick(monthly, utc(2024, 1, 1)) == utc(2024, 1, 1)
    assert latest_tick(Schedule(cron="0 0 1 1 *"), utc(2024, 12, 31, 23)) == utc(2024, 1, 1)


def test_month_and_year_boundaries():
    assert current_window(Schedule(every=D), D, utc(2024, 1, 1, 0, 0, 1)) == TimeRange(
        utc(2023, 12, 31), utc(2024, 1, 1)
    )
    assert current_window(Schedule(every=H), H, utc(2024, 3, 1, 0, 30)) == TimeRange(
        utc(2024, 2, 29, 23), utc(2024, 3, 1)
    )


def test_cron_and_interval_ticks_agree():
    start, end = utc(2024, 2, 28, 22), utc(2024, 3, 1, 2)
    assert list(ticks(Schedule(cron="0 * * * *"), start, end)) == list(ticks(Schedule(every=H), start, end))


def test_backfill_windows_count_and_order():
    windows = backfill_windows(Schedule(every=H), H, utc(2024, 1, 1), utc(2024, 1, 3))
    assert len(windows) == 48
    assert windows[0] == TimeRange(utc(2024, 1, 1), utc(2024, 1, 1, 1))
    assert windows[-1] == TimeRange(utc(2024, 1, 2, 23), utc(2024, 1, 3))
    assert windows == sorted(windows)


def test_backfill_windows_lie_inside_the_range():
    windows = backfill_windows(EVERY_5M, H, utc(2024, 1, 1, 0, 2), utc(2024, 1, 1, 2, 1))
    assert windows[0].start >= utc(2024, 1, 1, 0, 2)
    assert windows[-1].end <= utc(2024, 1, 1, 2, 1)
    assert len(windows) == 12  # ends 01:05 ... 02:00


def test_fixed_reference():
    reference = FixedReference(kind="fixed", start=utc(2024, 1, 1), end=utc(2024, 2, 1))
    current = TimeRange(utc(2024, 5, 1), utc(2024, 5, 1, 1))
    assert reference_range(reference, current) == TimeRange(utc(2024, 1, 1), utc(2024, 2, 1))


def test_rolling_reference_aligned_to_refresh():
    reference = RollingReference(size=7 * D, offset=timedelta(0), refresh=D)
    ranges = {
        reference_range(reference, current_window(EVERY_5M, H, utc(2024, 3, 10, h, m)))
        for h in range(1, 24)
        for m in (0, 7, 33)
    }
    # The whole day's cycles share one reference, so one profile per day.
    assert ranges == {TimeRange(utc(2024, 3, 3), utc(2024, 3, 10))}


def test_rolling_reference_offset():
    reference = RollingReference(size=2 * D, offset=D, refresh=H)
    current = TimeRange(utc(2024, 3, 10, 11, 5), utc(2024, 3, 10, 12, 5))
    assert reference_range(reference, current) == TimeRange(utc(2024, 3, 7, 11), utc(2024, 3, 9, 11))


def test_reference_never_overlaps_current_window():
    reference = RollingReference(size=D, offset=timedelta(0), refresh=D)
    for hour in range(24):
        current = current_window(Schedule(every=H), 3 * H, utc(2024, 3, 10, hour, 30))
        assert reference_range(reference, current).end <= current.start


def test_align_down():
    assert align_down(utc(2024, 3, 10, 12, 7), D) == utc(2024, 3, 10)
    assert align_down(utc(2024, 3, 10, 12, 7), 5 * M) == utc(2024, 3, 10, 12, 5)


def test_time_range_validation():
    with pytest.raises(ValueError, match="empty"):
        TimeRange(utc(2024, 1, 2), utc(2024, 1, 1))
    with pytest.raises(ValueError, match="timezone"):
        TimeRange(datetime(2024, 1, 1), datetime(2024, 1, 2))
