"""The slice grid (README, "How a cycle reads only what is new"): pure functions, no I/O.

A monitor's counts are kept per time slice, a half-open interval on a grid
anchored at the Unix epoch, so that a window's counts are the sum of its
slices and each source row is counted once instead of once per window that
holds it. The grid must put a slice boundary on every window edge:

- ``every`` schedules: the slice length defaults to the largest duration that
  divides both the interval and the window size (their greatest common divisor).
- ``cron`` schedules: the largest duration that divides the window size and the
  distance from the epoch of each of the first ``CRON_SAMPLE_TICKS`` ticks after
  the epoch, so every tick (a window's end) and every window start lies on it.
  ``*/5 * * * *`` with a 1 h window gives 5 minutes; ``0 9 * * 1-5`` gives 1 h.

A grid whose slices would be shorter than a second, not whole seconds, or more
than ``MAX_SLICES_PER_WINDOW`` per window does not fit: such a monitor counts
its whole window on each cycle, as before slices (``check-config`` says so).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from driftmon.config import MonitorSettings, Schedule
from driftmon.windows import EPOCH, TimeRange, align_down, interval_after

CRON_SAMPLE_TICKS = 1000
MAX_SLICES_PER_WINDOW = 20_160  # a 7-day window of 30 s slices
_MICROSECOND = timedelta(microseconds=1)
_SECOND = timedelta(seconds=1)


def _gcd(a: timedelta, b: timedelta) -> timedelta:
    return math.gcd(a // _MICROSECOND, b // _MICROSECOND) * _MICROSECOND


def schedule_grid(schedule: Schedule) -> timedelta:
    """The largest duration on whose epoch-anchored grid every tick of the schedule lies."""
    if schedule.every is not None:
        return schedule.every
    from driftmon.cron import crontab_trigger

    # Sampled after the epoch; the grid holds before it too: the calendar, weekdays
    # included, repeats every 400 years (146 097 days), a whole number of such grids.
    trigger = crontab_trigger(schedule.cron)
    grid, tick = timedelta(0), None
    for _ in range(CRON_SAMPLE_TICKS):
        tick = trigger.get_next_fire_time(tick, EPOCH if tick is None else tick + _MICROSECOND)
        if tick is None:
            break
        grid = _gcd(grid, tick - EPOCH) if grid else tick - EPOCH
    return grid or timedelta(days=1)


def derived_length(monitor: MonitorSettings) -> timedelta:
    """The default slice length: the grid of the schedule, cut down to divide the window."""
    return _gcd(schedule_grid(monitor.schedule), monitor.window.size)


def grid_problem(monitor: MonitorSettings) -> str | None:
    """Why the monitor's windows cannot be summed from slices, or None when they can."""
    if monitor.slice == "off":
        return "slices are off (slice: off)"
    length = slice_length_unchecked(monitor)
    if monitor.slice != "auto":
        grid = schedule_grid(monitor.schedule)
        if monitor.window.size % length or grid % length:
            return (f"slice {length} does not divide the window size ({monitor.window.size}) "
                    f"and the schedule's grid ({grid})")
    if length < _SECOND or length % _SECOND:
        return f"the largest slice that fits the schedule and the window is {length}: not whole seconds"
    if monitor.window.size // length > MAX_SLICES_PER_WINDOW:
        return (f"slices of {length} would make {monitor.window.size // length} per window "
                f"(more than {MAX_SLICES_PER_WINDOW})")
    return None


def slice_length_unchecked(monitor: MonitorSettings) -> timedelta:
    return derived_length(monitor) if monitor.slice in ("auto", "off") else monitor.slice


def slice_length(monitor: MonitorSettings) -> timedelta | None:
    """The monitor's slice length, or None when it counts whole windows."""
    return None if grid_problem(monitor) else slice_length_unchecked(monitor)


def lateness(monitor: MonitorSettings) -> timedelta:
    """How long after a slice's end its rows may still arrive (default: one schedule interval)."""
    if monitor.lateness is not None:
        return monitor.lateness
    return interval_after(monitor.schedule, datetime.now(UTC))


def slices_of(span: TimeRange, length: timedelta) -> list[TimeRange]:
    """The slices tiling ``span`` (whose edges lie on the grid), oldest first."""
    start = align_down(span.start, length)
    count = -(-(span.end - start) // length)
    return [TimeRange(start + i * length, start + (i + 1) * length) for i in range(count)]


def is_sealed(piece: TimeRange, late: timedelta, now: datetime) -> bool:
    """A slice counted at ``now`` is final when no row of it may still arrive."""
    return now >= piece.end + late


def contiguous(pieces: list[TimeRange]) -> list[TimeRange]:
    """Runs of adjacent slices merged into spans, oldest first."""
    spans: list[TimeRange] = []
    for piece in sorted(pieces):
        if spans and spans[-1].end == piece.start:
            spans[-1] = TimeRange(spans[-1].start, piece.end)
        else:
            spans.append(piece)
    return spans
