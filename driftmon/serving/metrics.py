"""Prometheus metrics (the README's "Metrics" section lists every family).

Drift values are mirrored state: ``DriftState`` holds the latest result of each
column, fed by finished runs and restored from the database at start-up, and
``DriftCollector`` turns it into metric families on each scrape. A scrape never
queries a database or computes anything. The daemon's own counters are
driftmon/serving/run_metrics.py's.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, dataclass, fields
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from driftmon.config import SEGMENT_PSEUDO_COLUMN, MonitorSettings
from driftmon.outcomes import INSUFFICIENT, ColumnResult, RunOutcome
from driftmon.serving import segment_metrics
from driftmon.serving.segment_metrics import SegmentResult, SegmentWindow

STATUSES = ("ok", "warning", "critical", INSUFFICIENT)
STATISTICS = (("kl", "driftmon_kl_divergence", "KL divergence of the latest window, in nats"),
              ("psi", "driftmon_psi", "Population stability index of the latest window"),
              ("js", "driftmon_js_divergence", "Jensen-Shannon divergence of the latest window, in nats"))
SIGNIFICANCE = (("p_value", "driftmon_drift_p_value",
                 "p-value of the G-test of homogeneity of the latest window against the reference"),
                ("q_value", "driftmon_drift_q_value",
                 "Benjamini-Hochberg q-value of the latest window, across the columns of its monitor"))


@dataclass(frozen=True)
class LatestResult:
    """What the metrics need of a stored result row."""

    monitor: str
    column: str
    role: str
    kl: float | None
    psi: float | None
    js: float | None
    status: str
    samples_current: float
    samples_reference: float
    missing_ratio: float | None
    window_end: datetime
    p_value: float | None = None
    q_value: float | None = None

    @classmethod
    def from_row(cls, row: dict) -> LatestResult:
        # Rows stored before significance existed (and test rows) may lack p/q-values.
        return cls(**{f.name: row[f.name] if f.default is MISSING else row.get(f.name, f.default)
                      for f in fields(cls)})

    @classmethod
    def from_result(cls, result: ColumnResult) -> LatestResult:
        values = {name: getattr(result, name, None) for name in cls.__dataclass_fields__}
        return cls(**{**values, "window_end": result.window.end})


class DriftState:
    """The latest result per (monitor, column), safe to read while runs update it; for a
    segmented monitor also the segment results of its newest window (segment_metrics.py)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, str], LatestResult] = {}
        self._by_monitor: dict[str, dict[str, LatestResult]] = {}
        self._segments: dict[str, SegmentWindow] = {}
        self._versions: dict[str, int] = {}  # bumped whenever a monitor's results change
        self._last_success: dict[str, datetime] = {}
        self.store_up = True

    def restore(self, rows: Iterable[dict], last_successes: dict[str, datetime]) -> None:
        """Take in stored results and successes: at start-up, and at every refresh from the
        results database (what other replicas, or a backfill, stored). Rows with a segment
        key are one window's segment results (store/segment_queries.py), by monitor."""
        whole, segments = [], {}
        for row in rows:
            if row.get("segment_key"):
                segments.setdefault(row["monitor"], []).append(row)
            else:
                whole.append(LatestResult.from_row(row))
        windows = {monitor: SegmentWindow.from_rows(found) for monitor, found in segments.items()}
        with self._lock:
            for result in whole:
                self._keep(result)
            for monitor, window in windows.items():
                self._keep_segments(monitor, window)
            for monitor, finished in last_successes.items():
                previous = self._last_success.get(monitor)
                self._last_success[monitor] = max(finished, previous or finished)

    def record(self, outcome: RunOutcome, finished: datetime) -> None:
        if outcome.status != "ok":
            return
        segments = SegmentWindow.from_results([r for r in outcome.results if r.segment])
        with self._lock:
            for result in outcome.results:
                if not result.segment:
                    self._keep(LatestResult.from_result(result))
            if segments is not None:
                self._keep_segments(outcome.monitor, segments)
            previous = self._last_success.get(outcome.monitor)
            self._last_success[outcome.monitor] = max(finished, previous or finished)

    def _keep(self, result: LatestResult) -> None:
        # A backfill may finish an older window after a newer one: keep the newest.
        key = (result.monitor, result.column)
        known = self._latest.get(key)
        if known == result:
            return  # a refresh that brings nothing new re-renders nothing
        if known is None or result.window_end >= known.window_end:
            self._latest[key] = result
            self._by_monitor.setdefault(result.monitor, {})[result.column] = result
            self._versions[result.monitor] = self._versions.get(result.monitor, 0) + 1

    def _keep_segments(self, monitor: str, window: SegmentWindow) -> None:
        known = self._segments.get(monitor)
        if known is not None and window.window_end < known.window_end:
            return  # a backfilled or recomputed older window: the newest one stays
        self._segments[monitor] = window
        if known is None or known.results != window.results:
            self._versions[monitor] = self._versions.get(monitor, 0) + 1

    def segment_marks(self) -> dict[str, tuple[datetime, datetime | None]]:
        """Per monitor, the (window end, computed at) of the segment results held: a refresh
        reads a monitor's segment rows again only when its newest stored window differs."""
        with self._lock:
            return {monitor: (w.window_end, w.computed_at) for monitor, w in self._segments.items()}

    def segments_of(self, monitor: str) -> tuple[SegmentResult, ...]:
        with self._lock:
            window = self._segments.get(monitor)
            return () if window is None else window.results

    def snapshot(self) -> tuple[list[LatestResult], dict[str, datetime]]:
        with self._lock:
            return list(self._latest.values()), dict(self._last_success)

    def versions(self) -> tuple[dict[str, int], dict[str, datetime]]:
        with self._lock:
            return dict(self._versions), dict(self._last_success)

    def results_of(self, monitor: str) -> tuple[int, list[LatestResult]]:
        """One monitor's results and the version they are at."""
        with self._lock:
            return self._versions.get(monitor, 0), list(self._by_monitor.get(monitor, {}).values())


class DriftCollector(Collector):
    """Metric families built on each scrape from ``DriftState`` and the config."""

    def __init__(self, state: DriftState, monitors: list[MonitorSettings], build: dict[str, str]):
        self.state = state
        self.monitors = {m.name: m for m in monitors}
        self.build = build
        # Configured columns per monitor (None: every column, e.g. histograms sources);
        # a segmented monitor's segment mix is a column of it too.
        self._columns = {m.name: frozenset(_threshold_columns(m)) or None for m in monitors}
        # Per monitor, the text of its samples, rendered again only when its results change
        # (see exposition()): (version, text per result family, threshold text, newest window end).
        self._texts: dict[str, tuple[int, tuple[bytes, ...], bytes, datetime | None]] = {}
        self._sorted_names = sorted(self.monitors)

    def describe(self) -> Iterator[Metric]:
        # Families without samples: registering the collector runs no collect().
        yield from self._families().values()

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        results, last_success = self.state.snapshot()
        for result in sorted(self._configured(results), key=lambda r: (r.monitor, r.column)):
            self._add_result(families, result)
        for name in self._sorted_names:  # the order of exposition(): by monitor, then column
            samples = segment_metrics.segment_samples(self.monitors[name], self.state.segments_of(name))
            for key, found in samples.items():
                for labels, value in found:
                    families[key].add_metric([labels[n] for n in segment_metrics.LABELS[key]], value)
        newest = self._newest_ends(results)
        for monitor in self.monitors:
            if monitor in last_success:
                families["success"].add_metric([monitor], last_success[monitor].timestamp())
            if monitor in newest:
                families["window_end"].add_metric([monitor], newest[monitor].timestamp())
        self._add_thresholds(families["threshold"], results)
        families["store_up"].add_metric([], 1.0 if self.state.store_up else 0.0)
        families["build"].add_metric([self.build[k] for k in ("version", "torch_version", "device")], 1.0)
        yield from families.values()

    def _configured(self, results: list[LatestResult]) -> Iterator[LatestResult]:
        """Only columns still in the config: the rest's series disappear."""
        for result in results:
            if result.monitor not in self._columns:
                continue
            columns = self._columns[result.monitor]
            if columns is not None and result.column not in columns:
                continue
            yield result

    @staticmethod
    def _newest_ends(results: list[LatestResult]) -> dict[str, datetime]:
        newest: dict[str, datetime] = {}
        for r in results:
            if r.monitor not in newest or r.window_end > newest[r.monitor]:
                newest[r.monitor] = r.window_end
        return newest

    # --- the /metrics fast path ---------------------------------------------------
    #
    # collect() builds ~12 samples per column, and prometheus_client formats each one
    # (label-name checks, escaping): ~10 us a sample, ~0.6 s a scrape at 5 000 columns.
    # exposition() writes the same bytes from text kept per monitor: a finished run
    # re-renders its own monitor's columns only, a scrape joins ~700 ready pieces.

    _WHOLE_FAMILIES = ("kl", "psi", "js", "p_value", "q_value", "status", "samples", "missing")
    _RESULT_FAMILIES = (*_WHOLE_FAMILIES, *segment_metrics.KEYS)  # per monitor: its columns', its segments'

    def exposition(self, openmetrics: bool = False) -> str:
        """The text of collect()'s families, as generate_latest would write it (no ``# EOF``)."""
        return b"".join(self.exposition_parts(openmetrics)).decode()

    def exposition_parts(self, openmetrics: bool = False) -> list[bytes]:
        """exposition() in pieces, for one ``b"".join`` with whatever follows (one copy of ~5 MB)."""
        versions, last_success = self.state.versions()
        texts = {}
        for name in self.monitors:
            text = self._texts.get(name)
            if text is None or text[0] != versions.get(name, 0):
                text = self._texts[name] = self._render_monitor(name)
            texts[name] = text
        ordered = [texts[name][1] for name in self._sorted_names]  # collect() sorts by (monitor, column)
        by_family = {family: [text[i] for text in ordered] for i, family in enumerate(self._RESULT_FAMILIES)}
        by_family["threshold"] = [texts[name][2] for name in self.monitors]
        by_family["success"] = [
            _sample("driftmon_last_success_timestamp_seconds", {"monitor": m}, last_success[m].timestamp()).encode()
            for m in self.monitors if m in last_success]
        by_family["window_end"] = [
            _sample("driftmon_window_end_timestamp_seconds", {"monitor": m}, texts[m][3].timestamp()).encode()
            for m in self.monitors if texts[m][3] is not None]
        by_family["store_up"] = [_sample("driftmon_store_up", {}, 1.0 if self.state.store_up else 0.0).encode()]
        by_family["build"] = [_sample("driftmon_build_info", dict(zip(
            ("version", "torch_version", "device"),
            (self.build[k] for k in ("version", "torch_version", "device")), strict=True)), 1.0).encode()]
        parts = []
        for key, family in self._families().items():
            parts.append(_header(family, openmetrics).encode())
            parts.extend(by_family[key])
        return parts

    def _render_monitor(self, name: str) -> tuple[int, tuple[bytes, ...], bytes, datetime | None]:
        version, results = self.state.results_of(name)  # the version first: a later change re-renders
        segments = self.state.segments_of(name)
        newest = max((r.window_end for r in results), default=None)
        configured = sorted(self._configured(results), key=lambda r: r.column)
        per_family = [self._render(r) for r in configured]
        text = tuple("".join(chunks).encode() for chunks in zip(*per_family, strict=True)) if per_family \
            else (b"",) * len(self._WHOLE_FAMILIES)
        monitor = self.monitors[name]
        by_segment = segment_metrics.segment_samples(monitor, segments)
        text += tuple("".join(_sample(metric, labels, value) for labels, value in by_segment[key]).encode()
                      for key, metric, *_ in segment_metrics.FAMILIES)
        columns = _threshold_columns(monitor) or sorted({r.column for r in results})
        thresholds = "".join(self._threshold_lines(monitor, column) for column in columns).encode()
        return version, text, thresholds, newest

    def _render(self, r: LatestResult) -> tuple[str, ...]:
        labels = {"monitor": r.monitor, "feature": r.column, "role": r.role}
        status = "".join(_sample("driftmon_drift_status", {**labels, "status": s}, 1.0 if r.status == s else 0.0)
                         for s in STATUSES)
        text = dict.fromkeys(self._WHOLE_FAMILIES, "")
        text["status"] = status
        if r.status != INSUFFICIENT:
            for name, metric, _ in (*STATISTICS, *SIGNIFICANCE):
                value = getattr(r, name)
                if value is not None and math.isfinite(value):
                    text[name] = _sample(metric, labels, value)
        # The evidence stays while a column is insufficient_data: that is when it is read.
        text["samples"] = (
            _sample("driftmon_window_samples", {"monitor": r.monitor, "feature": r.column, "window": "current"},
                    r.samples_current)
            + _sample("driftmon_window_samples",
                      {"monitor": r.monitor, "feature": r.column, "window": "reference"}, r.samples_reference))
        if r.missing_ratio is not None and math.isfinite(r.missing_ratio):
            text["missing"] = _sample("driftmon_missing_ratio", {"monitor": r.monitor, "feature": r.column},
                                      r.missing_ratio)
        return tuple(text[name] for name in self._WHOLE_FAMILIES)

    @staticmethod
    def _threshold_lines(monitor: MonitorSettings, column: str) -> str:
        thresholds = monitor.thresholds_for(column)
        return "".join(_sample("driftmon_drift_threshold", {
            "monitor": monitor.name, "feature": column, "severity": severity,
            "statistic": thresholds.statistic}, getattr(thresholds, severity)) for severity in ("warning", "critical"))

    def _add_result(self, families: dict, r: LatestResult) -> None:
        labels = [r.monitor, r.column, r.role]
        for status in STATUSES:
            families["status"].add_metric([*labels, status], 1.0 if r.status == status else 0.0)
        if r.status != INSUFFICIENT:  # no statistic to show then, and never a NaN
            for name, _, _ in (*STATISTICS, *SIGNIFICANCE):
                value = getattr(r, name)
                if value is not None and math.isfinite(value):
                    families[name].add_metric(labels, value)
        families["samples"].add_metric([r.monitor, r.column, "current"], r.samples_current)
        families["samples"].add_metric([r.monitor, r.column, "reference"], r.samples_reference)
        if r.missing_ratio is not None and math.isfinite(r.missing_ratio):
            families["missing"].add_metric([r.monitor, r.column], r.missing_ratio)

    def _add_thresholds(self, family: GaugeMetricFamily, results: list[LatestResult]) -> None:
        for monitor in self.monitors.values():
            columns = _threshold_columns(monitor) or sorted(
                {r.column for r in results if r.monitor == monitor.name})
            for column in columns:
                thresholds = monitor.thresholds_for(column)
                for severity in ("warning", "critical"):
                    family.add_metric([monitor.name, column, severity, thresholds.statistic],
                                      getattr(thresholds, severity))

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        column = ["monitor", "feature", "role"]
        families = {name: GaugeMetricFamily(metric, text, labels=column)
                    for name, metric, text in (*STATISTICS, *SIGNIFICANCE)}
        families.update(
            status=GaugeMetricFamily("driftmon_drift_status",
                                     "1 for the column's current status, 0 for the others",
                                     labels=[*column, "status"]),
            threshold=GaugeMetricFamily("driftmon_drift_threshold",
                                        "Alert threshold of the column's statistic",
                                        labels=["monitor", "feature", "severity", "statistic"]),
            samples=GaugeMetricFamily("driftmon_window_samples",
                                      "Observations in the latest current and reference windows",
                                      labels=["monitor", "feature", "window"]),
            missing=GaugeMetricFamily("driftmon_missing_ratio",
                                      "Share of the current window's observations that are missing",
                                      labels=["monitor", "feature"]),
            success=GaugeMetricFamily("driftmon_last_success_timestamp_seconds",
                                      "When the monitor last finished a run successfully",
                                      labels=["monitor"]),
            window_end=GaugeMetricFamily("driftmon_window_end_timestamp_seconds",
                                         "End of the newest window with stored results",
                                         labels=["monitor"]),
            store_up=GaugeMetricFamily("driftmon_store_up",
                                       "1 when the results database answers, else 0"),
            build=GaugeMetricFamily("driftmon_build_info", "driftmon build and compute device",
                                    labels=["version", "torch_version", "device"]),
        )
        families.update({key: GaugeMetricFamily(metric, text, labels=list(labels))
                         for key, metric, text, labels in segment_metrics.FAMILIES})
        return families


def _threshold_columns(monitor: MonitorSettings) -> list[str]:
    """The configured columns, and the segment mix of a segmented monitor (compared like a column)."""
    columns = [f.column for f in monitor.features]
    return [*columns, SEGMENT_PSEUDO_COLUMN] if monitor.segments is not None else columns


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _sample(name: str, labels: dict[str, str], value: float) -> str:
    """One sample line, as prometheus_client writes it: labels sorted by name."""
    text = ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in sorted(labels.items()))
    return f"{name}{{{text}}} {floatToGoString(value)}\n" if text else f"{name} {floatToGoString(value)}\n"


def _header(family: Metric, openmetrics: bool) -> str:
    help_text = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
    if openmetrics:
        help_text = help_text.replace('"', r'\"')
    return f"# HELP {family.name} {help_text}\n# TYPE {family.name} {family.type}\n"
