"""The drift report: one self-contained HTML page per monitor (`driftmon report`, GET /report).

Read from the results database only. The page has a summary table of the chosen
window's columns, then per column the reference and current shares of each bin
as bars (the bins that moved most marked, by their PSI term: see
``driftmon.inspect.explain``) and the statistic over the range with its
warning and critical lines above a strip coloured by each window's status.

Charts are matplotlib figures written as inline SVG (text kept as text, unused
ids dropped), the styles are inline and a Content-Security-Policy forbids every
fetch: the file opens offline, in any browser, and can be mailed.

Labels and column names come from the data. Every text is drawn as plain text
(never math text or TeX: a category ``$x^$`` made matplotlib raise) and shown
through ``driftmon.textsafe.visible`` and ``html.escape``.

Charts are bounded: at most ``MAX_CHARTS`` columns get one, those that drifted
most (worst status, then largest statistic); the others are listed in a table,
and the page says how many it shows. Only the charted columns' history is read.

A segmented monitor's page also has a segments × columns heat map below the
summary and a section per segment at its end (``driftmon.inspect.segment_report``);
an unsegmented monitor's page is as it was. Below the summary, a Volume section charts
each window's rows against the expected rows (``driftmon.inspect.volume_chart``); below it,
for a monitor with multivariate drift, a section charts the reconstruction error and the
Gaussian KL with their thresholds (``driftmon.inspect.multivariate_chart``).
"""

from __future__ import annotations

import heapq
import io
import re
import threading
import urllib.parse
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import matplotlib
import numpy as np
from matplotlib import dates
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from sqlalchemy import Connection, Engine

from driftmon.config import MonitorSettings
from driftmon.errors import ConfigError
from driftmon.inspect import multivariate_chart, segment_report, volume_chart
from driftmon.inspect.explain import ColumnExplanation, WindowExplanation, load_explanation
from driftmon.inspect.html_parts import (
    SEVERITY,
    STATUS_COLOURS,
    badge,
    count,
    drift_key,
    moved_label,
    number,
    probability,
    term_text,
    when,
)
from driftmon.inspect.html_parts import escape as _e
from driftmon.inspect.labels import AXIS_CUT
from driftmon.store.repository import Repository
from driftmon.windows import TimeRange

DEFAULT_SPAN = timedelta(days=7)
TOP_MARKED = 3
# Columns that get charts (README, "The report"): a chart takes 0.1-0.2 s to draw. A week of
# 10,000 columns took over 150 s with a chart each; with 50, about 12 s (most of it the charts).
MAX_CHARTS = 50
_REFERENCE_COLOUR, _CURRENT_COLOUR, _LINE_COLOUR = "#90a4ae", "#1565c0", "#263238"
# Tick labels: their size in points, a character's estimated width and a line's height in ems
# (DejaVu Sans averages about 0.6 em a character; estimated generously), the tick and its pad.
TICK_SIZE, CHAR_EM, LINE_EM = 6.5, 0.7, 1.3
_TICK_PAD = 3.5 + 3.5 + 3.0
_PLOT_HEIGHT = 0.65 * 2.9  # inches: the plots' height, whatever the labels below them take
_TOP_BAND = 0.08 * 2.9 * 72  # points above the plots: the captions
_MIN_BAND, _DATE_BAND = 24.0, 36.0  # points below the plots at least: a line of labels; dates and their offset
_STRIP_PIXELS = 1500  # the status strip's resolution; windows sharing a pixel show the worst
# matplotlib's global settings are not thread-safe: the daemon's handler threads take turns.
_RENDER_LOCK = threading.Lock()
# Text stays plain: no math text (a "$x^$" label raised) and no TeX, whatever the user's matplotlibrc.
_SVG_SETTINGS = {"svg.fonttype": "none", "svg.hashsalt": "driftmon", "font.size": 8,
                 "axes.spines.top": False, "axes.spines.right": False,
                 "text.usetex": False, "text.parse_math": False}
_ALARMS = ("warning", "critical")


# --- loading --------------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    """One column's windows in the report's range: how many, how many in warning or critical,
    and the earliest one's start (where the time axis begins)."""

    windows: int
    alarms: int
    earliest: datetime


def build_report(connection: Connection, monitor: MonitorSettings, start: datetime | None = None,
                 end: datetime | None = None, repository: Repository | None = None,
                 back_link: str | None = None, dtype: str = "float64", charts: int = MAX_CHARTS) -> str:
    """The report of the newest window ending at or before ``end`` (default: the newest stored),
    with the statistics of the windows ending in (start, end] (default: the 7 days before end).

    Reads the history of the ``charts`` columns that get a chart only; the other columns'
    windows are counted in the database (a week of 10,000 columns is 1.7 million rows).
    """
    repository = repository or Repository()
    explanation = load_explanation(connection, monitor, end, repository=repository, dtype=dtype)
    span_end = end or (explanation.window.end if explanation else datetime.now(UTC))
    span_start = start if start is not None else span_end - DEFAULT_SPAN
    if span_start >= span_end:
        raise ConfigError(f"--start ({span_start.isoformat()}) is not before the newest stored window's "
                          f"end ({span_end.isoformat()})")
    span = TimeRange(span_start, span_end)
    if explanation is None:
        return render_report(monitor, None, [], span, back_link=back_link, charts=charts)
    charted = [explanation.columns[i].column for i in most_drifted(explanation.columns, charts)]
    history = repository.result_history(connection, monitor.name, span, charted)
    tallies = {column: Tally(windows, alarmed, earliest) for column, windows, alarmed, earliest
               in repository.result_tallies(connection, monitor.name, span, _ALARMS)}
    segments = None if monitor.segments is None else segment_report.load_segment_view(
        connection, monitor, explanation, repository, dtype)
    return render_report(monitor, explanation, history, span, back_link=back_link, charts=charts, tallies=tallies,
                         segments=segments, volume=volume_chart.load_volume(connection, monitor.name, span),
                         multivariate=multivariate_chart.load_multivariate(connection, monitor, span))


def most_drifted(columns: Sequence[ColumnExplanation], limit: int) -> list[int]:
    """The positions of the ``limit`` columns that drifted most, in the columns' order: the worst
    status first, then the largest statistic (a column without one last); ties by position."""
    def drift(position: int) -> tuple[int, float, int]:
        return (*drift_key(columns[position].status, columns[position].value), position)

    return sorted(heapq.nsmallest(max(limit, 0), range(len(columns)), key=drift))


def _tally_history(history: Sequence[dict]) -> dict[str, Tally]:
    """``_tallies`` of result rows at hand."""
    return {column: Tally(len(rows), sum(r["status"] in _ALARMS for r in rows), min(r["window_start"] for r in rows))
            for column, rows in _history_by_column(history).items()}


# --- the page ---------------------------------------------------------------------------


def render_report(monitor: MonitorSettings, explanation: WindowExplanation | None, history: list[dict],
                  span: TimeRange, *, top: int = TOP_MARKED, back_link: str | None = None,
                  generated_at: datetime | None = None, charts: int = MAX_CHARTS,
                  tallies: dict[str, Tally] | None = None,
                  segments: segment_report.SegmentView | None = None, volume: list[dict] | None = None,
                  multivariate: list[dict] | None = None) -> str:
    """The whole HTML page as text.

    ``history``: the stored results of the range (those of the charted columns suffice);
    ``tallies``: every column's windows in the range (default: counted from ``history``);
    ``segments``: a segmented monitor's segments of the window (the heat map and drill-downs);
    ``volume``: the range's stored window health rows (None: no volume section);
    ``multivariate``: the range's stored multivariate results (None: no multivariate section).
    """
    generated_at = generated_at or datetime.now(UTC)
    title = f"driftmon report: {monitor.name}"
    body = [f"<h1>{_e(title)}</h1>", _header(monitor, explanation, span, generated_at, back_link)]
    if explanation is None:
        body.append("<p class='note'>No stored results for this monitor in this range yet.</p>")
        return _page(title, "\n".join(body))
    tallies = _tally_history(history) if tallies is None else tallies
    by_column = _history_by_column(history)
    charted = most_drifted(explanation.columns, charts)
    others = sorted(set(range(len(explanation.columns))) - set(charted))
    if others:
        body.append(_bound_note(len(charted), len(explanation.columns)))
    body.append(_column_table(explanation, charted, tallies, charted=True))
    if segments is not None:
        body.append(segment_report.heat_map(segments, explanation))
    if volume is not None:
        body.append(volume_chart.volume_section(monitor, volume, span))
    if multivariate is not None:
        body.append(multivariate_chart.multivariate_section(monitor, multivariate, span))
    shown = _shown_range(tallies, span)
    with _drawing():
        body += [_column_section(i, explanation.columns[i], by_column.get(explanation.columns[i].column, []),
                                 shown, top) for i in charted]
    if others:
        body.append(_column_table(explanation, others, tallies, charted=False))
    if segments is None:
        return _page(title, "\n".join(body))
    body.append(segment_report.drill_downs(segments))
    return _page(title, "\n".join(body), _CSS + segment_report.CSS)


def render_window(monitor: MonitorSettings, explanation: WindowExplanation, *, title: str, caption: str,
                  rows: list[dict], top: int = TOP_MARKED, charts: int = MAX_CHARTS) -> str:
    """One window without a history (``driftmon.compare``'s inline view, driftmon/api/comparison.py):
    the summary table and each charted column's bars, as ``render_report`` draws them; ``rows``: the
    window's result rows (their statuses fill the table's "alarms in range")."""
    body = [f"<h1>{_e(title)}</h1>", f"<p class='meta'>{_e(caption)}</p>"]
    charted = most_drifted(explanation.columns, charts)
    others = sorted(set(range(len(explanation.columns))) - set(charted))
    if others:
        body.append(_bound_note(len(charted), len(explanation.columns)))
    tallies = _tally_history(rows)
    body.append(_column_table(explanation, charted, tallies, charted=True))
    with _drawing():
        body += [_column_section(i, explanation.columns[i], None, None, top) for i in charted]
    if others:
        body.append(_column_table(explanation, others, tallies, charted=False))
    return _page(title, "\n".join(body))


def _bound_note(charted: int, columns: int) -> str:
    return (f"<p class='note bound'>showing the {charted:,} most drifted of {columns:,} columns (worst status "
            f"first, then the largest statistic); the other {columns - charted:,} are listed "
            "<a href='#other-columns'>after the charts</a>, without charts.</p>")


@contextmanager
def _drawing() -> Iterator[None]:
    """Where charts are drawn: one at a time, every text plain, no warning about glyphs."""
    # matplotlib's settings are global: the daemon's handler threads take turns. The SVG keeps
    # its text as text (the browser draws it in its own fonts; DejaVu only measures it), so
    # a category in a script DejaVu lacks is no reason to warn on every report.
    with _RENDER_LOCK, matplotlib.rc_context(_SVG_SETTINGS), warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Glyph \d+ .* missing from font", UserWarning)
        yield


def _shown_range(tallies: dict[str, Tally], span: TimeRange) -> TimeRange:
    """The time axis: the range asked for, less its leading part without any stored window."""
    if not tallies:
        return span
    earliest = min(tally.earliest for tally in tallies.values())
    return TimeRange(earliest, span.end) if span.start < earliest < span.end else span


def _page(title: str, body: str, css: str | None = None) -> str:
    # No fetch of any kind: styles are inline, images are data: URIs inside the SVGs.
    policy = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<meta http-equiv='Content-Security-Policy' content=\"{policy}\">\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        "<link rel='icon' href='data:,'>\n"
        f"<title>{_e(title)}</title>\n<style>{css or _CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:1.5rem auto;
max-width:1200px;padding:0 1rem;color:#212121}
h1{font-size:1.4rem;margin:0 0 .3rem}h2{font-size:1.1rem;margin:1.6rem 0 .3rem}
.meta{color:#555;margin:.2rem 0 1rem}.meta a{color:#1565c0}
table{border-collapse:collapse;font-size:.85rem}th,td{padding:.25rem .6rem;border-bottom:1px solid #e0e0e0;
text-align:right;white-space:nowrap}th{background:#f5f5f5}td:first-child,th:first-child,td.text{text-align:left}
.status{display:inline-block;padding:0 .45rem;border-radius:.6rem;color:#fff;font-size:.8rem}
.note{color:#6d4c41;font-size:.85rem}.scroll{overflow-x:auto}
figure{margin:.3rem 0}figure svg{width:100%;height:auto}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .2rem 0 .8rem;vertical-align:middle}
"""


def _header(monitor: MonitorSettings, explanation: WindowExplanation | None, span: TimeRange,
            generated_at: datetime, back_link: str | None) -> str:
    parts = []
    if explanation is not None:
        parts.append(f"window {_e(when(explanation.window.start))} – {_e(when(explanation.window.end))}, "
                     f"reference {_e(when(explanation.reference.start))} – "
                     f"{_e(when(explanation.reference.end))}")
    smoothing = monitor.smoothing
    setting = f"alpha {smoothing.alpha:g}" if smoothing.method == "pseudocount" else f"epsilon {smoothing.epsilon:g}"
    parts += [f"history {_e(when(span.start))} – {_e(when(span.end))}",
              f"smoothing {_e(smoothing.method)} ({setting}), KL direction {_e(monitor.kl_direction)}",
              f"generated {_e(when(generated_at))}"]
    if back_link:
        parts.append(f"<a href='{_e(back_link)}'>all monitors</a>")
    legend = "".join(f"<span style='background:{colour}'></span>{_e(status)}"
                     for status, colour in STATUS_COLOURS.items())
    return f"<p class='meta'>{' · '.join(parts)}</p>\n<p class='meta legend'>status:{legend}</p>"


_TABLE_HEADER = ("column", "role", "status", "statistic", "value", "warning", "critical", "p-value", "q-value",
                 "samples (ref / cur)", "moved most", "alarms in range")


def _column_table(explanation: WindowExplanation, positions: Sequence[int], tallies: dict[str, Tally], *,
                  charted: bool) -> str:
    """The summary of the charted columns (each linked to its chart), or the list of the others."""
    rows = ["<tr>" + "".join(f"<th>{_e(h)}</th>" for h in _TABLE_HEADER) + "</tr>"]
    rows += [_column_row(i, explanation.columns[i], tallies.get(explanation.columns[i].column), charted)
             for i in positions]
    # Wider than the page (long bin labels), the table scrolls in its own box, not the page.
    heading = ("<h2>Summary</h2>\n<div class='scroll'><table class='summary'>" if charted else
               "<h2 id='other-columns'>Other columns (no charts)</h2>\n<div class='scroll'><table class='others'>")
    return heading + "\n" + "\n".join(rows) + "\n</table></div>"


def _column_row(index: int, column: ColumnExplanation, tally: Tally | None, linked: bool) -> str:
    top = column.ranked[0] if column.bins and column.ranked[0].psi_term is not None else None
    name = f"<a href='#column-{index}'>{_e(column.column)}</a>" if linked else _e(column.column)
    cells = [
        name, _e(column.role), badge(column.status),
        _e(column.statistic), number(column.value), f"{column.threshold_warning:g}",
        f"{column.threshold_critical:g}", probability(column.p_value), probability(column.q_value),
        f"{count(column.samples_reference)} / {count(column.samples_current)}",
        _e(moved_label(column, top)) + _e(term_text(top, column.contributions_of)) if top else "–",
        f"{tally.alarms} of {tally.windows}" if tally else "0 of 0",
    ]
    return "<tr>" + "".join(f"<td class='text'>{c}</td>" if k in (1, 10) else f"<td>{c}</td>"
                            for k, c in enumerate(cells)) + "</tr>"


def _column_section(index: int, column: ColumnExplanation, history: list[dict] | None, span: TimeRange | None,
                    top: int) -> str:
    """A column's heading and chart: its bars, and its statistic over ``span`` unless ``history`` is None."""
    heading = (f"<h2 id='column-{index}'>{_e(column.column)} <small>({_e(column.role)})</small> "
               f"{badge(column.status)}</h2>")
    note = f"<p class='note'>{_e(column.note)}</p>" if column.note else ""
    if history is None or span is None:
        svg, label = _bars_svg(column, top, prefix=f"c{index}-"), f"{column.column}: reference vs current shares"
    else:
        svg = _figure_svg(column, history, span, top, prefix=f"c{index}-")
        label = f"{column.column}: reference vs current shares, and {column.statistic} over time"
    figure = (f"<figure class='chart' data-column='{_e(column.column)}' role='img' aria-label='{_e(label)}'>"
              f"{svg}</figure>")
    return "\n".join(part for part in (heading, note, figure) if part)


# --- charts -----------------------------------------------------------------------------


def _figure_svg(column: ColumnExplanation, history: list[dict], span: TimeRange, top: int,
                prefix: str) -> str:
    # Fixed margins: constrained layout took half of the rendering time. The band below the
    # plots is as tall as the bars' tick labels need (and the time axis's dates, two lines).
    figure = Figure(figsize=(11.5, 2.9))
    grid = figure.add_gridspec(2, 2, width_ratios=(1, 1.25), height_ratios=(12, 1), left=0.05, right=0.98,
                               wspace=0.1, hspace=0.12)
    bars = figure.add_subplot(grid[:, 0])
    band = max(_bars(bars, column, top, _width_points(figure, bars)), _DATE_BAND)
    height = _PLOT_HEIGHT + (_TOP_BAND + band) / 72
    figure.set_size_inches(11.5, height)
    grid.update(bottom=band / 72 / height, top=1 - _TOP_BAND / 72 / height)
    bars.set_position(grid[:, 0].get_position(figure))  # update() moves pyplot's figures' axes only
    line = figure.add_subplot(grid[0, 1])
    strip = figure.add_subplot(grid[1, 1], sharex=line)
    _timeline(line, strip, column, history, span)
    return _inline_svg(figure, prefix)


def _bars_svg(column: ColumnExplanation, top: int, prefix: str) -> str:
    figure = Figure(figsize=(6.5, 2.9))
    axes = figure.add_axes((0.09, 0.27, 0.9, 0.65))
    band = max(_bars(axes, column, top, _width_points(figure, axes)), _MIN_BAND)
    height = _PLOT_HEIGHT + (_TOP_BAND + band) / 72
    figure.set_size_inches(6.5, height)
    axes.set_position((0.09, band / 72 / height, 0.9, _PLOT_HEIGHT / height))
    return _inline_svg(figure, prefix)


def _width_points(figure: Figure, axes) -> float:
    return axes.get_position().width * figure.get_figwidth() * 72


def _bars(axes, column: ColumnExplanation, top: int, width: float) -> float:
    """The bars of ``column`` on ``axes`` (``width`` points wide); returns the height in points
    that its tick labels take below the axes."""
    _caption(axes, "reference vs current (smoothed shares)")
    bins = [b for b in column.bins if b.reference_share is not None]
    if not bins:
        axes.text(0.5, 0.5, "no bins stored for this window", ha="center", va="center",
                  transform=axes.transAxes, color="#6d4c41")
        axes.set_axis_off()
        return 0.0
    marked = marked_bins(column, top)
    x = np.arange(len(bins))
    reference = [b.reference_share for b in bins]
    current = [b.current_share for b in bins]
    axes.bar(x - 0.2, reference, 0.4, color=_REFERENCE_COLOUR, label="reference")
    axes.bar(x + 0.2, current, 0.4, color=_CURRENT_COLOUR, label="current")
    for position, item in zip(x, bins, strict=True):
        if item.label in marked:
            height = max(item.reference_share, item.current_share)
            axes.annotate(f"#{marked[item.label]}", (position, height), xytext=(0, 2), textcoords="offset points",
                          ha="center", va="bottom", fontsize=7, fontweight="bold", color="#c62828")
    axes.set_xlim(-0.6, len(bins) - 0.4)  # one bin per len(bins)-th of the width
    texts = column.label_texts(AXIS_CUT)
    layout = tick_layout([texts[b.label] for b in bins], width, [i for i, b in enumerate(bins) if b.label in marked])
    shown = layout.positions
    axes.set_xticks(x, minor=True)
    axes.set_xticks(shown, [texts[bins[i].label] for i in shown], rotation=layout.rotation,
                    ha="center", va="top", fontsize=TICK_SIZE)
    for tick, i in zip(axes.get_xticklabels(), shown, strict=True):
        # Plain text whatever the rc settings say (``_drawing`` sets them too): the labels are data.
        tick.set_usetex(False)
        tick.set_parse_math(False)
        if bins[i].label in marked:
            tick.set_fontweight("bold")
    axes.margins(y=0.15)
    axes.legend(fontsize=7, frameon=False, title="#n: moved most (PSI term)", title_fontsize=6.5)
    return layout.band


@dataclass(frozen=True)
class TickLayout:
    """Which bins' labels an axis shows, turned how, and the points they take below it."""

    positions: list[int]
    rotation: int
    band: float


def tick_layout(texts: Sequence[str], width: float, first: Sequence[int] = ()) -> TickLayout:
    """Tick labels of ``len(texts)`` bins evenly over ``width`` points that neither overlap nor leave the figure.

    Level when every label fits its bin's width; otherwise upright (rotated 90°), and where
    bins are narrower than a line of text, thinned: the bins of ``first`` (the marked ones),
    then the others from the left, each shown only if a line's height from every shown one.
    Widths are estimated (``CHAR_EM`` ems a character): no font is measured.
    """
    spacing = width / max(len(texts), 1)
    widths = [len(text) * CHAR_EM * TICK_SIZE for text in texts]
    if max(widths, default=0.0) <= 0.9 * spacing:
        return TickLayout(list(range(len(texts))), 0, _TICK_PAD + LINE_EM * TICK_SIZE)
    gap = LINE_EM * TICK_SIZE / spacing  # in bins
    shown: list[int] = []
    for i in [*first, *range(len(texts))]:
        if all(abs(i - j) >= gap for j in shown):
            shown.append(i)
    shown.sort()
    return TickLayout(shown, 90, _TICK_PAD + max(widths[i] for i in shown))


def marked_bins(column: ColumnExplanation, top: int) -> dict[str, int]:
    """The labels of the ``top`` bins that moved most (by PSI term, whichever window gained), with their rank."""
    return {b.label: rank for rank, b in enumerate(column.top(top), start=1) if b.psi_term is not None}


def _timeline(line, strip, column: ColumnExplanation, history: list[dict], span: TimeRange) -> None:
    _caption(line, f"{column.statistic} per window")
    ends = [r["window_end"] for r in history]
    values = [np.nan if r[column.statistic] is None else r[column.statistic] for r in history]
    line.plot(ends, values, color=_LINE_COLOUR, linewidth=0.9)
    line.axhline(column.threshold_warning, color=STATUS_COLOURS["warning"], linestyle="--", linewidth=0.9,
                 label=f"warning {column.threshold_warning:g}")
    line.axhline(column.threshold_critical, color=STATUS_COLOURS["critical"], linestyle="--", linewidth=0.9,
                 label=f"critical {column.threshold_critical:g}")
    line.set_ylim(bottom=0)
    line.legend(fontsize=7, frameon=False, loc="upper left")
    line.tick_params(labelbottom=False)
    strip.imshow(_status_pixels(history, span), aspect="auto", interpolation="nearest",
                 extent=(dates.date2num(span.start), dates.date2num(span.end), 0, 1))
    strip.set_yticks([])
    strip.set_xlim(span.start, span.end)
    strip.xaxis.set_major_formatter(dates.ConciseDateFormatter(strip.xaxis.get_major_locator()))
    strip.tick_params(axis="x", labelsize=6.5)


def _caption(axes, text: str) -> None:
    # Not set_title: placing a title measures the whole axes, a fifth of the rendering time.
    axes.text(0, 1.03, text, transform=axes.transAxes, fontsize=8, ha="left", va="bottom")


def _status_pixels(history: list[dict], span: TimeRange) -> np.ndarray:
    """A 1 x P RGBA strip: each window's status painted from the previous window's end to its own
    (where windows overlap, a pixel shows the worst status); gaps in the history stay clear."""
    severity = np.full(_STRIP_PIXELS, -1)
    worst: dict[datetime, int] = {}
    for row in history:
        worst[row["window_end"]] = max(worst.get(row["window_end"], -1), SEVERITY.index(row["status"]))
    ends = sorted(worst)
    steps = np.diff([end.timestamp() for end in ends])
    usual = timedelta(seconds=float(np.median(steps))) if len(steps) else timedelta(0)
    for previous, end in zip([None, *ends], ends, strict=False):
        start = end - usual if previous is None or end - previous > 3 * usual else previous
        low, high = _pixel(start, span), _pixel(end, span)
        severity[low:high + 1] = np.maximum(severity[low:high + 1], worst[end])
    palette = np.array([to_rgba(STATUS_COLOURS[s]) for s in SEVERITY] + [(0, 0, 0, 0)])
    return palette[severity][np.newaxis, :, :]


def _pixel(moment: datetime, span: TimeRange) -> int:
    share = (moment - span.start) / (span.end - span.start)
    return int(np.clip(share * _STRIP_PIXELS, 0, _STRIP_PIXELS - 1))


def _inline_svg(figure: Figure, prefix: str) -> str:
    """The figure as an <svg> element fit for inlining: no prolog or metadata, unused ids
    dropped and the others made unique, path coordinates to a tenth of a point."""
    buffer = io.StringIO()
    FigureCanvasSVG(figure).print_svg(buffer, metadata={"Date": None, "Creator": None, "Format": None,
                                                         "Type": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    referenced = {m for tag in _TAG.findall(svg) for m in re.findall(r"(?:url\(#|href=\"#)([^)\"]+)", tag)}
    svg = _in_tags(svg, r' id="([^"]+)"', lambda m: f' id="{prefix}{m[1]}"' if m[1] in referenced else "")
    svg = _in_tags(svg, r'(url\(#|href="#)', lambda m: f"{m[1]}{prefix}")
    svg = _in_tags(svg, r' d="([^"]*)"', lambda m: f' d="{_short_path(m[1])}"')
    return re.sub(r"\n\s*", "\n", svg).strip()


# A tag of matplotlib's SVG. Text (a label) is element content, where matplotlib escapes "<" and
# ">", so it is never inside one: rewriting tags only leaves a label such as ' d="1x"' alone.
_TAG = re.compile(r"<[^<>]*>")


def _in_tags(svg: str, pattern: str, replace: Callable[[re.Match], str]) -> str:
    """``re.sub(pattern, replace)`` applied inside the SVG's tags, never to its text."""
    return _TAG.sub(lambda tag: re.sub(pattern, replace, tag[0]), svg)


def _short_path(data: str) -> str:
    # A tenth of a point is below a screen pixel; a lineto right after a moveto or a lineto
    # needs no letter (SVG repeats the previous command, a moveto's as lineto).
    tokens, previous = [], None
    for token in data.split():
        if token.isalpha():
            if not (token == "L" and previous in ("M", "L")):
                tokens.append(token)
            previous = token
        else:
            tokens.append(f"{float(token):.1f}".removesuffix(".0"))
    return " ".join(tokens)


# --- formatting ------------------------------------------------------------------------


def _history_by_column(history: Sequence[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in history:
        grouped.setdefault(row["column"], []).append(row)
    return grouped


# --- the daemon's pages ------------------------------------------------------------------


class ReportPages:
    """GET /report and /report/<monitor>: read-only, from the results database.

    Only configured monitor names are pages (anything else is None, a 404); a
    page is rendered again only once a newer window is stored.
    """

    def __init__(self, monitors: Sequence[MonitorSettings], results: Engine,
                 repository: Repository | None = None, dtype: str = "float64"):
        self.monitors = {m.name: m for m in monitors}
        self.dtype = dtype
        self.results = results
        self.repository = repository or Repository()
        self._cache: dict[str, tuple[datetime | None, str]] = {}
        self._lock = threading.Lock()

    def page(self, name: str) -> str | None:
        monitor = self.monitors.get(name)
        if monitor is None:
            return None
        with self.results.connect() as connection:
            newest = self.repository.latest_window_end(connection, name)
            cached = self._cache.get(name)
            if cached is not None and cached[0] == newest:
                return cached[1]
            page = build_report(connection, monitor, repository=self.repository, back_link="../report",
                                dtype=self.dtype)
        with self._lock:
            self._cache[name] = (newest, page)
        return page

    def index(self, link_prefix: str = "report/") -> str:
        """Every configured monitor with its current status (the worst of its latest columns)."""
        with self.results.connect() as connection:
            latest = self.repository.latest_results(connection)
        rows = ["<tr><th>monitor</th><th>status</th><th>latest window end</th><th>columns</th></tr>"]
        for name in self.monitors:
            mine = [r for r in latest if r["monitor"] == name]
            status = max((r["status"] for r in mine), key=SEVERITY.index, default=None)
            newest = max((r["window_end"] for r in mine), default=None)
            link = f"{link_prefix}{urllib.parse.quote(name, safe='')}"
            rows.append(f"<tr><td><a href='{_e(link)}'>{_e(name)}</a></td>"
                        f"<td>{badge(status) if status else 'no results yet'}</td>"
                        f"<td>{_e(when(newest)) if newest else '–'}</td><td>{len(mine)}</td></tr>")
        table = "<table>\n" + "\n".join(rows) + "\n</table>"
        return _page("driftmon reports", f"<h1>driftmon reports</h1>\n{table}")
