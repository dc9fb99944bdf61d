"""The daemon's own counters (runs, failures, durations, missed windows), for /metrics.

Plain client objects, one registry per monitor, merged into the registry the
daemon builds and passes in (README, "Metrics").
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from driftmon.outcomes import RunOutcome

FAILURE_REASONS = ("source", "store", "compute", "other")
RUN_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _MonitorRunMetrics:
    """One monitor's run counters, on a registry of their own."""

    def __init__(self, monitor: str):
        self.registry = CollectorRegistry(auto_describe=False)
        runs = Counter("driftmon_runs", "Monitor runs finished, failed or not",
                       ["monitor"], registry=self.registry)
        failures = Counter("driftmon_run_failures", "Monitor runs that failed",
                           ["monitor", "reason"], registry=self.registry)
        duration = Histogram("driftmon_run_duration_seconds", "Duration of monitor runs",
                             ["monitor"], buckets=RUN_DURATION_BUCKETS, registry=self.registry)
        missed = Counter("driftmon_windows_missed", "Windows given up without results (never computed: "
                         "late or skipped runs, failures, a crashed replica); driftmon backfill fills them",
                         ["monitor"], registry=self.registry)
        self.metrics = (runs, failures, duration, missed)  # in registration order, as encoded
        self.runs, self.duration, self.missed = runs.labels(monitor), duration.labels(monitor), missed.labels(monitor)
        # Every reason from the start, so that increase() sees the first failure of each.
        self.failures = {reason: failures.labels(monitor, reason) for reason in FAILURE_REASONS}
        self.version = 0  # bumped by every change
        self.texts: dict[bool, tuple[int, list[tuple[str, str]]]] = {}  # openmetrics -> (version, families)


class RunMetrics(Collector):
    """The daemon's own counters: runs, failures by reason, run durations, missed windows.

    Each monitor's series live on a registry of their own, and /metrics
    re-encodes a monitor's only after it changed: prometheus_client encodes
    about 20 us a sample, so all 2 800 series of 100 monitors took 58 ms a
    scrape, where the pre-rendered drift families of 5 000 columns take 3 ms.
    Registered on the daemon's registry as one collector of the merged families.
    """

    def __init__(self, registry: CollectorRegistry):
        self._lock = threading.Lock()
        self._monitors: dict[str, _MonitorRunMetrics] = {}
        registry.register(self)

    def prepare(self, monitors: Iterable[str]) -> None:
        """Zero series from the start, so that rate() and increase() see the first run
        and the first failure of each reason."""
        for monitor in monitors:
            self._of(monitor)

    def _of(self, monitor: str) -> _MonitorRunMetrics:
        with self._lock:
            if monitor not in self._monitors:
                self._monitors[monitor] = _MonitorRunMetrics(monitor)
            return self._monitors[monitor]

    def record(self, outcome: RunOutcome) -> None:
        metrics = self._of(outcome.monitor)
        metrics.runs.inc()
        metrics.duration.observe(outcome.duration_seconds)
        if outcome.status != "ok":
            metrics.failures[outcome.reason if outcome.reason in metrics.failures else "other"].inc()
        metrics.version += 1

    def record_failure(self, monitor: str, reason: str) -> None:
        """A run that failed before it had a window (the store did not answer): a run all the same,
        so that failures never outnumber runs in a failure ratio."""
        metrics = self._of(monitor)
        metrics.runs.inc()
        metrics.failures[reason].inc()
        metrics.version += 1

    def record_missed(self, monitor: str, windows: int) -> None:
        """Windows of the monitor given up without results (driftmon/serving/claims.py)."""
        metrics = self._of(monitor)
        metrics.missed.inc(windows)
        metrics.version += 1

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            monitors = list(self._monitors.values())
        if not monitors:
            return
        for position in range(len(monitors[0].metrics)):
            merged = None
            for metrics in monitors:
                for family in metrics.metrics[position].collect():
                    merged = merged or Metric(family.name, family.documentation, family.type, family.unit)
                    merged.samples.extend(family.samples)
            yield merged

    def exposition_parts(self, openmetrics: bool = False) -> list[bytes]:
        """collect()'s families as the encoder writes them (no ``# EOF``), from text
        kept per monitor and re-encoded only when the monitor's counters changed."""
        with self._lock:
            monitors = list(self._monitors.values())
        if not monitors:
            return []
        encode = generate_openmetrics if openmetrics else generate_latest
        texts = []
        for metrics in monitors:
            version = metrics.version
            cached = metrics.texts.get(openmetrics)
            if cached is None or cached[0] != version:
                cached = metrics.texts[openmetrics] = (version, _families_of(encode(metrics.registry).decode()))
            texts.append(cached[1])
        parts = []
        for position, (header, _) in enumerate(texts[0]):
            parts.append(header.encode())
            parts.append("".join(families[position][1] for families in texts).encode())
        return parts


def _families_of(text: str) -> list[tuple[str, str]]:
    """An encoded registry as [(header lines, sample lines)], one per family as written."""
    families: list[list[str]] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("# HELP "):
            families.append([line, ""])
        elif line.startswith("# EOF"):
            continue
        elif line.startswith("#"):
            families[-1][0] += line
        else:
            families[-1][1] += line
    return [(header, samples) for header, samples in families]
