"""The report's segments: a segments × columns heat map and a drill-down per segment.

For a segmented monitor the page (``driftmon.inspect.report``) gains, below
its summary, one row per segment (pooled ``__other__`` and ``__missing__``
included) and one cell per column: the column's statistic in that segment,
coloured by its status, with the segment's share of the window's traffic. A
segment's name links to its drill-down further down the page: the table of its
columns (status, statistic, p- and q-value, samples, the bin that moved most),
read from the same stored rows ``driftmon explain --segment`` explains. The
links are anchors in the page, so the file works offline and the daemon's
/report serves it as it is.

Bounded like the charts: at most ``MAX_SEGMENTS`` segments (the most drifted:
worst status, then largest statistic, over their columns) and ``MAX_COLUMNS``
columns (those whose most drifted segment drifted most) are shown; the page
says how many it leaves out. The bins of every segment are explained in ONE
engine call.

Segment keys, column names and labels come from the data: every text goes
through ``html_parts.escape``; anchors are numbered, never made of data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from driftmon.config import MonitorSettings
from driftmon.inspect.explain import ColumnExplanation, WindowExplanation, explain_window
from driftmon.inspect.html_parts import (
    STATUS_COLOURS,
    badge,
    count,
    drift_key,
    escape,
    moved_label,
    number,
    probability,
    share,
    term_text,
)
from driftmon.inspect.segment_explain import drill_down_command
from driftmon.store.repository import Repository

MAX_SEGMENTS = 50  # rows of the heat map, and drill-down sections
MAX_COLUMNS = 50  # columns of the heat map, and rows of a drill-down table


@dataclass(frozen=True)
class SegmentSection:
    """One segment of the window: its traffic and its columns, explained."""

    key: str
    samples_current: float
    samples_reference: float
    current_share: float | None  # of the whole population's current rows
    reference_share: float | None
    columns: tuple[ColumnExplanation, ...]

    def column(self, name: str) -> ColumnExplanation | None:
        return next((c for c in self.columns if c.column == name), None)

    @property
    def drift(self) -> tuple[int, float]:
        """Its most drifted column's ``drift_key``: what orders the segments, most drifted first."""
        return min((drift_key(c.status, c.value) for c in self.columns), default=drift_key("", None))


@dataclass(frozen=True)
class SegmentView:
    """Every segment of one window, the most drifted first."""

    monitor: str
    sections: tuple[SegmentSection, ...]


def load_segment_view(connection: Connection, monitor: MonitorSettings, whole: WindowExplanation,
                      repository: Repository | None = None, dtype: str = "float64") -> SegmentView:
    """The segments of ``whole``'s window, read from the results database."""
    rows = (repository or Repository()).window_results(connection, monitor.name, whole.window.end, None)
    return segment_view(monitor, whole, [row for row in rows if row["segment_key"]], dtype)


def segment_view(monitor: MonitorSettings, whole: WindowExplanation, rows: Sequence[dict],
                 dtype: str = "float64") -> SegmentView:
    """The segments of the stored segment ``rows`` of one window, every bin explained in one engine call."""
    if not rows:
        return SegmentView(monitor.name, ())
    explained = explain_window(monitor, list(rows), dtype=dtype).columns
    grouped: dict[str, list[tuple[dict, ColumnExplanation]]] = {}
    for row, column in zip(rows, explained, strict=True):
        grouped.setdefault(row["segment_key"], []).append((row, column))
    sections = [_section(key, found, whole) for key, found in grouped.items()]
    return SegmentView(monitor.name, tuple(sorted(sections, key=lambda s: s.drift)))


def _section(key: str, found: list[tuple[dict, ColumnExplanation]], whole: WindowExplanation) -> SegmentSection:
    # Every column of a segment counts its rows (a NULL in its __missing__ bin): any one gives the traffic.
    first = found[0][1]
    total = next((c for c in whole.columns if c.column == first.column), None)
    return SegmentSection(
        key=key, samples_current=first.samples_current, samples_reference=first.samples_reference,
        current_share=_ratio(first.samples_current, total.samples_current if total else 0),
        reference_share=_ratio(first.samples_reference, total.samples_reference if total else 0),
        columns=tuple(column for _, column in found),
    )


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


# --- the page's parts ---------------------------------------------------------------------


def heat_map(view: SegmentView, whole: WindowExplanation, *, segments: int = MAX_SEGMENTS,
             columns: int = MAX_COLUMNS) -> str:
    """The segments × columns table: the statistic in each cell, its background the status."""
    if not view.sections:
        return ("<h2 id='segments'>Segments</h2>\n<p class='note'>No per-segment results stored for this "
                "window (computed before the monitor was segmented).</p>")
    shown = view.sections[:segments]
    names = _heat_columns(view, whole, columns)
    header = ("<tr><th>segment</th><th>traffic (cur / ref)</th>"
              + "".join(f"<th>{escape(name)}<br><small>{escape(_statistic(whole, name))}</small></th>"
                        for name in names) + "</tr>")
    whole_row = ("<tr class='whole'><td class='text'>whole population</td><td>100 %</td>"
                 + "".join(_cell(_named(whole.columns, name)) for name in names) + "</tr>")
    rows = [header, whole_row] + [_heat_row(i, section, names) for i, section in enumerate(shown)]
    parts = ["<h2 id='segments'>Segments</h2>", _heat_note(view, len(shown), len(names), _feature_count(whole)),
             "<div class='scroll'><table class='heatmap'>", *rows, "</table></div>"]
    return "\n".join(parts)


def _heat_note(view: SegmentView, shown: int, columns: int, total_columns: int) -> str:
    sentences = [f"{len(view.sections):,} segments of this window, the most drifted first (worst status, then "
                 "the largest statistic); each cell is the column's statistic in that segment, coloured by "
                 "its status. A segment's name leads to its columns below."]
    if shown < len(view.sections):
        sentences.append(f"Showing the {shown:,} most drifted; the other {len(view.sections) - shown:,} are "
                         f"left out: <code>driftmon explain --monitor {escape(view.monitor)} --segment "
                         "COLUMN=VALUE</code> explains any segment.")
    if columns < total_columns:
        sentences.append(f"Showing the {columns:,} of {total_columns:,} columns whose segments drifted most.")
    return f"<p class='note'>{' '.join(sentences)}</p>"


def _feature_count(whole: WindowExplanation) -> int:
    return sum(c.role != "segment" for c in whole.columns)


def _heat_columns(view: SegmentView, whole: WindowExplanation, limit: int) -> list[str]:
    """The columns of the whole population (the mix aside), in their order; beyond ``limit``, those
    whose most drifted segment drifted most."""
    names = [c.column for c in whole.columns if c.role != "segment"]
    if len(names) <= limit:
        return names

    def worst(name: str) -> tuple[int, float]:
        cells = [c for s in view.sections if (c := s.column(name)) is not None]
        return min((drift_key(c.status, c.value) for c in cells), default=drift_key("", None))

    chosen = set(sorted(names, key=worst)[:limit])
    return [name for name in names if name in chosen]


def _statistic(whole: WindowExplanation, name: str) -> str:
    column = _named(whole.columns, name)
    return column.statistic if column else ""


def _named(columns: Sequence[ColumnExplanation], name: str) -> ColumnExplanation | None:
    return next((c for c in columns if c.column == name), None)


def _heat_row(index: int, section: SegmentSection, names: Sequence[str]) -> str:
    traffic = f"{share(section.current_share)} / {share(section.reference_share)}"
    return (f"<tr><td class='text'><a href='#segment-{index}'>{escape(section.key)}</a></td><td>{traffic}</td>"
            + "".join(_cell(section.column(name)) for name in names) + "</tr>")


def _cell(column: ColumnExplanation | None) -> str:
    if column is None:
        return "<td>–</td>"
    # The colour is a class (a page of 50 x 50 cells stays small); the title says the status in words.
    title = f"{column.status}, q {probability(column.q_value)}"
    return f"<td class='{_status_class(column.status)}' title='{escape(title)}'>{number(column.value)}</td>"


def _status_class(status: str) -> str:
    return f"s-{status}" if status in STATUS_COLOURS else "s-unknown"


_DRILL_HEADER = ("column", "status", "statistic", "value", "p-value", "q-value", "samples (ref / cur)", "moved most")


def drill_downs(view: SegmentView, *, segments: int = MAX_SEGMENTS, columns: int = MAX_COLUMNS) -> str:
    """One section per shown segment (the heat map's rows link here): its columns' table."""
    if not view.sections:
        return ""
    parts = ["<h2 id='segment-details'>Segments, one by one</h2>"]
    parts += [_drill_down(i, section, view.monitor, columns) for i, section in enumerate(view.sections[:segments])]
    return "\n".join(parts)


def _drill_down(index: int, section: SegmentSection, monitor: str, limit: int) -> str:
    worst = min(section.columns, key=lambda c: drift_key(c.status, c.value)).status
    heading = f"<h3 id='segment-{index}'>{escape(section.key)} {badge(worst)}</h3>"
    meta = (f"<p class='meta'>traffic: {share(section.current_share)} of the window's rows "
            f"({count(section.samples_current)}), {share(section.reference_share)} of the reference's "
            f"({count(section.samples_reference)}) · every bin: "
            f"<code>{escape(drill_down_command(monitor, section.key))}</code> · <a href='#segments'>heat map</a></p>")
    ranked = sorted(range(len(section.columns)), key=lambda i: drift_key(section.columns[i].status,
                                                                        section.columns[i].value))
    shown = sorted(ranked[:limit])
    rows = ["<tr>" + "".join(f"<th>{escape(h)}</th>" for h in _DRILL_HEADER) + "</tr>"]
    rows += [_drill_row(section.columns[i]) for i in shown]
    more = (f"<p class='note'>showing the {len(shown):,} most drifted of this segment's "
            f"{len(section.columns):,} columns</p>" if len(shown) < len(section.columns) else "")
    table = "<div class='scroll'><table class='segment'>\n" + "\n".join(rows) + "\n</table></div>"
    return "\n".join(part for part in (heading, meta, more, table) if part)


def _drill_row(column: ColumnExplanation) -> str:
    """A column of the segment; its thresholds are the whole population's (the summary shows them)."""
    top = column.ranked[0] if column.bins and column.ranked[0].psi_term is not None else None
    moved = escape(moved_label(column, top)) + escape(term_text(top, column.contributions_of)) if top else "–"
    status = f"<span class='status {_status_class(column.status)}'>{escape(column.status)}</span>"
    cells = [escape(column.column), status, escape(column.statistic), number(column.value),
             probability(column.p_value), probability(column.q_value),
             f"{count(column.samples_reference)} / {count(column.samples_current)}", moved]
    return "<tr>" + "".join(f"<td class='text'>{c}</td>" if k == 7 else f"<td>{c}</td>"
                            for k, c in enumerate(cells)) + "</tr>"


CSS = """
table.heatmap td[class^=s-]{color:#fff;text-align:center;border:1px solid #fff}table.heatmap th+th+th{text-align:center}
table.heatmap tr.whole td{font-weight:600}
h3{font-size:1rem;margin:1.2rem 0 .2rem}code{font-size:.8rem;background:#f5f5f5;padding:0 .2rem}
""" + "".join(f".s-{status}{{background:{colour}}}" for status, colour in STATUS_COLOURS.items()) + \
    ".s-unknown{background:#616161}\n"
