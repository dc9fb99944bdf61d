"""The demo's summary: which columns drifted and since when, over all traffic and per segment.

Two tables from the backfilled windows. The first is the whole population,
column by column (the segment mix is its ``segment`` row), as an unsegmented
monitor shows it. The second is per segment: for each column, how many
segments are warning or critical in the latest window, the one that moved most
with its share of the traffic, and the first window in which any segment
alarmed. A column that is quiet over all traffic and alarms in a segment is
then named on a line of its own: the drift the whole population hides.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from driftmon.commands.demo import DRIFTED_APP, SESSION_GROWTH
from driftmon.outcomes import CRITICAL, INSUFFICIENT, WARNING, ColumnResult, RunOutcome

ALARMS = (WARNING, CRITICAL)
_SEVERITY = {CRITICAL: 2, WARNING: 1}


def summary(outcomes: list[RunOutcome], drift_at: datetime) -> str:
    """The demo's printed summary of its backfilled windows."""
    runs = sorted((o for o in outcomes if o.status == "ok"), key=lambda o: o.window.end)
    latest = runs[-1].results if runs else []
    whole = [r for r in latest if not r.segment]
    lines = [f"Injected drift at {drift_at:%Y-%m-%d %H:%M} UTC into amount, country, tenure and score;"
             " age is the control.",
             f"From the same hour, session_minutes grows x{SESSION_GROWTH:g} in app={DRIFTED_APP} alone "
             "(5 % of the traffic), a drift hidden over all traffic.", "",
             "Over all traffic (latest window):", *whole_table(whole, first_alarms(runs))]
    segmented = [r for r in latest if r.segment]
    if segmented:
        lines += ["", *segment_table(whole, segmented, runs), *hidden_drifts(whole, segmented, runs)]
    failed = sum(o.status != "ok" for o in outcomes)
    lines += ["", f"{len(outcomes)} windows backfilled, {failed} failed."]
    return "\n".join(lines)


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
