"""The report's "Multivariate drift" section: the reconstruction error and the Gaussian KL per window.

Read from the stored ``multivariate_results`` (driftmon/store/multivariate_queries.py)
of the windows ending in the report's range, the same (start, end] as the columns'
history. Drawn as the Volume chart is (``driftmon.inspect.volume_chart``: matplotlib
as inline SVG, text plain, one drawing at a time), in two panels sharing the time axis:

- the reconstruction error as a line with a point per window, shaded ±3 sampling errors
  around it (as NannyML draws it), its lower and upper thresholds dashed, and each window
  whose error is outside its band (critical) marked in red;
- the Gaussian KL with its threshold dashed, each window whose KL is above it marked in
  orange (a warning, where the reconstruction error is within its band).

A short text says how many windows there were and how many alarmed, with the newest
window's figures and the columns that moved most in it (``driftmon explain`` has more).
A monitor without multivariate drift (not configured, nothing stored in the range)
gets no section; one configured but without results in the range gets one line.
Column names come from the config and are escaped like any text.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib import dates
from matplotlib.figure import Figure
from sqlalchemy import Connection

from driftmon.config import MonitorSettings
from driftmon.inspect.html_parts import STATUS_COLOURS, badge, count, when
from driftmon.inspect.html_parts import escape as _e
from driftmon.store.multivariate_queries import results_between
from driftmon.windows import TimeRange

ERROR_COLOUR, KL_COLOUR, THRESHOLD_COLOUR = "#1565c0", "#6a1b9a", "#546e7a"
SAMPLING_RANGE = 3  # the shaded band: ± this many sampling errors, as NannyML draws it


def load_multivariate(connection: Connection, monitor: MonitorSettings, span: TimeRange) -> list[dict] | None:
    """The monitor's stored results of the windows ending in (span.start, span.end], oldest first;
    None where the monitor has no multivariate drift (not configured, none stored in the range)."""
    rows = results_between(connection, monitor.name, span.start, span.end)
    return None if not rows and monitor.multivariate is None else rows


def multivariate_section(monitor: MonitorSettings, rows: list[dict], span: TimeRange) -> str:
    """The section's HTML: heading, summary and chart, or a one-line note where nothing is stored."""
    heading = "<h2 id='multivariate'>Multivariate drift <small>(drift between columns)</small></h2>"
    if not rows:
        return f"{heading}\n<p class='note multivariate'>No multivariate results stored for this range.</p>"
    label = f"{monitor.name}: reconstruction error with its band, and Gaussian KL with its threshold, per window"
    figure = (f"<figure class='multivariate' data-windows='{len(rows)}' role='img' aria-label='{_e(label)}'>"
              f"{_chart_svg(rows, span)}</figure>")
    return "\n".join((heading, _summary(rows), figure))


def _summary(rows: list[dict]) -> str:
    tally = {status: sum(r["status"] == status for r in rows) for status in ("warning", "critical")}
    latest = rows[-1]
    windows = f"{len(rows):,} window{'' if len(rows) == 1 else 's'}"
    parts = [f"{windows}: {tally['warning']:,} warning (Gaussian KL above its threshold), "
             f"{tally['critical']:,} critical (reconstruction error outside its band)",
             f"newest window (ending {_e(when(latest['window_end']))}, {count(latest['rows'])} rows): "
             f"reconstruction error {_g(latest['reconstruction_error'])} ± {_g(latest['sampling_error'])}, "
             f"band [{_g(latest['threshold_lower'])}, {_g(latest['threshold_upper'])}]; Gaussian KL "
             f"{_g(latest['gaussian_kl'])}, threshold {_g(latest['gaussian_kl_threshold'])} {badge(latest['status'])}"]
    contributions = latest["contributions"] or {}
    grown = ", ".join(_e(column) for column, *_ in contributions.get("residuals", []))
    kl = ", ".join(_e(column) for column, *_ in contributions.get("gaussian_kl", []))
    if grown or kl:
        parts.append(f"residuals moved most in {grown or '–'}; most of the KL from {kl or '–'}")
    return f"<p class='meta multivariate'>{' · '.join(parts)}</p>"


def _chart_svg(rows: list[dict], span: TimeRange) -> str:
    # The report's drawing helpers, imported here: report.py imports this module.
    from driftmon.inspect.report import _caption, _drawing, _inline_svg

    ends = [r["window_end"] for r in rows]
    with _drawing():
        figure = Figure(figsize=(11.5, 4.2))
        error = figure.add_axes((0.05, 0.56, 0.94, 0.36))
        kl = figure.add_axes((0.05, 0.1, 0.94, 0.36), sharex=error)
        _caption(error, "reconstruction error per window")
        values = _values(rows, "reconstruction_error")
        spread = SAMPLING_RANGE * _values(rows, "sampling_error")
        error.fill_between(ends, values - spread, values + spread, color=ERROR_COLOUR, alpha=0.15, linewidth=0,
                           label=f"±{SAMPLING_RANGE} sampling errors")
        error.plot(ends, values, color=ERROR_COLOUR, linewidth=0.9, marker="o", markersize=2.2,
                   label="reconstruction error")
        lower, upper = _values(rows, "threshold_lower"), _values(rows, "threshold_upper")
        for bound, name in ((upper, "band (lower, upper)"), (lower, None)):
            error.plot(ends, bound, color=THRESHOLD_COLOUR, linewidth=0.9, linestyle="--", drawstyle="steps-pre",
                       label=name)
        _mark(error, ends, values, (values < lower) | (values > upper), "critical", "outside its band")
        _caption(kl, "Gaussian KL per window (nats)")
        kls, threshold = _values(rows, "gaussian_kl"), _values(rows, "gaussian_kl_threshold")
        kl.plot(ends, kls, color=KL_COLOUR, linewidth=0.9, marker="o", markersize=2.2, label="Gaussian KL")
        kl.plot(ends, threshold, color=THRESHOLD_COLOUR, linewidth=0.9, linestyle="--", drawstyle="steps-pre",
                label="threshold")
        _mark(kl, ends, kls, kls > threshold, "warning", "above its threshold")
        kl.set_ylim(bottom=0)
        error.set_xlim(_shown(rows, span).start, span.end)
        error.tick_params(labelbottom=False, labelsize=6.5)
        kl.xaxis.set_major_formatter(dates.ConciseDateFormatter(kl.xaxis.get_major_locator()))
        kl.tick_params(labelsize=6.5)
        for axes in (error, kl):
            # Above the plot, right of the caption: inside, it would hide points.
            axes.legend(fontsize=7, frameon=False, loc="lower right", bbox_to_anchor=(1, 1), ncols=5,
                        borderaxespad=0.1)
        return _inline_svg(figure, "multivariate-")


def _mark(axes, ends: list, values: np.ndarray, flagged: np.ndarray, status: str, label: str) -> None:
    """The flagged windows' points, in ``status``'s colour (a comparison with NaN is never flagged)."""
    if flagged.any():
        axes.scatter([end for end, flag in zip(ends, flagged, strict=True) if flag], values[flagged], s=26,
                     zorder=3, color=STATUS_COLOURS[status], edgecolors="white", linewidths=0.6, label=label)


def _values(rows: list[dict], key: str) -> np.ndarray:
    """The rows' ``key`` as floats, NaN (a gap in the line) where not stored."""
    return np.array([math.nan if r[key] is None else r[key] for r in rows], dtype=float)


def _shown(rows: list[dict], span: TimeRange) -> TimeRange:
    """The range less its leading part before the first stored window, as the other charts show it."""
    earliest = rows[0]["window_start"]
    return TimeRange(earliest, span.end) if span.start < earliest < span.end else span


def _g(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"
