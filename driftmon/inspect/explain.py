"""Which bins drove a stored window's statistics (`driftmon explain`, the report).

Everything is read from the results database: each stored result keeps its
bins' labels and the raw reference and current counts, so a window from the
past is explained exactly as it was computed, long after its source rows are
gone. The per-bin terms come from the divergence engine (``contributions``),
smoothed with the monitor's configured smoothing and KL direction; they sum to
the statistic. Results stored before driftmon kept the counts have no bins:
they are explained as far as they can be, with a note saying why not further.

Bins are ranked by how much they moved: their PSI term (qᵢ − pᵢ) ln(qᵢ/pᵢ),
which is never negative and the same whichever window gained. A KL term is
signed and weighted by one window's share only: with the default direction,
KL(reference ‖ current), a category that appears in the current window has a
negative term and would rank last. Each bin also carries its signed term of
the column's statistic (or of ``--statistic``), shown beside the ranking.

Labels and column names come from the data: the table shows them through
``driftmon.textsafe.visible`` (an escape sequence or bidi control is shown, not
obeyed), a numeric bin's edges to 4 significant digits (``driftmon.inspect.labels``:
more where two bins would read alike), the JSON exactly as stored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
from sqlalchemy import Connection

from driftmon.config import MonitorSettings
from driftmon.errors import ConfigError, DriftmonError
from driftmon.inspect.labels import readable_labels
from driftmon.sources.profile import segment_key
from driftmon.stats.divergence import contributions
from driftmon.store.repository import Repository
from driftmon.textsafe import visible
from driftmon.windows import TimeRange

STATISTICS = ("kl", "psi", "js")
RANKED_BY = "psi"  # bins are ranked by their term of this statistic: every term >= 0, symmetric
NO_BINS = "stored before driftmon kept each window's bins: no per-bin breakdown for this result"
EMPTY_WINDOW = "a window has no observations: there are no shares to compare"
# A recomputed statistic further than this from the stored one (relative, and
# absolute near 0) means the smoothing changed since the window was computed.
_AGREEMENT = 1e-6


@dataclass(frozen=True)
class BinContribution:
    """One bin of one column: its counts, smoothed shares, how much it moved and its term of the statistic."""

    label: str
    reference_count: float
    reference_share: float | None
    current_count: float
    current_share: float | None
    contribution: float | None  # the signed term of ``contributions_of``
    # contribution / statistic; the column's sum to 1, but one KL term may be < 0 or > 1 of it
    share_of_statistic: float | None
    psi_term: float | None = None  # (q - p) ln(q / p) >= 0: how much the bin moved, what ranks it
    share_of_movement: float | None = None  # psi_term / the column's PSI: in [0, 1], the column's sum to 1


@dataclass(frozen=True)
class ColumnExplanation:
    """One column of one stored window; ``bins`` in the column's own order, ``ranked`` by movement."""

    column: str
    role: str
    status: str
    statistic: str  # the statistic its status was judged on
    value: float | None
    kl: float | None
    psi: float | None
    js: float | None
    p_value: float | None
    q_value: float | None
    samples_reference: float
    samples_current: float
    threshold_warning: float
    threshold_critical: float
    contributions_of: str  # the statistic whose signed terms are shown beside the ranking
    bins: tuple[BinContribution, ...] = ()
    note: str | None = None

    @property
    def bins_stored(self) -> bool:
        return self.note != NO_BINS

    @property
    def ranked(self) -> tuple[BinContribution, ...]:
        """The bins that moved most first (largest PSI term), whichever window gained the share;
        ties keep the bins' order, bins without a term come last."""
        return tuple(sorted(self.bins, key=lambda b: (b.psi_term is None, -(b.psi_term or 0.0))))

    def top(self, n: int | None) -> tuple[BinContribution, ...]:
        return self.ranked if n is None else self.ranked[:n]

    def label_texts(self, cut: int | None = None) -> dict[str, str]:
        """Each bin's label as a person reads it (``driftmon.inspect.labels.readable_labels``),
        made visible (``textsafe.visible``); no two bins alike. Display only: ``label`` stays exact."""
        labels = [b.label for b in self.bins]
        return dict(zip(labels, readable_labels(labels, cut, shown=visible), strict=True))


@dataclass(frozen=True)
class WindowExplanation:
    monitor: str
    window: TimeRange
    reference: TimeRange
    columns: tuple[ColumnExplanation, ...]
    segment: dict[str, str] | None = None  # {column: value} of one segment's window; None: the whole population

    def column(self, name: str) -> ColumnExplanation:
        return next(c for c in self.columns if c.column == name)


# --- reading a stored window ---------------------------------------------------------


def load_explanation(connection: Connection, monitor: MonitorSettings, at: datetime | None = None,
                     statistic: str | None = None, repository: Repository | None = None,
                     dtype: str = "float64") -> WindowExplanation | None:
    """The monitor's newest stored window ending at or before ``at``, explained; None if none."""
    repository = repository or Repository()
    window_end = repository.latest_window_end(connection, monitor.name, at)
    if window_end is None:
        return None
    return explain_window(monitor, repository.window_results(connection, monitor.name, window_end),
                          statistic, dtype)


def require_explanation(connection: Connection, monitor: MonitorSettings, at: datetime | None = None,
                        statistic: str | None = None, dtype: str = "float64") -> WindowExplanation:
    """``load_explanation``, raising ``DriftmonError`` when nothing is stored."""
    found = load_explanation(connection, monitor, at, statistic, dtype=dtype)
    if found is None:
        raise nothing_stored(monitor, at)
    return found


def nothing_stored(monitor: MonitorSettings, at: datetime | None) -> DriftmonError:
    """The error of a monitor without a stored window ending at or before ``at``."""
    when = f" at or before {at.isoformat()}" if at else ""
    return DriftmonError(f"monitor {monitor.name!r} has no stored results{when}: "
                         "run `driftmon run-once` or `driftmon backfill` first")


def only_columns(explanation: WindowExplanation, names: Sequence[str]) -> WindowExplanation:
    """The named columns, in the order given; an unknown name is a usage error listing the known."""
    known = [c.column for c in explanation.columns]
    unknown = [n for n in names if n not in known]
    if unknown:
        # The stored names come from the data (a histograms source's feature column).
        raise ConfigError(visible(f"--column: no column named {', '.join(unknown)} in monitor "
                                  f"{explanation.monitor!r}'s window (stored: {', '.join(known)})"))
    if not names:
        return explanation
    return replace(explanation, columns=tuple(explanation.column(n) for n in dict.fromkeys(names)))


# --- the explanation itself ----------------------------------------------------------


def explain_window(monitor: MonitorSettings, rows: list[dict], statistic: str | None = None,
                   dtype: str = "float64") -> WindowExplanation:
    """Explain one window from its stored result rows (``Repository.window_results``).

    Bins are ranked by their PSI term (``RANKED_BY``). ``statistic`` chooses the
    signed terms shown beside it: that statistic's for every column instead of
    the one each column's status was judged on. One engine call for all columns.
    """
    if statistic is not None and statistic not in STATISTICS:
        raise ConfigError(f"--statistic: {statistic!r} is not one of {', '.join(STATISTICS)}")
    if not rows:
        raise ValueError("a window needs at least one stored result")
    columns = [_column_without_bins(row, statistic or row["statistic"]) for row in rows]
    computable = [i for i, row in enumerate(rows) if _has_counts(row)]
    if computable:
        terms = _engine_terms(monitor, [rows[i] for i in computable], dtype)
        for k, i in enumerate(computable):
            columns[i] = _with_bins(columns[i], rows[i], terms, k)
    for i, row in enumerate(rows):
        if i not in computable:
            columns[i] = replace(columns[i], note=NO_BINS if row.get("labels") is None else EMPTY_WINDOW,
                                 bins=_bins_without_terms(row))
    first = rows[0]
    return WindowExplanation(
        monitor=monitor.name,
        window=TimeRange(first["window_start"], first["window_end"]),
        reference=TimeRange(first["reference_start"], first["reference_end"]),
        columns=tuple(columns),
    )


def _column_without_bins(row: dict, terms_of: str) -> ColumnExplanation:
    return ColumnExplanation(
        column=row["column"], role=row["role"], status=row["status"], statistic=row["statistic"],
        value=row.get(row["statistic"]), kl=row["kl"], psi=row["psi"], js=row["js"],
        p_value=row.get("p_value"), q_value=row.get("q_value"),
        samples_reference=row["samples_reference"], samples_current=row["samples_current"],
        threshold_warning=row["threshold_warning"], threshold_critical=row["threshold_critical"],
        contributions_of=terms_of,
    )


def _has_counts(row: dict) -> bool:
    labels = row.get("labels")
    return bool(labels) and sum(row["reference_counts"]) > 0 and sum(row["current_counts"]) > 0


def _bins_without_terms(row: dict) -> tuple[BinContribution, ...]:
    if row.get("labels") is None:
        return ()
    return tuple(BinContribution(str(label), float(r), None, float(c), None, None, None)
                 for label, r, c in zip(row["labels"], row["reference_counts"], row["current_counts"],
                                        strict=True))


def _engine_terms(monitor: MonitorSettings, rows: list[dict], dtype: str):
    """Per-bin terms of every column in one engine call over padded [F, B] tables."""
    width = max(len(row["labels"]) for row in rows)
    reference, current = np.zeros((len(rows), width)), np.zeros((len(rows), width))
    mask = np.zeros((len(rows), width), dtype=bool)
    for f, row in enumerate(rows):
        bins = len(row["labels"])
        reference[f, :bins], current[f, :bins] = row["reference_counts"], row["current_counts"]
        mask[f, :bins] = True
    smoothing = monitor.smoothing
    return contributions(
        reference, current, mask,
        smoothing=smoothing.method,
        alpha=getattr(smoothing, "alpha", 0.5),
        epsilon=getattr(smoothing, "epsilon", 1e-4),
        kl_direction=monitor.kl_direction,
        dtype=dtype,
    )


def _with_bins(column: ColumnExplanation, row: dict, terms, f: int) -> ColumnExplanation:
    """The column with its bins, their PSI terms (the movement) and their terms of ``column.contributions_of``."""
    count = len(row["labels"])
    signed = getattr(terms, column.contributions_of)[f, :count]
    moved = terms.psi[f, :count]
    total, movement = float(signed.sum()), float(moved.sum())
    bins = [
        BinContribution(
            label=str(row["labels"][b]),
            reference_count=float(row["reference_counts"][b]),
            reference_share=float(terms.reference_shares[f, b]),
            current_count=float(row["current_counts"][b]),
            current_share=float(terms.current_shares[f, b]),
            contribution=float(signed[b]),
            share_of_statistic=_share_of(float(signed[b]), total),
            psi_term=float(moved[b]),
            share_of_movement=_share_of(float(moved[b]), movement),
        )
        for b in range(count)
    ]
    return replace(column, bins=tuple(bins), note=_disagreement(column, row, total))


def _share_of(term: float, total: float) -> float | None:
    """``term`` / ``total``, None when the total is 0 (the windows do not differ)."""
    return term / total if total > 0 else None


def _disagreement(column: ColumnExplanation, row: dict, recomputed: float) -> str | None:
    stored = row.get(column.contributions_of)
    if stored is None or math.isclose(stored, recomputed, rel_tol=_AGREEMENT, abs_tol=_AGREEMENT):
        return None
    return (f"the stored {column.contributions_of} ({stored:.6g}) differs from the sum of the terms "
            f"({recomputed:.6g}): the smoothing or KL direction in the config changed since "
            "this window was computed")


# --- output ------------------------------------------------------------------------------


def as_dict(explanation: WindowExplanation, top: int | None = None) -> dict:
    """The stable JSON shape of `driftmon explain --output json` (README: "explain")."""
    return {
        "monitor": explanation.monitor,
        "window_start": explanation.window.start.isoformat(),
        "window_end": explanation.window.end.isoformat(),
        "reference_start": explanation.reference.start.isoformat(),
        "reference_end": explanation.reference.end.isoformat(),
        "columns": [_column_dict(c, top) for c in explanation.columns],
    }


def _column_dict(column: ColumnExplanation, top: int | None) -> dict:
    return {
        "column": column.column,
        "role": column.role,
        "status": column.status,
        "statistic": column.statistic,
        "value": column.value,
        "kl": column.kl,
        "psi": column.psi,
        "js": column.js,
        "threshold_warning": column.threshold_warning,
        "threshold_critical": column.threshold_critical,
        "p_value": column.p_value,
        "q_value": column.q_value,
        "samples_reference": exact_number(column.samples_reference),
        "samples_current": exact_number(column.samples_current),
        "contributions_of": column.contributions_of,
        "ranked_by": RANKED_BY,
        "bins": len(column.bins),
        "bins_stored": column.bins_stored,
        "note": column.note,
        "top_bins": [_bin_dict(b) for b in column.top(top)],
    }


def _bin_dict(item: BinContribution) -> dict:
    return {
        "label": item.label,
        "reference_count": exact_number(item.reference_count),
        "reference_share": item.reference_share,
        "current_count": exact_number(item.current_count),
        "current_share": item.current_share,
        "contribution": item.contribution,
        "share_of_statistic": item.share_of_statistic,
        "psi_term": item.psi_term,
        "share_of_movement": item.share_of_movement,
    }


def as_json(explanation: WindowExplanation, top: int | None = None) -> str:
    return json.dumps(as_dict(explanation, top), indent=2)


_BIN_HEADER = ("bin", "ref count", "ref share", "cur count", "cur share", f"{RANKED_BY} term", f"of {RANKED_BY}")


def as_table(explanation: WindowExplanation, top: int | None = None, *,
             after: Callable[[ColumnExplanation], list[str]] | None = None,
             preamble: Sequence[str] = ()) -> str:
    """What a person reads: a heading per column, then the bins that moved most.

    ``after`` adds lines below each column's bins, ``preamble`` below the first line
    (a segmented monitor's "which segments drove it": ``driftmon.inspect.segment_explain``).
    Every line goes through ``visible``: no text from the data can start a line of
    its own, move the cursor or reorder what the terminal shows.
    """
    lines = [_window_line(explanation), *preamble]
    for column in explanation.columns:
        lines += ["", _column_heading(column)]
        if column.note:
            lines.append(f"  note: {column.note}")
        if column.bins:
            lines += _bin_table(column, top)
        if after is not None:
            lines += after(column)
    return "\n".join(visible(line) for line in lines)


def _window_line(explanation: WindowExplanation) -> str:
    segment = f", segment {segment_key(explanation.segment)}" if explanation.segment else ""
    return f"monitor {explanation.monitor}{segment}: window {explanation.window}, reference {explanation.reference}"


def _column_heading(column: ColumnExplanation) -> str:
    value = "-" if column.value is None else f"{column.value:.4f}"
    parts = [f"{column.column} ({column.role}): {column.status}",
             f"{column.statistic} {value} (warning {column.threshold_warning:g}, "
             f"critical {column.threshold_critical:g})",
             f"p {probability_text(column.p_value)}", f"q {probability_text(column.q_value)}",
             f"samples {exact_number(column.samples_reference)} ref / {exact_number(column.samples_current)} cur"]
    return "  ".join(parts)


def _bin_table(column: ColumnExplanation, top: int | None) -> list[str]:
    """The top bins by PSI term, its share of the PSI, and the signed term of ``contributions_of``
    beside them (left out when that is the PSI itself)."""
    signed = column.contributions_of != RANKED_BY
    header = (*_BIN_HEADER, f"{column.contributions_of} term") if signed else _BIN_HEADER
    texts = column.label_texts()
    rows = [header] + [_bin_cells(item, texts[item.label], signed) for item in column.top(top)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                              for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    shown = len(rows) - 1
    if shown < len(column.bins):
        lines.append(f"  ({len(column.bins) - shown} more bin(s); --top shows more)")
    return lines


def _bin_cells(item: BinContribution, label: str, signed: bool) -> tuple[str, ...]:
    # ``label`` is escaped already (``label_texts``), so that the column is as wide as what is shown.
    cells = (label, str(exact_number(item.reference_count)), _share(item.reference_share),
             str(exact_number(item.current_count)), _share(item.current_share),
             "-" if item.psi_term is None else f"{item.psi_term:.4f}",
             "-" if item.share_of_movement is None else f"{100 * item.share_of_movement:.1f}%")
    if not signed:
        return cells
    return (*cells, "-" if item.contribution is None else f"{item.contribution:+.4f}")


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def probability_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def exact_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value
