"""Cron lines mean what crontab(5) says: checked against croniter, before 1970 too.

APScheduler 3's ``CronTrigger.from_crontab`` numbered weekdays from Monday = 0,
ANDed day-of-month with day-of-week and never fired before 1970; every test
here failed with it. croniter is the reference for crontab's meaning, except
where a day field starts with ``*`` without being ``*`` (``*/2``): crontab(5)
calls such a field unrestricted ("i.e., don't start with *"), croniter counts
it as restricted, so it is told which rule applies (``day_or``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from croniter import croniter

import tests.test_run_commands as run_commands
from driftmon.config import Schedule
from driftmon.cron import crontab_trigger, parse_crontab
from driftmon.windows import backfill_windows, current_window, latest_tick, ticks
from tests.cli_helpers import driftmon
from tests.sourcedata import create_and_fill, events_table
from tests.test_pipeline import drifted_rows

H, D = timedelta(hours=1), timedelta(days=1)
YEAR_2024 = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
config_file = run_commands.config_file  # the run-commands fixture: a source table and a config writer


def reference_ticks(line: str, start: datetime, end: datetime) -> list[datetime]:
    """croniter's fire times in [start, end], with crontab(5)'s rule for day fields starting with *."""
    fields = line.split()
    day_or = len(fields) != 5 or not (fields[2].startswith("*") or fields[4].startswith("*"))
    found, schedule = [], croniter(line, start - timedelta(seconds=1), day_or=day_or)
    while (tick := schedule.get_next(datetime)) <= end:
        found.append(tick.astimezone(UTC))
    return found


def driftmon_ticks(line: str, start: datetime, end: datetime) -> list[datetime]:
    return list(ticks(Schedule(cron=line), start, end))


def assert_matches_crontab(line: str, start: datetime = YEAR_2024[0], end: datetime = YEAR_2024[1]) -> None:
    expected = reference_ticks(line, start, end)
    assert expected, f"{line!r} should fire in the span"
    assert driftmon_ticks(line, start, end) == expected, line


# --- weekdays, months, steps, the day rule: a year of fire times against croniter ------------------

WEEKDAYS = {  # crontab's day-of-week field -> the days it means
    "0": "sun", "1": "mon", "2": "tue", "3": "wed", "4": "thu", "5": "fri", "6": "sat", "7": "sun",
    "sun": "sun", "mon": "mon", "tue": "tue", "wed": "wed", "thu": "thu", "fri": "fri", "sat": "sat",
    "SUN": "sun", "Fri": "fri",
    "1-5": "mon tue wed thu fri", "mon-fri": "mon tue wed thu fri", "MON-Fri": "mon tue wed thu fri",
    "0-6": "sun mon tue wed thu fri sat", "0-7": "sun mon tue wed thu fri sat",
    "5-7": "fri sat sun", "fri-sat,sun": "fri sat sun",
    "1,3,5": "mon wed fri", "sat,sun": "sat sun", "0,7": "sun", "sun,3": "sun wed",
    "*/2": "sun tue thu sat", "*/3": "sun wed sat", "1-5/2": "mon wed fri", "mon-fri/2": "mon wed fri",
    "1-7/2": "mon wed fri sun", "2/2": "tue thu sat",
}


@pytest.mark.parametrize("weekdays", list(WEEKDAYS))
def test_every_weekday_form_means_what_crontab_means(weekdays):
    assert_matches_crontab(f"0 0 * * {weekdays}")
    fired = {tick.strftime("%a").lower() for tick in driftmon_ticks(f"0 0 * * {weekdays}", *YEAR_2024)}
    assert fired == set(WEEKDAYS[weekdays].split())
    # Day-of-month restricted too: crontab fires on the 13th OR on those weekdays (AND for */N).
    assert_matches_crontab(f"30 9 13 * {weekdays}")


@pytest.mark.parametrize("line", [
    "30 4 1,15 * 5",  # crontab(5)'s own example: the 1st, the 15th and every Friday
    "0 0 1 * mon",
    "0 12 1-7 * sun",
    "0 0 29 2 1",  # February 29th or any Monday
    "0 0 31 * 0-6",  # every day
    "0 0 */2 * 1",  # day-of-month starts with *: unrestricted, so odd days that are Mondays
    "0 0 1-7 * */7",  # day-of-week starts with *: the first Sunday of each month (healthchecks.io's trick)
])
def test_day_of_month_and_day_of_week(line):
    assert_matches_crontab(line)


def test_both_day_fields_restricted_fire_on_either():
    days = [YEAR_2024[0] + n * D for n in range(366)]
    either = [day + timedelta(hours=4, minutes=30) for day in days if day.day in (1, 15) or day.weekday() == 4]
    assert driftmon_ticks("30 4 1,15 * 5", *YEAR_2024) == either  # the 1st, the 15th and every Friday


def test_a_day_field_starting_with_a_star_is_unrestricted():
    fired = driftmon_ticks("0 0 */2 * 1", *YEAR_2024)
    assert fired and all(t.day % 2 == 1 and t.strftime("%a") == "Mon" for t in fired)


@pytest.mark.parametrize("months", ["jan", "JUL", "jan,jul", "feb-apr", "*/3", "2-11/3", "nov-DEC", "12"])
def test_month_names_and_steps(months):
    assert_matches_crontab(f"0 0 1 {months} *")
    assert_matches_crontab(f"0 6 * {months} 0")  # Sundays


@pytest.mark.parametrize("line", ["*/15 */6 * * 1-5/2", "5-50/15 9-17/4 * * 0", "0,30 0 * * 6,7"])
def test_minute_and_hour_steps(line):
    assert_matches_crontab(line)


@pytest.mark.parametrize("macro", ["@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"])
def test_macros(macro):
    assert_matches_crontab(macro, YEAR_2024[0], YEAR_2024[0] + 40 * D if macro == "@hourly" else YEAR_2024[1])


def test_readme_example_fires_monday_to_friday_at_nine():
    fired = driftmon_ticks("0 9 * * 1-5", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 15, tzinfo=UTC))
    assert [t.strftime("%a %d %H:%M") for t in fired] == [
        f"{day} {date:02d} 09:00" for day, date in zip(["Mon", "Tue", "Wed", "Thu", "Fri"] * 2,
                                                       [1, 2, 3, 4, 5, 8, 9, 10, 11, 12], strict=True)]


def test_the_daemons_trigger_fires_on_crontabs_days():
    from driftmon.serving.daemon import _trigger

    trigger = _trigger(Schedule(cron="0 0 * * 0"))
    assert trigger.get_next_fire_time(None, datetime(2024, 1, 1, tzinfo=UTC)) == datetime(2024, 1, 7, tzinfo=UTC)


# --- invalid lines --------------------------------------------------------------------------------


@pytest.mark.parametrize("line, words", [
    ("0 0 * * 8", "day-of-week field '8': 8 is not in 0-7"),
    ("61 * * * *", "minute field '61'"),
    ("0 24 * * *", "hour field '24'"),
    ("0 0 0 * *", "day-of-month field '0'"),
    ("0 0 * 13 *", "month field '13'"),
    ("0 0 * * monday", "day-of-week field 'monday'"),
    ("0 0 * * 5-1", "runs backwards"),
    ("0 0 * * fri-sun", "runs backwards"),  # sun is 0: croniter wraps it around, cron does not
    ("*/0 * * * *", "minute field '*/0': step"),
    ("1,,2 * * * *", "minute field '1,,2'"),
    ("0 0 * *", "5 fields"),
    ("0 0 * * * *", "5 fields"),
    ("0 0 30 2 *", "never fires"),
    ("@reboot", "unknown macro"),
])
def test_invalid_lines_name_the_bad_field(line, words):
    with pytest.raises(ValueError, match="invalid crontab expression") as caught:
        Schedule(cron=line)
    assert words in str(caught.value)
    with pytest.raises(ValueError):
        crontab_trigger(line)


def test_seven_is_sunday_for_the_configuration_too():
    assert Schedule(cron="0 0 * * 7").cron == "0 0 * * 7"
    assert parse_crontab("0 0 * * 7").weekdays == parse_crontab("0 0 * * sun").weekdays == {0}


# --- before 1970 ----------------------------------------------------------------------------------

JUNE_1950 = datetime(1950, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize("cron, every", [("0 * * * *", H), ("*/15 * * * *", timedelta(minutes=15)), ("@daily", D)])
def test_cron_windows_before_1970_equal_every_windows(cron, every):
    as_cron, as_every = Schedule(cron=cron), Schedule(every=every)
    start, end, now = JUNE_1950, JUNE_1950 + 3 * D, JUNE_1950 + 30 * H + timedelta(minutes=7)
    assert list(ticks(as_cron, start, end)) == list(ticks(as_every, start, end))
    assert backfill_windows(as_cron, H, start, end) == backfill_windows(as_every, H, start, end)
    assert len(backfill_windows(as_cron, H, start, end)) >= 3
    assert latest_tick(as_cron, now) == latest_tick(as_every, now)
    assert current_window(as_cron, H, now) == current_window(as_every, H, now)


def test_weekdays_before_1970_match_crontab():
    assert_matches_crontab("0 9 * * 1-5", datetime(1950, 1, 1, tzinfo=UTC), datetime(1951, 1, 1, tzinfo=UTC))
    assert latest_tick(Schedule(cron="0 0 * * 0"), JUNE_1950) == datetime(1950, 5, 28, tzinfo=UTC)  # a Sunday


def test_february_29th_across_1900_which_was_no_leap_year():
    assert latest_tick(Schedule(cron="0 0 29 2 *"), datetime(1903, 6, 1, tzinfo=UTC)) == datetime(1896, 2, 29,
                                                                                                  tzinfo=UTC)


@pytest.fixture
def history_1950(config_file, engine):
    """A week of reference traffic in May 1950 and hourly traffic on June 1st, 02:00-03:00 drifted."""
    rng = np.random.default_rng(7)
    rows = drifted_rows(rng, 1500, datetime(1950, 5, 1, tzinfo=UTC), 7 * D, False)
    for hour in range(6):
        rows += drifted_rows(rng, 150, JUNE_1950 + hour * H, H, hour == 2)
    create_and_fill(engine, events_table(tenure=sa.Double, age=sa.Double), rows)
    defaults = {"schedule": {"cron": "0 * * * *"}, "min_samples": 50,
                "reference": {"kind": "fixed", "start": "1950-05-01T00:00:00Z", "end": "1950-05-08T00:00:00Z"}}
    return config_file(defaults=defaults)


def test_backfill_and_run_once_before_1970_on_the_command_line(history_1950):
    backfill = driftmon("backfill", "--config", history_1950, "--start", "1950-06-01T00:00:00Z",
                        "--end", "1950-06-01T06:00:00Z")
    assert backfill.returncode == 1, backfill.stdout + backfill.stderr  # 02:00-03:00 drifted
    assert "backfilled 6 window(s): 0 failed, 1 with critical drift" in backfill.stdout
    once = driftmon("run-once", "--config", history_1950, "--at", "1950-06-01T03:30:00Z", "--output", "json")
    assert once.returncode == 1, once.stdout + once.stderr
    records = json.loads(once.stdout)
    assert {(r["window_start"], r["window_end"]) for r in records} == {
        ("1950-06-01T02:00:00+00:00", "1950-06-01T03:00:00+00:00")}
    assert {r["samples_current"] for r in records if r["column"] == "age"} == {150}
