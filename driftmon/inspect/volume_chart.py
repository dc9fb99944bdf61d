"""The report's "Volume" section: each window's rows against the reference's expected count.

Read from the stored health rows (``window_health``, driftmon/store/health_queries.py)
of the windows ending in the report's range, the same (start, end] as the columns'
history. The chart is drawn as the column charts are (``driftmon.inspect.report``:
matplotlib as inline SVG, text plain, one drawing at a time): rows as a line with a
point per window, the expected count dashed, and each warning or critical window
marked in its status's colour. A short text says how many windows there were and
how many alarmed, with the newest window's figures.

A monitor with no health rows in the range (or only rows of freshness, its volume
check off) gets one line saying so, not an empty chart. The monitor's name comes from
the configuration, but is escaped like any text (``html_parts.escape``); nothing else
shown comes from the data.
"""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
from matplotlib import dates
from matplotlib.figure import Figure
from sqlalchemy import Connection

from driftmon.config import MonitorSettings
from driftmon.inspect.html_parts import STATUS_COLOURS, badge, count, when
from driftmon.inspect.html_parts import escape as _e
from driftmon.store.health_queries import window_health_history
from driftmon.windows import TimeRange

ROWS_COLOUR, EXPECTED_COLOUR = "#1565c0", "#546e7a"
_ALARMS = ("warning", "critical")
OFF = "off"  # driftmon/window_health.py: a health row of freshness only
# window_health_history's end is exclusive, the report's inclusive: ask a second more (no window
# ends within a second of another; a second, not a microsecond, survives a column of whole seconds),
# then cut exactly.
_PAST_END = timedelta(seconds=1)


def load_volume(connection: Connection, monitor: str, span: TimeRange) -> list[dict]:
    """The monitor's health rows of the windows ending in (span.start, span.end], oldest first."""
    rows = window_health_history(connection, monitor, span.start, span.end + _PAST_END)
    return [row for row in rows if span.start < row["window_end"] <= span.end]


def volume_section(monitor: MonitorSettings, rows: list[dict], span: TimeRange) -> str:
    """The section's HTML: heading, summary and chart, or a one-line note where nothing is stored."""
    heading = "<h2 id='volume'>Volume <small>(rows per window)</small></h2>"
    # A monitor with ``volume: null`` still stores its freshness, as status "off" with 0 rows:
    # drawn, those would read as windows without a row.
    off = [r for r in rows if r["status"] == OFF]
    rows = [r for r in rows if r["status"] != OFF]
    if not rows:
        why = " (the volume check is off for this monitor)" if off or monitor.volume is None else ""
        return f"{heading}\n<p class='note volume'>No volume stored for this range{why}.</p>"
    label = f"{monitor.name}: rows per window against the expected rows"
    figure = (f"<figure class='volume' data-windows='{len(rows)}' role='img' aria-label='{_e(label)}'>"
              f"{_chart_svg(rows, span)}</figure>")
    return "\n".join((heading, _summary(rows), figure))


def _summary(rows: list[dict]) -> str:
    tally = {status: sum(r["status"] == status for r in rows) for status in (*_ALARMS, "insufficient_data")}
    latest = rows[-1]
    expected = "no expected count" if latest["expected"] is None else f"{count(round(latest['expected'], 1))} expected"
    change = "" if latest["change"] is None else f" ({100 * latest['change']:+.1f} %)"
    parts = [f"{len(rows):,} windows: {tally['warning']:,} warning, {tally['critical']:,} critical"
             + (f", {tally['insufficient_data']:,} without enough data" if tally["insufficient_data"] else ""),
             f"newest window (ending {_e(when(latest['window_end']))}): {count(latest['rows'])} rows, "
             f"{expected}{change} {badge(latest['status'])}"]
    if latest["threshold_warning"] is not None and latest["threshold_critical"] is not None:
        parts.append(f"thresholds ±{100 * latest['threshold_warning']:g} % warning, "
                     f"±{100 * latest['threshold_critical']:g} % critical, with the rate test")
    newest = max((r["newest_row_at"] for r in rows if r["newest_row_at"] is not None), default=None)
    if newest is not None:
        parts.append(f"newest row seen {_e(when(newest))}")
    return f"<p class='meta volume'>{' · '.join(parts)}</p>"


def _chart_svg(rows: list[dict], span: TimeRange) -> str:
    # The report's drawing helpers, imported here: report.py imports this module.
    from driftmon.inspect.report import _caption, _drawing, _inline_svg

    with _drawing():
        figure = Figure(figsize=(11.5, 2.4))
        axes = figure.add_axes((0.05, 0.17, 0.94, 0.73))
        _caption(axes, "rows per window (points) and expected rows (dashed); warning and critical windows marked")
        ends = [r["window_end"] for r in rows]
        axes.plot(ends, [r["rows"] for r in rows], color=ROWS_COLOUR, linewidth=0.9, marker="o", markersize=2.2,
                  label="rows")
        axes.plot(ends, [math.nan if r["expected"] is None else r["expected"] for r in rows],
                  color=EXPECTED_COLOUR, linewidth=0.9, linestyle="--", label="expected")
        for status in _ALARMS:
            marked = [r for r in rows if r["status"] == status]
            if marked:
                axes.scatter([r["window_end"] for r in marked], [r["rows"] for r in marked], s=26, zorder=3,
                             color=STATUS_COLOURS[status], edgecolors="white", linewidths=0.6, label=status)
        axes.set_ylim(bottom=0, top=_top(rows))
        axes.set_xlim(_shown(rows, span).start, span.end)
        axes.xaxis.set_major_formatter(dates.ConciseDateFormatter(axes.xaxis.get_major_locator()))
        axes.tick_params(labelsize=6.5)
        # Above the plot, right of the caption: inside, it would hide the points of a drop to 0.
        axes.legend(fontsize=7, frameon=False, loc="lower right", bbox_to_anchor=(1, 1), ncols=4,
                    borderaxespad=0.1)
        return _inline_svg(figure, "volume-")


def _top(rows: list[dict]) -> float:
    """A little room above the highest point, so none sits on the frame; 1 where every count is 0."""
    values = [r["rows"] for r in rows] + [r["expected"] for r in rows if r["expected"] is not None]
    highest = float(np.max(values)) if values else 0.0
    return highest * 1.12 if highest > 0 else 1.0


def _shown(rows: list[dict], span: TimeRange) -> TimeRange:
    """The range less its leading part before the first stored window, as the column charts show it."""
    earliest = rows[0]["window_start"]
    return TimeRange(earliest, span.end) if span.start < earliest < span.end else span
