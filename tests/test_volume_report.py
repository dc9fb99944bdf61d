"""The report's Volume section: rows against expected per window, alarms marked, from stored health rows."""

from __future__ import annotations

import re
import shutil
from datetime import timedelta

import pytest

from driftmon.inspect.report import build_report
from driftmon.inspect.volume_chart import EXPECTED_COLOUR, ROWS_COLOUR, load_volume
from driftmon.store.database import create_db_engine
from driftmon.store.health_queries import save_window_health
from driftmon.windows import TimeRange
from tests.test_explain import WINDOW_END, settings, store, stored_rows
from tests.test_report import COLUMNS, store_history

HOUR = timedelta(hours=1)
CRITICAL, WARNING = "#c62828", "#ef8f00"


@pytest.fixture
def sqlite_engine(sqlite_template, tmp_path):
    """A migrated SQLite results database, for tests whose subject is the page."""
    shutil.copy(sqlite_template, tmp_path / "results.db")
    engine = create_db_engine(f"sqlite:///{tmp_path / 'results.db'}")
    yield engine
    engine.dispose()


def health_row(monitor: str, end, rows: float, expected: float | None, status: str) -> dict:
    """A window's health row as the pipeline stores it (hourly windows, a 7-day reference)."""
    return {"monitor": monitor, "window_start": end - HOUR, "window_end": end, "rows": rows,
            "reference_rows": 0.0 if expected is None else expected * 168, "expected": expected,
            "change": None if expected is None else rows / expected - 1,
            "p_value": None if expected is None else (1e-12 if status in ("warning", "critical") else 0.4),
            "status": status, "threshold_warning": 0.15, "threshold_critical": 0.3,
            "newest_row_at": end - timedelta(minutes=5), "computed_at": end, "fingerprint": None}


def store_volume(engine, monitor: str = "shop", hours: int = 24, special: dict | None = None) -> None:
    """``hours`` hourly windows ending at WINDOW_END, 400 rows as expected, but for ``special``:
    {hours before WINDOW_END: (rows, expected, status)}."""
    special = special or {}
    with engine.begin() as connection:
        for back in range(hours):
            rows, expected, status = special.get(back, (400.0 + back % 3, 400.0, "ok"))
            save_window_health(connection, health_row(monitor, WINDOW_END - back * HOUR, rows, expected, status))


def volume_part(page: str) -> str:
    start = page.index("<h2 id='volume'>")
    return page[start:page.index("</figure>", start) + len("</figure>")] if "<figure class='volume'" in page \
        else page[start:page.index("</p>", start) + len("</p>")]


def plotted(figure: str, colour: str) -> list[float]:
    """The x of each marker drawn in ``colour`` inside the plot (the legend's samples are outside
    its clip path): the rows line's points, or the alarm marks."""
    inside = "".join(re.findall(r'<g clip-path="url\(#[^"]+\)">(.*?)</g>', figure, re.S))
    return [float(x) for x in re.findall(rf'<use [^>]*x="([\d.]+)"[^>]*style="fill: {colour}[;"]', inside)]


def points(figure: str, colour: str) -> int:
    return len(plotted(figure, colour))


def report_of(engine, monitor=None, **options) -> str:
    with engine.connect() as connection:
        return build_report(connection, monitor or settings(), **options)


def test_each_window_is_a_point_and_alarms_are_marked(sqlite_engine):
    store_history(sqlite_engine)
    store_volume(sqlite_engine, special={2: (240.0, 400.0, "critical"), 5: (330.0, 400.0, "warning"),
                                         9: (3.0, None, "insufficient_data")})
    page = report_of(sqlite_engine)
    part = volume_part(page)
    assert "data-windows='24'" in part
    assert points(part, ROWS_COLOUR) == 24  # every window, the insufficient one too
    assert points(part, CRITICAL) == 1 and points(part, WARNING) == 1
    assert f"stroke: {EXPECTED_COLOUR}" in part
    assert "24 windows: 1 warning, 1 critical, 1 without enough data" in part
    assert ("newest window (ending 2024-03-08 12:00 UTC): 400 rows, 400 expected (+0.0 %)" in part
            and "thresholds ±15 % warning, ±30 % critical" in part and "newest row seen 2024-03-08 11:55 UTC" in part)
    # Before the column charts, and the page's ids (the volume chart's included) stay unique.
    assert page.index("<h2 id='volume'>") < page.index("<figure class='chart'")
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids)) and any(i.startswith("volume-") for i in ids)


def test_a_critical_window_is_marked_where_it_is(sqlite_engine):
    store_history(sqlite_engine, hours=3)
    store_volume(sqlite_engine, hours=3, special={0: (240.0, 400.0, "critical")})
    part = volume_part(report_of(sqlite_engine))
    assert "400 expected (-40.0 %)" in part and ">critical</span>" in part
    # The mark sits on the newest window's point: the same x as the rows line's last point.
    rows_x, marked_x = plotted(part, ROWS_COLOUR), plotted(part, CRITICAL)
    assert len(rows_x) == 3 and marked_x == [max(rows_x)]


def test_no_volume_stored_is_one_line_not_an_empty_chart(sqlite_engine):
    store_history(sqlite_engine)
    part = volume_part(report_of(sqlite_engine))
    assert part.endswith("<p class='note volume'>No volume stored for this range.</p>")
    assert "<svg" not in part
    off = report_of(sqlite_engine, settings().model_copy(update={"volume": None}))
    assert "No volume stored for this range (the volume check is off for this monitor)." in off


def test_rows_of_freshness_only_are_not_drawn_as_empty_windows(sqlite_engine):
    # volume: null still stores each window's newest row, with status "off" and 0 rows.
    store_history(sqlite_engine)
    store_volume(sqlite_engine, hours=4, special={back: (0.0, None, "off") for back in range(4)})
    part = volume_part(report_of(sqlite_engine))
    assert part.endswith("No volume stored for this range (the volume check is off for this monitor).</p>")
    store_volume(sqlite_engine, hours=2)  # turned on again: the two newest windows are checked
    part = volume_part(report_of(sqlite_engine))
    assert "data-windows='2'" in part and points(part, ROWS_COLOUR) == 2


def test_the_range_is_that_of_the_column_history(engine):
    # (start, end] as the columns' history: the window ending at start is out, the one ending at end in.
    store_volume(engine, hours=24)
    span = TimeRange(WINDOW_END - 10 * HOUR, WINDOW_END - 3 * HOUR)
    with engine.connect() as connection:
        rows = load_volume(connection, "shop", span)
    assert [r["window_end"] for r in rows] == [WINDOW_END - back * HOUR for back in range(9, 2, -1)]
    store_history(engine)
    part = volume_part(report_of(engine, start=span.start, end=span.end))
    assert "data-windows='7'" in part and "7 windows: 0 warning, 0 critical" in part


@pytest.mark.parametrize("name", ["<img src=x onerror=alert(1)>", "shop'><script>alert(1)</script>\u202e"])
def test_a_hostile_monitor_name_is_escaped(sqlite_engine, name):
    monitor = settings().model_copy(update={"name": name})
    store(sqlite_engine, stored_rows(monitor, WINDOW_END, COLUMNS))
    store_volume(sqlite_engine, monitor=name, hours=2, special={0: (240.0, 400.0, "critical")})
    page = report_of(sqlite_engine, monitor)
    part = volume_part(page)
    assert "data-windows='2'" in part
    assert "<img" not in page and "<script" not in page and "\u202e" not in page
    assert "aria-label='&lt;img src=x" in part or "aria-label='shop&#x27;&gt;&lt;script&gt;" in part
