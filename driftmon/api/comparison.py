"""``Comparison``: the results of one window as DataFrames, per-bin tables and an inline report.

What ``driftmon.compare`` and ``Monitor.run`` return. It holds the pipeline's own
``ColumnResult`` records (the rows the daemon stores), so ``explain`` and the
inline report are ``driftmon explain``'s and ``driftmon report``'s code on the
same rows, never a second rendering.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pandas as pd

from driftmon.errors import ConfigError

if TYPE_CHECKING:
    from driftmon.config import MonitorSettings
    from driftmon.inspect.explain import WindowExplanation
    from driftmon.outcomes import ColumnResult
    from driftmon.windows import TimeRange

# Comparison.to_df's columns and their dtypes (README, "From Python").
RESULT_COLUMNS: dict[str, str] = {
    "feature": "string", "role": "string", "segment": "string", "status": "string",
    "kl": "float64", "psi": "float64", "js": "float64", "p_value": "float64", "q_value": "float64",
    "samples_reference": "float64", "samples_current": "float64", "missing_ratio": "float64",
}
# Comparison.explain's columns: one row per bin, the bins that moved most first.
BIN_COLUMNS: dict[str, str] = {
    "bin": "string", "reference_count": "float64", "reference_share": "float64",
    "current_count": "float64", "current_share": "float64", "psi_term": "float64",
    "share_of_movement": "float64", "contribution": "float64", "share_of_statistic": "float64",
}
_REPORT_HEIGHT_PX = 420  # the inline report's frame before it fits itself to the page


@dataclass(frozen=True, repr=False)
class Comparison:
    """The statistics of every column (and segment) of one current window against its reference.

    ``results`` are the pipeline's records, one per (segment, column): the rows
    ``driftmon run-once`` stores. ``window`` and ``reference`` are the ranges they
    cover (for ``driftmon.compare``, placeholder days: the frames have no times).

    >>> comparison
    <Comparison 'compare': 2 result(s): 1 critical, 1 ok>
    >>> comparison.critical, comparison.segments
    (True, [])
    >>> comparison.to_html().startswith("<!DOCTYPE html>")
    True
    """

    monitor: MonitorSettings
    results: tuple[ColumnResult, ...]
    window: TimeRange
    reference: TimeRange
    dtype: str = "float64"
    # What was compared, as the inline report says it (default: the window and reference ranges).
    description: str | None = None
    # Each segment's explanation, made once: explain() per feature would otherwise repeat the engine
    # call of every feature of the segment.
    _explained: dict[str | None, WindowExplanation] = field(default_factory=dict, init=False, compare=False)

    def to_df(self) -> pd.DataFrame:
        """One row per (segment, feature): ``feature, role, segment, status, kl, psi, js, p_value,
        q_value, samples_reference, samples_current, missing_ratio``.

        Text columns are pandas ``string`` (``segment`` is <NA> for the whole population; a
        segmented comparison's ``segment`` pseudo-feature, role ``segment``, is the traffic
        mix over segments); the rest ``float64``, NaN where there is no value (a window
        with fewer than ``min_samples`` rows is ``insufficient_data``, without statistics).

        >>> comparison.to_df().dtypes.astype(str).to_dict()  # doctest: +NORMALIZE_WHITESPACE
        {'feature': 'string', 'role': 'string', 'segment': 'string', 'status': 'string', 'kl': 'float64',
         'psi': 'float64', 'js': 'float64', 'p_value': 'float64', 'q_value': 'float64',
         'samples_reference': 'float64', 'samples_current': 'float64', 'missing_ratio': 'float64'}
        """
        rows = [{
            "feature": r.column, "role": r.role, "segment": r.segment_key or None, "status": r.status,
            "kl": r.kl, "psi": r.psi, "js": r.js, "p_value": r.p_value, "q_value": r.q_value,
            "samples_reference": r.samples_reference, "samples_current": r.samples_current,
            "missing_ratio": r.missing_ratio,
        } for r in self.results]
        return typed_frame(rows, RESULT_COLUMNS)

    def status(self, feature: str, segment: str | None = None) -> str:
        """One feature's status: ``ok``, ``warning``, ``critical`` or ``insufficient_data``.

        >>> comparison.status("country")
        'ok'
        """
        return self._result(feature, segment).status

    @property
    def critical(self) -> bool:
        """Whether any feature (of any segment) is critical: what makes ``run-once`` exit 1."""
        return any(r.status == "critical" for r in self.results)

    def explain(self, feature: str, segment: str | None = None) -> pd.DataFrame:
        """The bins that drove one feature's statistics: ``driftmon explain``'s table, every bin.

        One row per bin, the bins that moved most first (by their PSI term, whichever window
        gained): ``bin``, the raw counts and smoothed shares of both windows, ``psi_term`` and
        its ``share_of_movement``, and ``contribution``, the bin's signed term of the feature's
        statistic (``kl`` unless ``thresholds`` chose another), with its ``share_of_statistic``.
        ``segment``: a segment's key (``"app=kiosk"``); None for the whole population.

        >>> table = comparison.explain("amount")
        >>> list(table.columns)[:5]
        ['bin', 'reference_count', 'reference_share', 'current_count', 'current_share']
        >>> bool(abs(table["contribution"].sum() - comparison.to_df().kl[0]) < 1e-12)
        True
        """
        self._result(feature, segment)
        column = self.explanation(segment).column(feature)
        rows = [{
            "bin": b.label, "reference_count": b.reference_count, "reference_share": b.reference_share,
            "current_count": b.current_count, "current_share": b.current_share, "psi_term": b.psi_term,
            "share_of_movement": b.share_of_movement, "contribution": b.contribution,
            "share_of_statistic": b.share_of_statistic,
        } for b in column.ranked]
        return typed_frame(rows, BIN_COLUMNS)

    def explanation(self, segment: str | None = None) -> WindowExplanation:
        """The window explained as ``driftmon explain`` does (one engine call for all its features,
        made once per segment)."""
        from driftmon.inspect.explain import explain_window

        if segment not in self._explained:
            computed_at = datetime.now(UTC)
            rows = [r.as_row(None, computed_at) for r in self.results if (r.segment_key or None) == segment]
            if not rows:
                raise ConfigError(f"no segment {segment!r} (segments: {', '.join(self.segments) or 'none'})")
            self._explained[segment] = explain_window(self.monitor, rows, dtype=self.dtype)
        return self._explained[segment]

    @property
    def segments(self) -> list[str]:
        """The segments' keys (``"app=kiosk"``), in the order compared; empty when unsegmented."""
        return list(dict.fromkeys(r.segment_key for r in self.results if r.segment_key))

    def to_html(self) -> str:
        """The report's summary table and per-feature bar charts as a self-contained HTML page."""
        from driftmon.inspect.report import render_window

        smoothing = self.monitor.smoothing
        setting = (f"alpha {smoothing.alpha:g}" if smoothing.method == "pseudocount"
                   else f"epsilon {smoothing.epsilon:g}")
        where = (f"{self.description or f'window {self.window}, reference {self.reference}'} · smoothing "
                 f"{smoothing.method} ({setting}), KL direction {self.monitor.kl_direction}")
        return render_window(self.monitor, self.explanation(), title=f"driftmon: {self.monitor.name}",
                             caption=where, rows=[r.as_row(None, datetime.now(UTC)) for r in self.results
                                                  if not r.segment_key])

    def _repr_html_(self) -> str:
        """Jupyter's view: the page in a frame of its own, so that its styles stay in it."""
        page = html.escape(self.to_html(), quote=True)
        fit = "this.style.height=(this.contentWindow.document.body.scrollHeight+40)+'px'"
        return (f"<iframe srcdoc=\"{page}\" style=\"width:100%;height:{_REPORT_HEIGHT_PX}px;border:0\" "
                f"onload=\"{fit}\"></iframe>")

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.status] = counts.get(r.status, 0) + 1
        tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        return f"<Comparison {self.monitor.name!r}: {len(self.results)} result(s): {tally}>"

    def _result(self, feature: str, segment: str | None) -> ColumnResult:
        for r in self.results:
            if r.column == feature and (r.segment_key or None) == segment:
                return r
        known = ", ".join(dict.fromkeys(r.column for r in self.results))
        where = f" in segment {segment!r}" if segment else ""
        raise ConfigError(f"no feature {feature!r}{where} (features: {known})")


def typed_frame(rows: Sequence[dict], columns: dict[str, str]) -> pd.DataFrame:
    """``rows`` as a DataFrame of exactly ``columns``, each of its dtype (None: NaN or <NA>)."""
    data = {name: pd.Series([row[name] for row in rows], dtype=_loose(dtype)).astype(dtype)
            for name, dtype in columns.items()}
    return pd.DataFrame(data, columns=list(columns))


def _loose(dtype: str) -> str:
    """What a column of Python values (None included) is read as before its final dtype."""
    return "float64" if dtype == "float64" else "object"
