"""A segmented monitor's stored window, per segment (`driftmon explain`, the report).

Two questions, both answered from the results database alone:

- Which segments drove a column? Per column, its rows of every segment, ranked
  by how much the segment moved: the column's statistic (the one its status is
  judged on), largest first; ``insufficient_data`` rows last, since a statistic
  on too few rows says nothing. Each carries its traffic share: the segment's
  rows over the whole population's rows of the same window (current and
  reference), the shares of the stored segment mix.
- What moved inside one segment? ``--segment country=DE`` explains that
  segment's rows exactly as ``driftmon.inspect.explain`` does the whole
  population's: the same bins (segments are counted in the whole population's
  bins), the same engine terms.

Segment keys and values come from the data: the table shows them through
``driftmon.textsafe.visible`` (``explain.as_table``), the JSON exactly as stored.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import Connection

from driftmon.config import MonitorSettings
from driftmon.errors import ConfigError
from driftmon.inspect import explain
from driftmon.inspect.explain import ColumnExplanation, WindowExplanation
from driftmon.sources.profile import segment_key
from driftmon.sources.segments import parse_segment
from driftmon.store.repository import Repository
from driftmon.textsafe import visible

INSUFFICIENT = "insufficient_data"
TOP_SEGMENTS = 10  # rows of a column's "which segments drove it" table, unless asked for more
_LISTED_KEYS = 20  # segment keys an unknown --segment's error lists


@dataclass(frozen=True)
class SegmentResult:
    """One column of one segment in one window, with the segment's share of the traffic."""

    key: str  # "country=DE"; pooled: "country=__other__", "country=__missing__"
    segment: dict[str, str]
    status: str
    statistic: str
    value: float | None
    p_value: float | None
    q_value: float | None
    samples_reference: float
    samples_current: float
    reference_share: float | None  # the segment's reference rows / the whole population's
    current_share: float | None  # the segment's current rows / the whole population's


@dataclass(frozen=True)
class ColumnSegments:
    """One column's segments, those that moved most first."""

    column: str
    statistic: str
    ranked: tuple[SegmentResult, ...]

    def top(self, n: int | None) -> tuple[SegmentResult, ...]:
        return self.ranked if n is None else self.ranked[:n]


# --- which segments drove each column ---------------------------------------------------


def window_segments(connection: Connection, monitor: MonitorSettings, explanation: WindowExplanation,
                    repository: Repository | None = None) -> dict[str, ColumnSegments]:
    """Per column of the explained window, its segments ranked (``rank_segments``)."""
    rows = (repository or Repository()).window_results(connection, monitor.name, explanation.window.end, None)
    return rank_segments(rows)


def rank_segments(rows: Sequence[dict]) -> dict[str, ColumnSegments]:
    """Per column, its segment rows ranked by how much they moved; ``rows``: every stored row of one
    window, the whole population's among them (the shares' denominators). Segments whose stored
    row is missing are not invented; the mix pseudo-column has no segments of its own."""
    whole = {row["column"]: row for row in rows if not row["segment_key"]}
    by_column: dict[str, list[SegmentResult]] = {}
    for row in rows:
        if row["segment_key"] and row["column"] in whole:
            by_column.setdefault(row["column"], []).append(_segment_result(row, whole[row["column"]]))
    return {column: ColumnSegments(column, whole[column]["statistic"], tuple(sorted(found, key=_movement)))
            for column, found in by_column.items()}


def _segment_result(row: dict, whole: dict) -> SegmentResult:
    return SegmentResult(
        key=row["segment_key"], segment=dict(row["segment"] or {}), status=row["status"],
        statistic=row["statistic"], value=row.get(row["statistic"]), p_value=row.get("p_value"),
        q_value=row.get("q_value"), samples_reference=row["samples_reference"],
        samples_current=row["samples_current"],
        reference_share=_ratio(row["samples_reference"], whole["samples_reference"]),
        current_share=_ratio(row["samples_current"], whole["samples_current"]),
    )


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _movement(item: SegmentResult) -> tuple[bool, bool, float]:
    """Largest statistic first; insufficient_data, then a row without a statistic, last. The sort is
    stable, so ties keep the stored order (the segments' order: largest in the reference first)."""
    known = item.value is not None and not math.isnan(item.value)
    return item.status == INSUFFICIENT, not known, -item.value if known else 0.0


# --- one segment ------------------------------------------------------------------------


def require_segment(connection: Connection, monitor: MonitorSettings, text: str, at: datetime | None = None,
                    statistic: str | None = None, dtype: str = "float64",
                    repository: Repository | None = None) -> WindowExplanation:
    """The segment ``text`` (``country=DE``) of the newest window ending at or before ``at``, explained.

    A monitor without segments, a segment of other columns than ``segments.by``, or one not
    stored for that window is a ``ConfigError`` (a usage error) saying what there is.
    """
    values = segment_of(monitor, text)
    repository = repository or Repository()
    window_end = repository.latest_window_end(connection, monitor.name, at)
    if window_end is None:
        raise explain.nothing_stored(monitor, at)
    key = segment_key(values)
    rows = repository.window_results(connection, monitor.name, window_end, key)
    if not rows:
        stored = [r["segment_key"] for r in repository.window_results(connection, monitor.name, window_end, None)]
        raise ConfigError(_not_stored(monitor, key, window_end, list(dict.fromkeys(k for k in stored if k))))
    found = explain.explain_window(monitor, rows, statistic, dtype)
    return replace(found, segment=values)


def segment_of(monitor: MonitorSettings, text: str) -> dict[str, str]:
    """``--segment`` as ``{column: value}``, checked against the monitor's ``segments.by``."""
    if monitor.segments is None:
        raise ConfigError(visible(f"--segment: monitor {monitor.name!r} is not segmented (its config has no "
                                  "segments.by); leave --segment out"))
    try:
        return parse_segment(text, monitor.segments.by)
    except ValueError as exc:
        raise ConfigError(visible(f"--segment: {exc}")) from None


def _not_stored(monitor: MonitorSettings, key: str, window_end: datetime, stored: list[str]) -> str:
    if not stored:
        return visible(f"--segment: no segment {key!r} in the window ending {window_end.isoformat()} of monitor "
                       f"{monitor.name!r}: it has no segments stored (computed before the monitor was segmented)")
    listed = ", ".join(stored[:_LISTED_KEYS])
    more = f" and {len(stored) - _LISTED_KEYS} more" if len(stored) > _LISTED_KEYS else ""
    by = ",".join(f"{column}=__other__" for column in monitor.segments.by)
    # Keys hold the data's values: shown, never obeyed.
    return visible(f"--segment: no segment {key!r} in the window ending {window_end.isoformat()} of monitor "
                   f"{monitor.name!r} (stored: {listed}{more}); a value outside the largest "
                   f"{monitor.segments.max} is pooled in {by}; "
                   f"`driftmon explain --monitor {shlex.quote(monitor.name)}` lists every segment per column")


# --- output ---------------------------------------------------------------------------------


def as_dict(explanation: WindowExplanation, segments: dict[str, ColumnSegments] | None, top: int | None = None,
            top_segments: int | None = TOP_SEGMENTS) -> dict:
    """A segmented monitor's `explain --output json`: explain's shape, plus ``segment`` (null for the
    whole population, else ``{column: value}``) and, for the whole population, each column's
    ``segments`` (README: "explain")."""
    document = explain.as_dict(explanation, top)
    document = {**{k: v for k, v in document.items() if k != "columns"}, "segment": explanation.segment,
                "columns": document["columns"]}
    if segments is not None:
        for column in document["columns"]:
            found = segments.get(column["column"])
            column["segments"] = None if found is None else _segments_dict(found, top_segments)
    return document


def _segments_dict(found: ColumnSegments, top: int | None) -> dict:
    return {"ranked_by": found.statistic, "total": len(found.ranked),
            "top": [_segment_dict(item) for item in found.top(top)]}


def _segment_dict(item: SegmentResult) -> dict:
    return {"segment": item.segment, "segment_key": item.key, "status": item.status, "statistic": item.statistic,
            "value": item.value, "p_value": item.p_value, "q_value": item.q_value,
            "samples_reference": explain.exact_number(item.samples_reference),
            "samples_current": explain.exact_number(item.samples_current),
            "reference_share": item.reference_share, "current_share": item.current_share}


def as_json(explanation: WindowExplanation, segments: dict[str, ColumnSegments] | None, top: int | None = None,
            top_segments: int | None = TOP_SEGMENTS) -> str:
    return json.dumps(as_dict(explanation, segments, top, top_segments), indent=2)


def as_table(explanation: WindowExplanation, segments: dict[str, ColumnSegments] | None, top: int | None = None,
             top_segments: int | None = TOP_SEGMENTS) -> str:
    """explain's table; for the whole population, below each column its "which segments drove it"."""
    if segments is None:
        return explain.as_table(explanation, top)
    if not segments:
        return explain.as_table(explanation, top, preamble=[NO_SEGMENTS])
    return explain.as_table(explanation, top, after=_drivers(segments, top_segments),
                            preamble=[_drill_down_hint(explanation, segments)])


NO_SEGMENTS = "segments: none stored for this window (computed before the monitor was segmented)"


def _drill_down_hint(explanation: WindowExplanation, segments: dict[str, ColumnSegments]) -> str:
    """How to see one segment, naming the one that drifted most in the columns shown (worst status, then
    largest statistic)."""
    shown = [segments[c.column] for c in explanation.columns if c.column in segments] or list(segments.values())
    worst = min((item for found in shown for item in found.ranked),
                key=lambda item: (-_SEVERITY.get(item.status, -1), *_movement(item)))
    return (f"segments: below each column, those that moved most; explain one with "
            f"`{drill_down_command(explanation.monitor, worst.key)}`")


def drill_down_command(monitor: str, key: str) -> str:
    """The command that explains one segment, quoted for a POSIX shell (a value may hold a space)."""
    return f"driftmon explain --monitor {shlex.quote(monitor)} --segment {shlex.quote(key)}"


_SEVERITY = {INSUFFICIENT: 0, "ok": 1, "warning": 2, "critical": 3}
_SEGMENT_HEADER = ("segment", "status", "{statistic}", "q-value", "cur share", "ref share", "cur rows", "ref rows")


def _drivers(segments: dict[str, ColumnSegments], top: int | None) -> Callable[[ColumnExplanation], list[str]]:
    def lines(column: ColumnExplanation) -> list[str]:
        found = segments.get(column.column)
        # The mix (role "segment") has no segments of its own: its bins above are the segments' shares.
        return [] if found is None else _segment_table(found, top)
    return lines


def _segment_table(found: ColumnSegments, top: int | None) -> list[str]:
    header = tuple(h.format(statistic=found.statistic) for h in _SEGMENT_HEADER)
    shown = found.top(top)
    rows = [header] + [_segment_cells(item) for item in shown]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [f"  which segments drove it ({len(found.ranked)} segment(s), by {found.statistic}, "
             "insufficient_data last):"]
    lines += ["  " + "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
              for row in rows]
    if len(shown) < len(found.ranked):
        lines.append(f"  ({len(found.ranked) - len(shown)} more segment(s); --top-segments shows more)")
    return lines


def _segment_cells(item: SegmentResult) -> tuple[str, ...]:
    # Escaped here already, so that the column is as wide as what is shown.
    return (visible(item.key), item.status, "-" if item.value is None else f"{item.value:.4f}",
            explain.probability_text(item.q_value), _percent(item.current_share), _percent(item.reference_share),
            str(explain.exact_number(item.samples_current)), str(explain.exact_number(item.samples_reference)))


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
