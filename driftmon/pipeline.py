"""One run of one monitor: windows → source → divergence → thresholds → results.

Each step is a small function. The run's results and its run row are written
in ONE transaction: all or nothing. Any failure is recorded as a failed run row
naming the monitor (and table and column where known), with no results.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from driftmon.config import ComputeConfig, MonitorSettings, RollingReference, SeasonalReference
from driftmon.counting.incremental import SliceCounter, SlicedWindow
from driftmon.counting.profiles import Completeness, reference_profile
from driftmon.counting.rolling import RollingReferences
from driftmon.counting.seasonal import SeasonalCounts, holes, seasonal_reference
from driftmon.counting.slices import lateness
from driftmon.errors import DriftmonError, SourceError, StoreError
from driftmon.fingerprints import results_fingerprint
from driftmon.multivariate.stage import MultivariateStage, MultivariateWork
from driftmon.outcomes import OK, ColumnResult, RunOutcome
from driftmon.sources import Source, open_source
from driftmon.sources.profile import ReferenceProfile, WindowCounts
from driftmon.sources.schema_watch import SchemaWatch, schema_note
from driftmon.sources.sql import statement_timeout
from driftmon.stats.volume import VolumeCheck
from driftmon.store.database import EngineRegistry
from driftmon.store.multivariate_queries import write_multivariate
from driftmon.store.repository import Repository
from driftmon.store.run_writes import RunWrite, SliceRows, WindowRows, write_run
from driftmon.urls import mask_credentials
from driftmon.window_health import health_row, newest_row_at, window_volume
from driftmon.window_results import window_statistics
from driftmon.windows import TimeRange, bins_range, reference_range

log = logging.getLogger(__name__)

# A run's writes to the results database: a store that hangs fails the run instead.
STORE_TIMEOUT = timedelta(seconds=60)
# Runs a backfill asks for, window after window: their "run finished" lines are DEBUG (its
# progress bar and closing summary stand for them); a failed run is logged at ERROR whatever asked.
BULK_TRIGGERS = frozenset({"backfill", "recount"})


# --- the run ------------------------------------------------------------------


@dataclass
class _Reference:
    """What a window is compared with (Pipeline._reference), and the slices it counted to get it."""

    profile: ReferenceProfile
    rows: list[dict] = field(default_factory=list)
    overwrite: bool = False
    seasonal: SeasonalCounts | None = None


@dataclass
class _Work:
    """What a run computed, before it is stored."""

    counts: WindowCounts
    results: list[ColumnResult]
    sliced: SlicedWindow | None
    recomputed: list[RunOutcome]
    volume: VolumeCheck | None = None
    newest_row_at: datetime | None = None
    multivariate: MultivariateWork | None = None



class Pipeline:
    """Runs monitors against their sources and stores what it finds."""

    def __init__(self, results: Engine, compute: ComputeConfig, engines: EngineRegistry,
                 repository: Repository | None = None, clock: Callable[[], datetime] | None = None):
        self.results = results
        self.compute = compute
        self.engines = engines
        self.repository = repository or Repository()
        # The clock that decides whether a slice is sealed and a profile complete; tests move it.
        self.clock = clock or (lambda: datetime.now(UTC))
        self.slices = SliceCounter(self.repository, results, self.clock)
        self.schemas = SchemaWatch(results, self.clock)
        self.rolling = RollingReferences(self.slices)
        self.multivariate = MultivariateStage(results, self.clock, compute.device)
        self._sources: dict[str, tuple[MonitorSettings, Source]] = {}
        self._profiles: dict[str, ReferenceProfile] = {}
        # References recounted by this process (backfill --recount): once each, not once per window.
        self._recounted: set[tuple[str, str, TimeRange]] = set()
        self.engine_calls = 0  # one per successful monitor run; tests read it
        # Set at shutdown once the grace period is over: runs still computing
        # then end without writing anything.
        self.abandon = threading.Event()

    def source_for(self, monitor: MonitorSettings, url: str) -> Source:
        cached = self._sources.get(monitor.name)
        if cached is None or cached[0] != monitor:
            key = f"monitor {monitor.name!r} source.url" if monitor.source.url else "database.url"
            cached = (monitor, open_source(monitor, self.engines.get(url, key)))
            self._sources[monitor.name] = cached
        return cached[1]

    def run(self, monitor: MonitorSettings, source_url: str, window: TimeRange,
            scheduled_at: datetime | None = None, *, trigger: str = "schedule",
            recount: bool = False) -> RunOutcome:
        """Compute and store one window. ``recount`` reads the window's slices from the
        source again, sealed ones included (``backfill --recount``: rows that came later
        than ``lateness``)."""
        started, clock = datetime.now(UTC), time.perf_counter()
        reference = reference_range(monitor.reference, window)
        try:
            work = self._compute(monitor, source_url, window, reference, recount)
            schema = self._check_schema(monitor, reference, None)
            outcome = RunOutcome(monitor.name, window, OK, work.results, reference, schema=schema,
                                 rows_scanned=work.counts.rows_scanned,
                                 duration_seconds=time.perf_counter() - clock, trigger=trigger,
                                 recomputed=work.recomputed,
                                 fingerprint=results_fingerprint(monitor, source_url),
                                 volume=work.volume, newest_row_at=work.newest_row_at,
                                 multivariate=work.multivariate.result if work.multivariate else None)
            if self.abandon.is_set():
                return self._abandoned(outcome)
            self._store(outcome, started, scheduled_at, work)
        except Exception as exc:  # noqa: BLE001  every failure becomes a failed run row, counted and logged
            schema = self._check_schema(monitor, reference, exc)
            outcome = RunOutcome(monitor.name, window, "failed", [], reference, schema=schema,
                                 error=_describe(monitor, exc) + schema_note(schema), reason=_reason(exc),
                                 duration_seconds=time.perf_counter() - clock, trigger=trigger)
            if not isinstance(exc, DriftmonError | RuntimeError | ValueError):
                log.error("unexpected error in a run", exc_info=exc, extra={
                    "event": "run.unexpected_error", "monitor": monitor.name})
            self._store_failure(outcome, started, scheduled_at)
        level = logging.DEBUG if trigger in BULK_TRIGGERS else logging.INFO
        for late in outcome.recomputed:
            _log_outcome(late, level)
        _log_outcome(outcome, level)
        return outcome

    def _check_schema(self, monitor: MonitorSettings, reference: TimeRange, exc: BaseException | None) -> dict | None:
        """The source table against its baseline (driftmon/sources/schema_watch.py), when due:
        after a source failure, when the reference moved, or every few minutes."""
        cached = self._sources.get(monitor.name)
        if cached is None or cached[0] != monitor or not self.schemas.due(
                monitor.name, failed=isinstance(exc, SourceError), reference=reference):
            return None
        try:
            return self.schemas.check(monitor.name, cached[1], reference, failed=exc is not None)
        except Exception as problem:  # noqa: BLE001  an unreachable source: the run's own error says so
            log.warning("schema check failed: %s", problem, extra={
                "event": "schema.check_failed", "monitor": monitor.name})
            return None

    def cancel_source_reads(self) -> int:
        """At shutdown, once runs are abandoned: stop their queries on the sources too."""
        return sum(source.reader.cancel() for _, source in list(self._sources.values()))

    def _abandoned(self, outcome: RunOutcome) -> RunOutcome:
        log.warning("run abandoned at shutdown; nothing written", extra={
            "event": "run.abandoned", "monitor": outcome.monitor,
            "window_end": outcome.window.end.isoformat()})
        return RunOutcome(outcome.monitor, outcome.window, "abandoned", reference=outcome.reference)

    def _compute(self, monitor, source_url, window, reference, recount=False) -> _Work:
        source = self.source_for(monitor, source_url)
        base = self._profile(monitor, source, self._bins_range(monitor, reference, window), recount,
                             holes(monitor, window))
        if base.range != reference and not base.complete and isinstance(monitor.reference, RollingReference):
            # The re-cut range holds too few rows (a table younger than it): bins from the
            # reference itself, re-cut at each move, until a re-cut range is complete.
            base = self._profile(monitor, source, reference, recount)
        chosen = self._reference(monitor, source, base, reference, window, recount)
        planned = None if monitor.multivariate is None else \
            self.multivariate.plan(monitor, source, base, reference, window, recount)
        sliced = self.slices.window(monitor, source, chosen.profile, window, recount=recount,
                                    companion=planned.companion if planned else None)
        if sliced is not None:
            sliced.rows = chosen.rows + sliced.rows
            sliced.overwrite = chosen.overwrite
        counts = sliced.counts if sliced else source.counts(chosen.profile, window)
        results = self._statistics(monitor, counts, reference)
        recomputed = self._recompute_changed(monitor, source, base, reference, window, sliced)
        volume = window_volume(monitor, counts, chosen.profile, chosen.seasonal)
        multivariate = None if planned is None else self.multivariate.finish(planned)
        return _Work(counts, results, sliced, recomputed, volume, newest_row_at(sliced, counts), multivariate)

    @staticmethod
    def _bins_range(monitor: MonitorSettings, reference: TimeRange, window: TimeRange) -> TimeRange:
        """Where the bins come from: a rolling events reference's own ``rebin`` range, else the reference's."""
        if isinstance(monitor.reference, RollingReference) and monitor.source.kind == "events":
            return bins_range(monitor.reference, window, monitor.name)
        return reference

    def _reference(self, monitor, source, base, reference, window, recount=False) -> _Reference:
        """The profile a window is compared with: its bins, and the counts of its reference."""
        if isinstance(monitor.reference, SeasonalReference):
            seasonal = seasonal_reference(self.slices, monitor, source, base, window)
            return _Reference(seasonal.profile, seasonal.rows, seasonal.overwrite, seasonal)
        if isinstance(monitor.reference, RollingReference) and monitor.source.kind == "events":
            rolled = self.rolling.reference(monitor, source, base, reference, window, recount=recount)
            return _Reference(rolled.profile, rolled.rows, rolled.overwrite)
        return _Reference(base)

    def _profile(self, monitor: MonitorSettings, source: Source, reference: TimeRange,
                 recount: bool = False, holes: tuple[TimeRange, ...] = ()) -> ReferenceProfile:
        """The reference profile, read back from the store once per range: complete stored
        profiles never change, except by a recount, which this process does once per range."""
        recount_key = (monitor.name, source.fingerprint, reference)
        recount = recount and recount_key not in self._recounted
        cached = self._profiles.get(monitor.name)
        if not recount and cached is not None and cached.range == reference and cached.complete \
                and source.fits(cached):
            return cached
        completeness = Completeness(self.clock(), lateness(monitor), monitor.min_samples)
        profile = reference_profile(self.repository, self.results, source, monitor.name, reference,
                                    completeness, recount=recount, holes=holes)
        if recount:
            self._recounted.add(recount_key)
        self._profiles[monitor.name] = profile
        return profile

    def _statistics(self, monitor, counts: WindowCounts, reference: TimeRange) -> list[ColumnResult]:
        results = window_statistics(monitor, counts, reference, self.compute)
        self.engine_calls += 1
        return results

    def _recompute_changed(self, monitor, source, base, reference, window, sliced) -> list[RunOutcome]:
        """Stored windows that used a slice this run's recount changed (late rows), recomputed."""
        ends = self.slices.windows_using(monitor, sliced.changed) if sliced else None
        if ends is None:
            return []
        with self.results.connect() as connection:
            stored = self.repository.stored_window_ends(connection, monitor.name, ends)
        outcomes = []
        for end in sorted(stored - {window.end}):
            earlier = TimeRange(end - monitor.window.size, end)
            if reference_range(monitor.reference, earlier) != reference:
                continue  # counted under another profile: its slices are not these
            chosen = self._reference(monitor, source, base, reference, earlier)  # a seasonal one: its own lags
            counts = self.slices.recount_of(monitor, source, chosen.profile, sliced, earlier)
            if counts is None:
                log.warning("late rows changed a window whose slices are gone; not recomputed", extra={
                    "event": "run.late_window_skipped", "monitor": monitor.name,
                    "window_end": end.isoformat()})
                continue
            outcomes.append(RunOutcome(monitor.name, earlier, OK, self._statistics(monitor, counts, reference),
                                       reference, trigger="late_data"))
        return outcomes

    def _run_row(self, outcome: RunOutcome, started: datetime, scheduled_at) -> dict:
        return {
            "monitor": outcome.monitor, "scheduled_at": scheduled_at, "started_at": started,
            "finished_at": datetime.now(UTC), "window_start": outcome.window.start,
            "window_end": outcome.window.end,
            "reference_start": outcome.reference.start if outcome.reference else None,
            "reference_end": outcome.reference.end if outcome.reference else None,
            "status": outcome.status, "error": outcome.error,
            "columns": sum(r.segment is None for r in outcome.results),
            "rows_scanned": outcome.rows_scanned, "duration_seconds": outcome.duration_seconds,
            "trigger": outcome.trigger,
        }

    def _store(self, outcome: RunOutcome, started: datetime, scheduled_at, work: _Work) -> None:
        """Slices, recomputed windows, this window's results and its health row: one transaction,
        in as few statements as the dialect allows (driftmon/store/run_writes.py: one on PostgreSQL)."""
        monitor = self._sources[outcome.monitor][0]
        windows = [self._store_results(late, started, None, outcome.fingerprint) for late in outcome.recomputed]
        windows.append(self._store_results(outcome, started, scheduled_at, outcome.fingerprint))
        health = health_row(monitor, outcome.window, outcome.volume, outcome.newest_row_at, outcome.fingerprint,
                            datetime.now(UTC))
        slices = None if work.sliced is None else self._store_slices(monitor, outcome, work.sliced)
        try:
            with self.results.begin() as connection, statement_timeout(connection, STORE_TIMEOUT):
                write_run(connection, RunWrite(windows, slices, health))
                if work.multivariate is not None:
                    mv = work.multivariate
                    write_multivariate(connection, outcome.monitor, mv.fit_row, mv.slice_rows, mv.ended_by,
                                       mv.result.as_row(datetime.now(UTC)))
        except SQLAlchemyError as exc:
            raise StoreError(f"storing the results failed: {_first_line(exc)}") from exc

    def _store_results(self, outcome: RunOutcome, started: datetime, scheduled_at,
                       fingerprint: str | None) -> WindowRows:
        """A window's run row and result rows; the write gives the results their run's id."""
        now = datetime.now(UTC)
        rows = [{**r.as_row(None, now), "fingerprint": fingerprint} for r in outcome.results]
        return WindowRows(self._run_row(outcome, started, scheduled_at), rows)

    def _store_slices(self, monitor: MonitorSettings, outcome: RunOutcome, sliced: SlicedWindow) -> SliceRows:
        """The window's new slice rows, and the retention delete of those no window needs."""
        return SliceRows(outcome.monitor, sliced.rows, self.slices.retention_cutoff(monitor, outcome.window),
                         sliced.profile_key, overwrite_sealed=outcome.trigger == "recount" or sliced.overwrite)

    def _store_failure(self, outcome: RunOutcome, started: datetime, scheduled_at) -> None:
        try:
            with self.results.begin() as connection:
                self.repository.insert_run(connection, self._run_row(outcome, started, scheduled_at))
        except Exception as exc:  # the store itself is down: the log line is all that is left
            log.error("could not record the failed run", exc_info=exc,
                      extra={"event": "run.record_failed", "monitor": outcome.monitor})


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _reason(exc: BaseException) -> str:
    """A short, bounded label for the failures counter."""
    if isinstance(exc, SourceError):
        return "source"
    if isinstance(exc, StoreError):
        return "store"
    return "compute" if isinstance(exc, RuntimeError | ValueError) and not isinstance(exc, DriftmonError) \
        else "other"


def _describe(monitor: MonitorSettings, exc: BaseException) -> str:
    """The run's error as stored in runs.error and logged; a URL's password in it is masked."""
    message = mask_credentials(str(exc))
    if isinstance(exc, RuntimeError):  # torch's errors, CUDA's out-of-memory included
        message = f"compute failed: {message.splitlines()[0] if message else type(exc).__name__}"
    elif not isinstance(exc, DriftmonError | ValueError):  # a defect: say what kind
        message = f"unexpected {type(exc).__name__}: {message.splitlines()[0] if message else ''}".rstrip(": ")
    return message if f"monitor {monitor.name!r}" in message else f"monitor {monitor.name!r}: {message}"


def _log_outcome(outcome: RunOutcome, level: int = logging.INFO) -> None:
    statuses = Counter(r.status for r in outcome.results)
    fields = {
        "event": "run.finished" if outcome.status == OK else "run.failed",
        "monitor": outcome.monitor,
        "window_start": outcome.window.start.isoformat(),
        "window_end": outcome.window.end.isoformat(),
        "columns": len(outcome.results),
        "rows_scanned": outcome.rows_scanned,
        "statuses": dict(statuses),
        "duration_seconds": round(outcome.duration_seconds, 4),
    }
    if outcome.status == OK:
        log.log(level, "monitor run finished", extra=fields)
    else:
        log.error("monitor run failed: %s", outcome.error, extra=fields)
