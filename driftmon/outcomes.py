"""What a run of a monitor produces: one ``ColumnResult`` per (segment, column) of the window,
the rows of the results table, and the run's ``RunOutcome`` that the store, the metrics, the
command outputs and the Python API read."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from driftmon.sources.profile import segment_key
from driftmon.windows import TimeRange

if TYPE_CHECKING:
    from driftmon.multivariate.result import MultivariateResult
    from driftmon.stats.volume import VolumeCheck

OK, WARNING, CRITICAL, INSUFFICIENT = "ok", "warning", "critical", "insufficient_data"


@dataclass(frozen=True)
class ColumnResult:
    """The statistics of one column for one window: a row of the results table."""

    monitor: str
    column: str
    role: str
    window: TimeRange
    reference: TimeRange
    samples_current: float
    samples_reference: float
    missing_current: float
    missing_ratio: float | None
    kl: float | None
    psi: float | None
    js: float | None
    statistic: str
    threshold_warning: float
    threshold_critical: float
    status: str
    p_value: float | None = None  # G-test of homogeneity on the raw counts
    q_value: float | None = None  # Benjamini-Hochberg across the window's columns
    labels: tuple[str, ...] = ()  # the bins, with the raw counts the statistics used
    reference_counts: tuple[float, ...] = ()
    current_counts: tuple[float, ...] = ()
    segment: dict[str, str] | None = None  # {column: value}; None for the whole population

    @property
    def segment_key(self) -> str:
        return segment_key(self.segment) if self.segment else ""

    def as_row(self, run_id: int, computed_at: datetime) -> dict:
        return {
            "run_id": run_id, "monitor": self.monitor, "column": self.column, "role": self.role,
            "window_start": self.window.start, "window_end": self.window.end,
            "reference_start": self.reference.start, "reference_end": self.reference.end,
            "samples_current": self.samples_current, "samples_reference": self.samples_reference,
            "missing_current": self.missing_current, "missing_ratio": self.missing_ratio,
            "kl": self.kl, "psi": self.psi, "js": self.js, "statistic": self.statistic,
            "threshold_warning": self.threshold_warning,
            "threshold_critical": self.threshold_critical,
            "status": self.status, "computed_at": computed_at,
            "p_value": self.p_value, "q_value": self.q_value,
            "labels": list(self.labels), "reference_counts": list(self.reference_counts),
            "current_counts": list(self.current_counts),
            "segment": self.segment, "segment_key": self.segment_key,
        }


@dataclass(frozen=True)
class RunOutcome:
    monitor: str
    window: TimeRange
    status: str  # ok | failed
    results: list[ColumnResult] = field(default_factory=list)
    reference: TimeRange | None = None
    error: str | None = None
    reason: str | None = None  # source | store | compute | other, for failed runs
    rows_scanned: int = 0
    duration_seconds: float = 0.0
    trigger: str = "schedule"  # schedule | backfill | run_once | late_data | recount
    # Stored windows recomputed by this run because a recount of late rows changed
    # a slice they used: their results replace the stored ones, in the same transaction.
    recomputed: list[RunOutcome] = field(default_factory=list)
    # driftmon.fingerprints.results_fingerprint of the settings that made the results.
    fingerprint: str | None = None
    # Data health (README, "Data health"): the window's volume check (driftmon/stats/volume.py;
    # None where the monitor has none), the start of the newest slice that held rows, and
    # the source_schemas row this run's schema check stored (None: not checked this run).
    volume: VolumeCheck | None = None
    newest_row_at: datetime | None = None
    schema: dict | None = None
    # The window's drift between columns (README, "Multivariate drift"), where the monitor has it.
    multivariate: MultivariateResult | None = None

    @property
    def critical(self) -> bool:
        return any(r.status == CRITICAL for r in self.results) or (
            self.multivariate is not None and self.multivariate.status == CRITICAL)
