"""Crontab lines with the meaning crontab(5) gives them, as APScheduler triggers (UTC).

APScheduler 3's ``CronTrigger.from_crontab`` reads a crontab line with its own
rules, not cron's (agronholm/apscheduler#286, #1102, not to change in 3.x):

- day-of-week numbers start at Monday = 0, so ``0 0 * * 1`` fired on Tuesdays
  and ``7`` (Sunday in crontab) was refused;
- day-of-month and day-of-week are ANDed, where cron fires when EITHER matches
  if both are restricted (``0 0 1,15 * fri``: the 1st, the 15th and every Friday);
- its year field starts at 1970, so no line ever fired before the epoch and
  backfills over older history found no windows.

So each field is parsed here into the explicit set of values crontab(5) (Vixie
cron) means, and the trigger is built from those sets, weekdays by name. A
field is "restricted" for the day rule when it does not start with ``*`` (Vixie
cron's test: ``*/2`` in day-of-month is not restricted; croniter differs there).
"""

from __future__ import annotations

import calendar
import functools
import re
from dataclasses import dataclass
from datetime import MINYEAR, UTC
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # APScheduler is imported when a trigger is built, not to validate a config
    from apscheduler.triggers.base import BaseTrigger
    from apscheduler.triggers.cron import CronTrigger

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# Crontab's weekday numbers are the index here; 7 is Sunday again. APScheduler takes these names.
WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_TOKEN = "[0-9A-Za-z]+"  # a number or a name; ASCII only, so int() reads every number it passes
_ELEMENT = re.compile(rf"^(?:(?P<star>\*)|(?P<first>{_TOKEN})(?:-(?P<last>{_TOKEN}))?)(?:/(?P<step>{_TOKEN}))?$")


@dataclass(frozen=True)
class _Field:
    """One of the five fields: its name in messages, its bounds, the names it accepts."""

    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    first_name_value: int = 0  # the value of names[0]


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, MONTH_NAMES, first_name_value=1),
    _Field("day-of-week", 0, 7, WEEKDAY_NAMES),
)


@dataclass(frozen=True)
class CrontabLine:
    """A parsed crontab line: the values each field allows.

    ``weekdays`` counts from Sunday = 0 to Saturday = 6 (7 is folded into 0).
    ``day_or`` is crontab's rule for two restricted day fields: a day matches
    when its day of the month OR its weekday does.
    """

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    day_or: bool


def parse_crontab(line: str) -> CrontabLine:
    """The value sets of a 5-field crontab line or @macro; ValueError naming the bad field."""
    text = MACROS.get(line.strip().lower(), line)
    if text.strip().startswith("@"):
        raise ValueError(f"unknown macro {line.strip()!r} (known: {', '.join(MACROS)})")
    parts = text.split()
    if len(parts) != len(_FIELDS):
        raise ValueError(f"a crontab line has 5 fields (minute hour day-of-month month day-of-week), "
                         f"got {len(parts)}")
    minutes, hours, days, months, weekdays = (_parse_field(f, p) for f, p in zip(_FIELDS, parts, strict=True))
    parsed = CrontabLine(
        minutes=minutes, hours=hours, days=days, months=months,
        weekdays=frozenset(d % 7 for d in weekdays),
        day_or=not parts[2].startswith("*") and not parts[4].startswith("*"),
    )
    _check_can_fire(parsed)
    return parsed


def crontab_trigger(line: str) -> BaseTrigger:
    """An APScheduler trigger (UTC) that fires when crontab(5) would run ``line``.

    A ``CronTrigger`` (with years before 1970), or, when both day fields are
    restricted, an ``OrTrigger`` of one per day field: a CronTrigger can only
    AND them. Either answers ``get_next_fire_time(previous, now)``.
    """
    from apscheduler.triggers.combining import OrTrigger

    parsed = parse_crontab(line)
    if not parsed.day_or:
        return _trigger(parsed, parsed.days, parsed.weekdays)
    all_days, all_weekdays = frozenset(range(1, 32)), frozenset(range(7))
    return OrTrigger([_trigger(parsed, parsed.days, all_weekdays), _trigger(parsed, all_days, parsed.weekdays)])


def _parse_field(field: _Field, text: str) -> frozenset[int]:
    """The values a comma-separated list of elements allows."""
    values: set[int] = set()
    for element in text.split(","):
        values |= _parse_element(field, text, element)
    return frozenset(values)


def _parse_element(field: _Field, text: str, element: str) -> set[int]:
    """``*``, ``N``, ``N-M``, each optionally ``/STEP`` (``N/STEP``: N to the field's end)."""
    match = _ELEMENT.match(element)
    if not match:
        raise ValueError(f"{field.name} field {text!r}: cannot read {element!r}")
    if match["star"]:
        first, last = field.low, field.high
    else:
        first = _value(field, text, match["first"])
        last = _value(field, text, match["last"]) if match["last"] else None
        if last is None:
            last = field.high if match["step"] else first
    step = _step(field, text, match["step"])
    if first > last:
        # croniter wraps such ranges around; crontab(5) has no such rule: refused, not guessed.
        raise ValueError(f"{field.name} field {text!r}: range {element!r} runs backwards "
                         f"(ranges do not wrap around: list both parts, e.g. 'fri-sat,sun')")
    return set(range(first, last + 1, step))


def _value(field: _Field, text: str, token: str) -> int:
    """A number or a (case-insensitive, three-letter) name, within the field's bounds."""
    if token.isdigit():
        value = int(token)
        if not field.low <= value <= field.high:
            raise ValueError(f"{field.name} field {text!r}: {value} is not in {field.low}-{field.high}")
        return value
    if token.lower() in field.names:
        return field.names.index(token.lower()) + field.first_name_value
    known = f" (names: {', '.join(field.names)})" if field.names else ""
    raise ValueError(f"{field.name} field {text!r}: {token!r} is not a number{known}")


def _step(field: _Field, text: str, token: str | None) -> int:
    if token is None:
        return 1
    if not token.isdigit() or int(token) == 0:
        raise ValueError(f"{field.name} field {text!r}: step {token!r} is not a positive whole number")
    return int(token)


def _check_can_fire(parsed: CrontabLine) -> None:
    """Refuse a line that can never fire (``0 0 30 2 *``): APScheduler would search to
    the year 9999 for it, and every window computation would fail later."""
    if parsed.day_or:
        return  # some weekday always comes
    longest = max(calendar.monthrange(2000, month)[1] for month in parsed.months)  # 2000: Feb 29
    if min(parsed.days) > longest:
        months = ", ".join(MONTH_NAMES[m - 1] for m in sorted(parsed.months))
        raise ValueError(f"day-of-month {sorted(parsed.days)} never comes in {months}: the line never fires")


def _listed(values: frozenset[int], everything: frozenset[int], names: tuple[str, ...] = ()) -> str:
    """An APScheduler field expression: ``*`` for every value, else an explicit list."""
    if values >= everything:
        return "*"
    return ",".join(names[v] if names else str(v) for v in sorted(values))


def _trigger(parsed: CrontabLine, days: frozenset[int], weekdays: frozenset[int]) -> CronTrigger:
    """One CronTrigger: every field ANDed, weekdays by name (APScheduler numbers them from Monday)."""
    return _any_year_trigger_class()(
        minute=_listed(parsed.minutes, frozenset(range(60))),
        hour=_listed(parsed.hours, frozenset(range(24))),
        day=_listed(days, frozenset(range(1, 32))),
        month=_listed(parsed.months, frozenset(range(1, 13))),
        day_of_week=_listed(weekdays, frozenset(range(7)), WEEKDAY_NAMES),
        timezone=UTC,
    )


@functools.cache
def _any_year_trigger_class() -> type[CronTrigger]:
    """A CronTrigger whose year field starts at year 1 instead of APScheduler's 1970.

    APScheduler's year field has 1970 as its minimum (fields.MIN_VALUES), so a
    search that starts in 1950 jumps to 1970-01-01: cron lines had no ticks
    before the epoch. Defined once, on first use.
    """
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.cron.fields import BaseField

    class AnyYearField(BaseField):
        def get_min(self, dateval):
            return MINYEAR

    class AnyYearCronTrigger(CronTrigger):
        __slots__ = ()
        FIELDS_MAP = {**CronTrigger.FIELDS_MAP, "year": AnyYearField}

    return AnyYearCronTrigger
