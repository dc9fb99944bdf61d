"""Multivariate drift in /metrics (README, "Metrics"): each monitor's newest window's
reconstruction error with its band, its Gaussian KL with its threshold, and its status.

Done as the data health gauges are (driftmon/serving/health_metrics.py): ``MultivariateState``
is fed by finished runs and restored from the results database at start-up and on every
refresh, ``MultivariateCollector`` turns it into metric families, rendered by prometheus_client
once per change of the state; a scrape never queries a database. Only monitors that write
``multivariate:`` have series, nine at most each.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import Connection

from driftmon.config import MonitorSettings
from driftmon.outcomes import RunOutcome
from driftmon.serving.metrics import STATUSES
from driftmon.serving.rendered import RenderedCollector
from driftmon.store import multivariate_queries
from driftmon.windows import as_utc

if TYPE_CHECKING:
    from driftmon.multivariate.result import MultivariateResult


VALUES = ("reconstruction_error", "threshold_lower", "threshold_upper", "gaussian_kl", "gaussian_kl_threshold")


@dataclass(frozen=True)
class LatestMultivariate:
    """What the gauges need of a monitor's newest multivariate result (None: no sample)."""

    window_end: datetime
    reconstruction_error: float | None
    threshold_lower: float | None
    threshold_upper: float | None
    gaussian_kl: float | None
    gaussian_kl_threshold: float | None
    status: str

    @classmethod
    def from_row(cls, row: dict) -> LatestMultivariate:
        """A stored multivariate_results row."""
        return cls(as_utc(row["window_end"]), *(_finite(row[name]) for name in VALUES), row["status"])

    @classmethod
    def from_result(cls, result: MultivariateResult) -> LatestMultivariate:
        return cls(as_utc(result.window.end), *(_finite(getattr(result, name)) for name in VALUES), result.status)


class MultivariateState:
    """Per monitor: its newest window's multivariate result; safe to read while runs update it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, LatestMultivariate] = {}
        self.version = 0  # bumped by every change: the collector re-renders only then

    def record(self, outcome: RunOutcome) -> None:
        """A finished run that stored its window's result (an ok run; a failed one stores nothing)."""
        if outcome.status == "ok" and outcome.multivariate is not None:
            latest = LatestMultivariate.from_result(outcome.multivariate)
            with self._lock:
                self._take(outcome.monitor, latest)

    def restore(self, connection: Connection) -> None:
        """Each monitor's newest stored result (any replica's, a backfill's): at start-up and on
        every refresh. Read first, then taken in under the lock at once."""
        rows = multivariate_queries.newest_results(connection)
        with self._lock:
            for row in rows:
                self._take(row["monitor"], LatestMultivariate.from_row(row))

    def _take(self, monitor: str, latest: LatestMultivariate) -> None:
        known = self._latest.get(monitor)
        # A backfill may finish an older window after a newer one: keep the newest.
        if known != latest and (known is None or latest.window_end >= known.window_end):
            self._latest[monitor] = latest
            self.version += 1

    def snapshot(self) -> dict[str, LatestMultivariate]:
        with self._lock:
            return dict(self._latest)


class MultivariateCollector(RenderedCollector):
    """Multivariate drift families of the configured monitors that write ``multivariate:``."""

    def __init__(self, state: MultivariateState, monitors: list[MonitorSettings]):
        self.state = state
        self.monitors = sorted(m.name for m in monitors if m.multivariate is not None)
        super().__init__()

    def collect(self) -> Iterator[Metric]:
        latest = self.state.snapshot()
        families = self._families()
        for name in self.monitors:  # a monitor that left the config or turned it off: no series
            result = latest.get(name)
            if result is None:
                continue
            for key, value in (("error", result.reconstruction_error), ("kl", result.gaussian_kl),
                               ("kl_threshold", result.gaussian_kl_threshold)):
                if value is not None:
                    families[key].add_metric([name], value)
            for bound, value in (("lower", result.threshold_lower), ("upper", result.threshold_upper)):
                if value is not None:  # NannyML drops a lower bound at or below 0: no sample then
                    families["error_threshold"].add_metric([name, bound], value)
            for status in STATUSES:
                families["status"].add_metric([name, status], 1.0 if result.status == status else 0.0)
        yield from families.values()

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        monitor = ["monitor"]
        return {
            "error": GaugeMetricFamily(
                "driftmon_reconstruction_error",
                "Mean PCA reconstruction error of the newest window (NannyML's data-reconstruction drift)",
                labels=monitor),
            "error_threshold": GaugeMetricFamily(
                "driftmon_reconstruction_error_threshold",
                "Band of the reconstruction error: outside (lower, upper) is critical (absent bound: none)",
                labels=[*monitor, "bound"]),
            "kl": GaugeMetricFamily("driftmon_multivariate_kl",
                                    "Gaussian KL divergence of the newest window against the reference, in nats",
                                    labels=monitor),
            "kl_threshold": GaugeMetricFamily("driftmon_multivariate_kl_threshold",
                                              "Upper threshold of the multivariate Gaussian KL divergence",
                                              labels=monitor),
            "status": GaugeMetricFamily("driftmon_multivariate_status",
                                        "1 for the newest window's multivariate drift status, 0 for the others",
                                        labels=[*monitor, "status"]),
        }



def _finite(value: float | None) -> float | None:
    """Not finite (an infinite KL of a singular window), or absent: None, so no sample."""
    return float(value) if value is not None and math.isfinite(value) else None
