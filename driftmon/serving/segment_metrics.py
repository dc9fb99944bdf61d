"""Per-segment Prometheus samples, within a bound (README, "Segments").

A segmented monitor can hold thousands of (segment, column) results a window;
one series each would let the number of segments decide the size of a scrape.
So per (monitor, feature) the export is:

- ``driftmon_segments{monitor,feature,status}``: how many segments are in each
  status, always the four statuses (zeros included, so that a rule sees 0);
- for the ``segments.top_k`` most drifted segments only, with a ``segment``
  label (``country=DE``), the same families as the whole population's, named
  ``driftmon_segment_<name>``: KL, PSI, JS, the G-test p-value, the q-value and
  the status (1 for its status, 0 for the others).

"Most drifted": by status severity (critical, warning, ok, insufficient_data),
then by the column's configured statistic (the one its thresholds judge), larger
first, then by segment key, so the order is total and a scrape is reproducible.
A segment that leaves the top k loses its series at the next scrape: they are
built from the newest window only, never kept from an older one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from driftmon.config import MonitorSettings
from driftmon.outcomes import CRITICAL, INSUFFICIENT, ColumnResult

STATUSES = ("ok", "warning", "critical", INSUFFICIENT)
SEVERITY = {CRITICAL: 3, "warning": 2, "ok": 1, INSUFFICIENT: 0}
COLUMN = ("monitor", "feature", "role", "segment")
# (key, metric, help, labels) in the order of the exposition.
FAMILIES = (
    ("segments", "driftmon_segments", "Segments of the column in each status, in the latest window",
     ("monitor", "feature", "status")),
    ("segment_kl", "driftmon_segment_kl_divergence",
     "KL divergence of the latest window in one of the column's top_k most drifted segments, in nats", COLUMN),
    ("segment_psi", "driftmon_segment_psi",
     "Population stability index of the latest window in one of the column's top_k most drifted segments", COLUMN),
    ("segment_js", "driftmon_segment_js_divergence",
     "Jensen-Shannon divergence of the latest window in one of the column's top_k most drifted segments, in nats",
     COLUMN),
    ("segment_p_value", "driftmon_segment_drift_p_value",
     "p-value of the G-test of the latest window in one of the column's top_k most drifted segments", COLUMN),
    ("segment_q_value", "driftmon_segment_drift_q_value",
     "Benjamini-Hochberg q-value of the latest window in one of the column's top_k most drifted segments, "
     "across every (segment, column) pair of its monitor", COLUMN),
    ("segment_status", "driftmon_segment_drift_status",
     "1 for the current status of one of the column's top_k most drifted segments, 0 for the others",
     (*COLUMN, "status")),
)
KEYS = tuple(key for key, *_ in FAMILIES)
LABELS = {key: labels for key, _, _, labels in FAMILIES}
_VALUES = (("segment_kl", "kl"), ("segment_psi", "psi"), ("segment_js", "js"),
           ("segment_p_value", "p_value"), ("segment_q_value", "q_value"))


@dataclass(frozen=True)
class SegmentResult:
    """What the metrics need of one (segment, column) result."""

    column: str
    role: str
    segment: str  # its key: "country=DE"
    statistic: str  # the column's configured statistic, which ranks it
    status: str
    kl: float | None
    psi: float | None
    js: float | None
    p_value: float | None
    q_value: float | None

    @classmethod
    def from_row(cls, row: dict) -> SegmentResult:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__ if name != "segment"},
                   segment=row["segment_key"])

    @classmethod
    def from_result(cls, result: ColumnResult) -> SegmentResult:
        return cls(**{name: getattr(result, name) for name in cls.__dataclass_fields__ if name != "segment"},
                   segment=result.segment_key)

    def rank(self) -> tuple:
        """Sort key: the most drifted first."""
        value = getattr(self, self.statistic, None)
        drift = value if value is not None and math.isfinite(value) else -math.inf
        return -SEVERITY.get(self.status, 0), -drift, self.segment


@dataclass(frozen=True)
class SegmentWindow:
    """One monitor's segment results of its newest segmented window."""

    window_end: datetime
    computed_at: datetime | None  # None when recorded from a run (not read back from the store)
    results: tuple[SegmentResult, ...]

    @classmethod
    def from_rows(cls, rows: list[dict]) -> SegmentWindow:
        """Stored rows of one window (store/segment_queries.py), all stored by one run."""
        return cls(max(r["window_end"] for r in rows), max(r["computed_at"] for r in rows),
                   tuple(SegmentResult.from_row(r) for r in rows))

    @classmethod
    def from_results(cls, results: list[ColumnResult]) -> SegmentWindow | None:
        """A run's segment results (one window), or None for an unsegmented run."""
        if not results:
            return None
        return cls(results[0].window.end, None, tuple(SegmentResult.from_result(r) for r in results))


def most_drifted(results: Iterable[SegmentResult], k: int) -> list[SegmentResult]:
    return sorted(results, key=SegmentResult.rank)[:k]


def segment_samples(monitor: MonitorSettings, results: Iterable[SegmentResult]) -> dict[str, list[tuple[dict, float]]]:
    """Per family key, the (labels, value) samples of one monitor, configured columns in name order."""
    samples: dict[str, list[tuple[dict, float]]] = {key: [] for key in KEYS}
    if monitor.segments is None:
        return samples
    configured = {f.column for f in monitor.features}
    by_column: dict[str, list[SegmentResult]] = {}
    for result in results:
        if result.column in configured:
            by_column.setdefault(result.column, []).append(result)
    for column in sorted(by_column):
        _column_samples(monitor.name, by_column[column], monitor.segments.top_k, samples)
    return samples


def _column_samples(monitor: str, results: list[SegmentResult], k: int, samples: dict) -> None:
    column = {"monitor": monitor, "feature": results[0].column}
    tally = {status: 0 for status in STATUSES}
    for result in results:
        tally[result.status] = tally.get(result.status, 0) + 1
    samples["segments"] += [({**column, "status": status}, float(n)) for status, n in tally.items()]
    for result in most_drifted(results, k):
        labels = {**column, "role": result.role, "segment": result.segment}
        samples["segment_status"] += [({**labels, "status": status}, 1.0 if result.status == status else 0.0)
                                      for status in STATUSES]
        if result.status == INSUFFICIENT:
            continue  # no statistic to show then, and never a NaN
        for key, name in _VALUES:
            value = getattr(result, name)
            if value is not None and math.isfinite(value):
                samples[key].append((labels, value))
