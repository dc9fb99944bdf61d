"""The demo's and ``backfill``'s summary: which columns drifted and since when, over all
traffic and per segment.

Two tables from the backfilled windows of a monitor. The first is the whole
population, column by column (the segment mix is its ``segment`` row), as an
unsegmented monitor shows it, with the monitor's volume and multivariate
lines below it where it has them. The second is per segment: for each column, how many
segments are warning or critical in the latest window, the one that moved most
with its share of the traffic, and the first window in which any segment
alarmed. A column that is quiet over all traffic and alarms in a segment is
then named on a line of its own: the drift the whole population hides.

``summary`` is the demo's (its injected drift first); ``backfill_summary`` is
``driftmon backfill``'s, one such block per monitor. Every line goes through
``driftmon.textsafe.visible``: column names and errors come from the data.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from driftmon.commands.demo import DRIFTED_APP, SESSION_GROWTH
from driftmon.commands.outputs import multivariate_line, volume_line
from driftmon.outcomes import CRITICAL, INSUFFICIENT, WARNING, ColumnResult, RunOutcome
from driftmon.textsafe import visible

ALARMS = (WARNING, CRITICAL)
_SEVERITY = {CRITICAL: 2, WARNING: 1}


def summary(outcomes: list[RunOutcome], drift_at: datetime) -> str:
    """The demo's printed summary of its backfilled windows (of its one monitor)."""
    lines = [f"Injected drift at {drift_at:%Y-%m-%d %H:%M} UTC into amount, country, tenure and score;"
             " age is the control.",
             f"From the same hour, session_minutes grows x{SESSION_GROWTH:g} in app={DRIFTED_APP} alone "
             "(5 % of the traffic), a drift hidden over all traffic.", "",
             *monitor_summary(outcomes)]
    failed = sum(o.status != "ok" for o in outcomes)
    lines += ["", f"{len(outcomes)} windows backfilled, {failed} failed."]
    return "\n".join(visible(line) for line in lines)


def backfill_summary(outcomes: list[RunOutcome]) -> str:
    """``driftmon backfill``'s summary: per monitor (in the order they first ran), its windows
    and failures, then ``monitor_summary``; empty when no window was computed."""
    by_monitor: dict[str, list[RunOutcome]] = {}
    for outcome in outcomes:
        by_monitor.setdefault(outcome.monitor, []).append(outcome)
    lines = []
    for monitor, mine in by_monitor.items():
        ok = [o for o in mine if o.status == "ok"]
        heading = f"Monitor {monitor}: {len(mine)} window(s), {len(mine) - len(ok)} failed"
        if not ok:
            lines += [f"{heading}; no window computed (each failure is logged above).", ""]
            continue
        latest = max(o.window.end for o in ok)
        lines += [f"{heading}; the latest computed ends {_when(latest)}.", *monitor_summary(mine), ""]
    return "\n".join(visible(line) for line in lines[:-1])


def monitor_summary(outcomes: list[RunOutcome]) -> list[str]:
    """One monitor's windows: over all traffic, each column's status in the latest window and its
    first alarm, the volume and multivariate lines where it has them; then per segment."""
    runs = sorted((o for o in outcomes if o.status == "ok"), key=lambda o: o.window.end)
    latest = runs[-1].results if runs else []
    whole = [r for r in latest if not r.segment]
    lines = ["Over all traffic (latest window):", *whole_table(whole, first_alarms(runs)), *health_lines(runs)]
    segmented = [r for r in latest if r.segment]
    if segmented:
        lines += ["", *segment_table(whole, segmented, runs), *hidden_drifts(whole, segmented, runs)]
    return lines


def health_lines(runs: list[RunOutcome]) -> list[str]:
    """The latest window's volume (``__volume__``) and multivariate (``__multivariate__``) lines as
    run-once prints them, each with its first alarm; none for a monitor without them."""
    lines = []
    volumes = [o for o in runs if o.volume is not None]
    if volumes:
        first = next((o.window.end for o in volumes if o.volume.status in ALARMS), None)
        lines.append(f"{volume_line(volumes[-1])}; first alarm {_when(first)}")
    multivariate = [o.multivariate for o in runs if o.multivariate is not None]
    if multivariate:
        first = next((m.window.end for m in multivariate if m.status in ALARMS), None)
        lines.append(f"{multivariate_line(multivariate[-1])}; first alarm {_when(first)}")
    return ["", *lines] if lines else []


def first_alarms(runs: list[RunOutcome]) -> dict[str, datetime]:
    """Per column, the end of the first window in which the whole population was warning or critical."""
    first: dict[str, datetime] = {}
    for outcome in runs:
        for result in outcome.results:
            if not result.segment and result.status in ALARMS:
                first.setdefault(result.column, outcome.window.end)
    return first


def alarm_since(runs: list[RunOutcome], column: str, segment: str) -> datetime | None:
    """The first window of the latest unbroken run of warning or critical windows of one segment's column.

    Not its first alarm ever: with every (segment, column) pair tested in every window, a
    pair that never drifted is sometimes warning by chance (at most the false discovery
    rate, ``significance``, of a window's tests); a lasting drift alarms window after window.
    """
    since = None
    for outcome in reversed(runs):
        status = next((r.status for r in outcome.results if r.column == column and r.segment_key == segment), None)
        if status not in ALARMS:
            break
        since = outcome.window.end
    return since


def whole_table(results: list[ColumnResult], alarms: dict[str, datetime]) -> list[str]:
    lines = [f"{'column':<16} {'role':<11} {'status':<18} {'KL':>8} {'PSI':>8} {'JS':>8}  first alarm (window end)"]
    for result in results:
        lines.append(f"{result.column:<16} {result.role:<11} {result.status:<18} {_fmt(result.kl)} "
                     f"{_fmt(result.psi)} {_fmt(result.js)}  {_when(alarms.get(result.column))}")
    return lines


def segment_table(whole: list[ColumnResult], segmented: list[ColumnResult], runs: list[RunOutcome]) -> list[str]:
    """Per column: segments in alarm, the one that moved most with its traffic share, and since when."""
    by = ", ".join(segmented[0].segment)
    compared = {r.segment_key for r in segmented if r.status != INSUFFICIENT}
    lines = [f"Per segment of {by} (latest window, {len(compared)} segments compared):",
             f"{'column':<16} {'critical':>8} {'warning':>8}  {'most drifted segment':<22} {'share':>7} "
             f"{'KL':>8}  in alarm since (window end)"]
    for column, rows in _by_column(segmented).items():
        top = most_drifted(rows)
        counts = {status: sum(r.status == status for r in rows) for status in ALARMS}
        shown = (f"{top.segment_key:<22} {_share(top, whole):>7} {_fmt(top.kl)}" if top
                 else f"{'-':<22} {'-':>7} {'-':>8}")
        since = alarm_since(runs, column, top.segment_key) if top else None
        lines.append(f"{column:<16} {counts[CRITICAL]:>8} {counts[WARNING]:>8}  {shown}  "
                     f"{_when(since) if since else '-'}")
    return lines


def hidden_drifts(whole: list[ColumnResult], segmented: list[ColumnResult], runs: list[RunOutcome]) -> list[str]:
    """``session_minutes is ok over all traffic ... but critical in app=kiosk``: drift only a segment shows."""
    lines = []
    for column, rows in _by_column(segmented).items():
        pooled = next((r for r in whole if r.column == column), None)
        top = most_drifted(rows)
        if pooled is None or pooled.status in ALARMS or top is None or top.status not in ALARMS:
            continue
        lines.append(f"Only in a segment: {column} is {pooled.status} over all traffic (KL {pooled.kl:.4f}), "
                     f"{top.status} in {top.segment_key} ({_share(top, whole).strip()} of the traffic, "
                     f"KL {top.kl:.4f}) since {_when(alarm_since(runs, column, top.segment_key))}.")
    return ["", *lines] if lines else []


def most_drifted(rows: Iterable[ColumnResult]) -> ColumnResult | None:
    """The segment with the most severe status, then the largest statistic; None if none was compared."""
    compared = [r for r in rows if getattr(r, r.statistic) is not None]
    return max(compared, key=lambda r: (_SEVERITY.get(r.status, 0), getattr(r, r.statistic)), default=None)


def _by_column(results: list[ColumnResult]) -> dict[str, list[ColumnResult]]:
    grouped: dict[str, list[ColumnResult]] = {}
    for result in results:
        grouped.setdefault(result.column, []).append(result)
    return grouped


def _share(result: ColumnResult, whole: list[ColumnResult]) -> str:
    """The segment's rows in the window over all rows (samples count every row, missing values included)."""
    total = next((r.samples_current for r in whole if r.column == result.column), 0)
    return f"{100 * result.samples_current / total:5.1f} %" if total else "-"


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "never"


def _fmt(value: float | None) -> str:
    return f"{value:8.4f}" if value is not None else f"{'-':>8}"
