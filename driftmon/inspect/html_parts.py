"""The pieces the report's pages share: escaped text, status badges and number formats.

Shared by the report (``driftmon.inspect.report``) and its per-segment part
(``driftmon.inspect.segment_report``). Every text from the data (names, labels,
segment values) reaches a page through ``escape``: control and bidi characters
shown as escapes (``driftmon.textsafe.visible``), then HTML-escaped.
"""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime

from driftmon.inspect.explain import RANKED_BY, BinContribution, ColumnExplanation
from driftmon.inspect.labels import AXIS_CUT
from driftmon.textsafe import visible

STATUS_COLOURS = {"ok": "#2e7d32", "warning": "#ef8f00", "critical": "#c62828", "insufficient_data": "#9e9e9e"}
SEVERITY = ("insufficient_data", "ok", "warning", "critical")  # worst last


def escape(text: object) -> str:
    """Text for the page: control and bidi characters shown as escapes, then HTML-escaped."""
    return html.escape(visible(text), quote=True)


def badge(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#616161")
    return f"<span class='status' style='background:{colour}'>{escape(status)}</span>"


def severity(status: str) -> int:
    """A status's rank, worst highest; an unknown one below every known."""
    return SEVERITY.index(status) if status in SEVERITY else -1


def drift_key(status: str, value: float | None) -> tuple[int, float]:
    """Sorts the most drifted first: the worst status, then the largest statistic (none last)."""
    known = value is not None and not math.isnan(value)
    return -severity(status), -value if known else math.inf


def term_text(item: BinContribution, statistic: str) -> str:
    """The bin's share of the PSI (what ranked it) and, unless that is the statistic, its signed term."""
    moved = "" if item.share_of_movement is None else f"{100 * item.share_of_movement:.0f} % of psi"
    signed = "" if statistic == RANKED_BY or item.contribution is None else f"{statistic} term {item.contribution:+.4f}"
    text = "; ".join(part for part in (moved, signed) if part)
    return f" ({text})" if text else ""


def moved_label(column: ColumnExplanation, item: BinContribution) -> str:
    """A bin's label as the report shows it: edges to 4 significant digits, a long category cut,
    never alike another bin of the column (``ColumnExplanation.label_texts``); visible, not yet HTML-escaped."""
    return column.label_texts(AXIS_CUT)[item.label]


def number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def probability(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def count(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.1f}"


def share(value: float | None) -> str:
    """A share of traffic as a percentage."""
    return "–" if value is None else f"{100 * value:.1f} %"


def when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
