"""The bounds on times and durations that every setting and command option keeps to.

Python's datetime ends at the years 1 and 9999, and windows, references, lateness
and catch-up are computed by adding and subtracting durations: a setting such as
``window: {size: 9999999w}`` (190 000 years) passed validation and then crashed
every run with ``OverflowError``. Within these bounds that arithmetic stays in
range, with room to spare, and so do the 64-bit integers databases keep times in
(nanoseconds since 1970 reach the year 2262). Nothing here imports anything heavy:
the command line's option types use it too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

# The longest duration a setting takes: 100 years (of 365.25 days).
MAX_DURATION = timedelta(days=36525)
MAX_DURATION_TEXT = "100 years (36525d)"
# The earliest and latest times a setting or an option may name.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
# catch_up windows reach back at most this far: catch_up × the schedule's interval.
MAX_CATCH_UP_SPAN = timedelta(days=365 * 1000)


def time_problem(moment: datetime) -> str | None:
    """Why a (UTC) time is out of driftmon's range, or None."""
    return None if EARLIEST <= moment < LATEST else out_of_range(moment.isoformat())


def out_of_range(shown: str) -> str:
    """The message for a time out of range, ``shown`` as the user wrote it or as UTC."""
    return (f"{shown} is outside the times driftmon handles: from {EARLIEST.date().isoformat()} "
            f"to before {LATEST.date().isoformat()}")


def parse_moment(value: datetime | str, *, past: bool = False) -> datetime:
    """A time as every command and the Python API take it: a datetime or ISO 8601 text, naive is
    UTC, within driftmon's range, and (``past``) not after now. Raises ValueError with the message
    to show; the caller names the option or keyword."""
    shown = value if isinstance(value, str) else value.isoformat()
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 time such as 2024-03-01T12:00:00Z") from None
    try:
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+05:00 is before the first datetime once in UTC
        raise ValueError(out_of_range(shown)) from None
    problem = time_problem(moment)
    if problem:
        raise ValueError(problem)
    now = datetime.now(UTC)
    if past and moment > now:
        raise ValueError(f"{moment.isoformat()} is in the future (now is {now.replace(microsecond=0).isoformat()}): "
                         "windows that have not ended cannot be computed")
    return moment
