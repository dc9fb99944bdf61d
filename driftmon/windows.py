"""Time windows (README, "What driftmon measures"): pure functions, no I/O, UTC throughout.

Every window is half-open, [start, end). The current window ends at the most
recent schedule tick, so it is the latest COMPLETE interval; backfill walks the
same ticks through history, so a backfilled window equals the one the daemon
would have computed live.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from driftmon.config import ExcludedRange, FixedReference, RollingReference, Schedule, SeasonalReference

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A cron line that can fire (driftmon.cron refuses February 30th) fires at least every
# 8 years: February 29th skips the century years that are not leap years (1896 -> 1904).
_LONGEST_CRON_GAP = timedelta(days=366 * 8 + 1)


@dataclass(frozen=True, order=True)
class TimeRange:
    """A half-open interval [start, end) of UTC time."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("TimeRange needs timezone-aware datetimes")
        if self.start >= self.end:
            raise ValueError(f"empty time range [{self.start}, {self.end})")

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


def as_utc(moment: datetime) -> datetime:
    """Naive datetimes are UTC (the spec's rule); aware ones are converted."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def align_down(moment: datetime, step: timedelta) -> datetime:
    """The latest multiple of ``step`` since the Unix epoch at or before ``moment``."""
    return EPOCH + ((as_utc(moment) - EPOCH) // step) * step


def latest_tick(schedule: Schedule, now: datetime) -> datetime:
    """The most recent time at or before ``now`` at which the schedule fires."""
    now = as_utc(now)
    if schedule.every is not None:
        return align_down(now, schedule.every)
    return _latest_cron_tick(schedule.cron, now)


def ticks(schedule: Schedule, start: datetime, end: datetime) -> Iterator[datetime]:
    """Every schedule tick in [start, end], in time order."""
    start, end = as_utc(start), as_utc(end)
    if schedule.every is not None:
        tick = align_down(start, schedule.every)
        tick = tick if tick >= start else tick + schedule.every
        while tick <= end:
            yield tick
            tick += schedule.every
        return
    trigger = _cron_trigger(schedule.cron)
    tick = trigger.get_next_fire_time(None, start)
    while tick is not None and tick <= end:
        yield tick.astimezone(UTC)
        tick = trigger.get_next_fire_time(tick, tick + timedelta(microseconds=1))


def interval_after(schedule: Schedule, now: datetime) -> timedelta:
    """The time between two ticks: the interval, or for cron the gap after the latest tick."""
    if schedule.every is not None:
        return schedule.every
    trigger = _cron_trigger(schedule.cron)
    first = trigger.get_next_fire_time(None, as_utc(now))
    second = trigger.get_next_fire_time(first, first + timedelta(microseconds=1)) if first else None
    return (second - first) if first and second else timedelta(days=1)


def current_window(schedule: Schedule, size: timedelta, now: datetime) -> TimeRange:
    """The latest complete window of ``size`` ending at a schedule tick."""
    end = latest_tick(schedule, now)
    return TimeRange(end - size, end)


def backfill_windows(
    schedule: Schedule, size: timedelta, start: datetime, end: datetime
) -> list[TimeRange]:
    """Every window [tick - size, tick) lying inside [start, end], oldest first."""
    start = as_utc(start)
    return [TimeRange(tick - size, tick) for tick in ticks(schedule, start + size, end)]


def reference_range(
    reference: RollingReference | FixedReference | SeasonalReference, current: TimeRange
) -> TimeRange:
    """The reference window for a current window: for a seasonal reference, the range its bins are cut from.

    A rolling reference ends ``offset`` before the current window, aligned down
    to ``refresh``: its range, and so its stored profile, changes at most once
    per refresh period rather than every cycle. A seasonal reference's bins come
    from the ``lags × period`` before the window, aligned down the same way, so
    that every lag of every window until the next refresh is binned alike.
    """
    if isinstance(reference, FixedReference):
        return TimeRange(as_utc(reference.start), as_utc(reference.end))
    if isinstance(reference, SeasonalReference):
        end = align_down(current.start, reference.effective_refresh)
        return TimeRange(end - reference.lags * reference.period, end)
    end = align_down(current.start - reference.offset, reference.refresh)
    return TimeRange(end - reference.size, end)


def bins_range(reference: RollingReference, current: TimeRange, monitor: str) -> TimeRange:
    """The range a rolling reference's bins are cut from: ``size`` long, ending at the latest
    ``rebin`` tick (shifted by the monitor's own phase) at or before the reference's end."""
    phase = rebin_phase(reference, monitor)
    end = align_down(current.start - reference.offset - phase, reference.rebin) + phase
    return TimeRange(end - reference.size, end)


def rebin_phase(reference: RollingReference, monitor: str) -> timedelta:
    """Where in each ``rebin`` period a monitor re-cuts its bins: a stable share of it drawn from
    the monitor's name, in whole minutes, so that many monitors spread their re-cuts over the
    period instead of all reading their whole reference at midnight."""
    import hashlib

    minutes = max(reference.rebin // timedelta(minutes=1), 1)
    draw = int.from_bytes(hashlib.sha256(monitor.encode()).digest()[:8], "big")
    return (draw % minutes) * timedelta(minutes=1)


def seasonal_lags(reference: SeasonalReference, current: TimeRange) -> list[TimeRange]:
    """The same-phase window in each of the last ``lags`` periods, oldest first."""
    return [TimeRange(current.start - k * reference.period, current.end - k * reference.period)
            for k in range(reference.lags, 0, -1)]


def excluded_spans(reference: SeasonalReference, span: TimeRange) -> list[TimeRange]:
    """The excluded stretches of time that overlap ``span``, clipped to it, merged, oldest first."""
    found = []
    for exclusion in reference.exclude:
        if isinstance(exclusion, ExcludedRange):
            found.append(TimeRange(as_utc(exclusion.start), as_utc(exclusion.end)))
            continue
        for tick in ticks(Schedule(cron=exclusion.cron), span.start - exclusion.duration, span.end):
            found.append(TimeRange(tick, tick + exclusion.duration))
    merged: list[TimeRange] = []
    for piece in sorted(found):
        start, end = max(piece.start, span.start), min(piece.end, span.end)
        if start >= end:
            continue
        if merged and start <= merged[-1].end:
            merged[-1] = TimeRange(merged[-1].start, max(end, merged[-1].end))
        else:
            merged.append(TimeRange(start, end))
    return merged


def _cron_trigger(expression: str):
    """The line's trigger with crontab(5)'s meaning (0 and 7 are Sunday), before 1970 too."""
    from driftmon.cron import crontab_trigger

    return crontab_trigger(expression)


def _latest_cron_tick(expression: str, now: datetime) -> datetime:
    # APScheduler only looks forward: search back with a doubling look-back,
    # then walk forward to the last fire time that is not after `now`.
    trigger = _cron_trigger(expression)
    lookback = timedelta(minutes=1)
    while lookback <= _LONGEST_CRON_GAP:
        tick = trigger.get_next_fire_time(None, now - lookback)
        if tick is not None and tick <= now:
            while True:
                following = trigger.get_next_fire_time(tick, tick + timedelta(microseconds=1))
                if following is None or following > now:
                    return tick.astimezone(UTC)
                tick = following
        lookback *= 2
    raise ValueError(f"cron schedule {expression!r} never fired in the last eight years")
