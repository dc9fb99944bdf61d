"""`driftmon serve`: the scheduler, the HTTP endpoints and a graceful shutdown.

One APScheduler job per monitor, never overlapping itself (``max_instances=1``),
with missed runs coalesced into one and a misfire grace as long as the
schedule's interval, so a busy pool delays a run instead of dropping it. The
loop only schedules; which windows a run computes is ``WindowClaims``'
(driftmon/serving/claims.py): the latest ``catch_up`` windows, every tick since the
monitor's previous run, and the windows still pending, claimed with a lease
on PostgreSQL. A window that failed is retried with backoff before the next
tick, one held by another replica is looked at again when that replica's lease
would have run out, and a window given up is counted in
``driftmon_windows_missed_total`` (driftmon/serving/retries.py says when).

``every:`` schedules fire on the epoch-aligned ticks (multiples of the interval
since 1970-01-01 UTC), also after the catch-up run at start-up, which is off the
grid; cron schedules fire on their lines.

Several replicas may share one PostgreSQL results database: a lease row per
(monitor, window), claimed atomically and renewed while the run is alive
(driftmon/serving/leases.py), decides which one computes a window. Once per cycle
every replica refreshes its gauges from the results database, so all of them
export the same latest state, whichever computed it, and sweeps the expired
lease rows: a crashed replica's window is taken over, the rest deleted.
/healthz and /readyz read ``Health`` (driftmon/serving/health.py).
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
import threading
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import torch
from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from sqlalchemy.exc import SQLAlchemyError

import driftmon
from driftmon.app import App, open_app
from driftmon.config import Config, MonitorSettings, Schedule
from driftmon.cron import crontab_trigger
from driftmon.errors import ConfigError
from driftmon.outcomes import RunOutcome
from driftmon.serving.claims import WindowClaims
from driftmon.serving.health import Health
from driftmon.serving.health_metrics import HealthCollector, HealthState
from driftmon.serving.leases import Leases
from driftmon.serving.metrics import DriftCollector, DriftState
from driftmon.serving.multivariate_metrics import MultivariateCollector, MultivariateState
from driftmon.serving.run_metrics import RunMetrics
from driftmon.serving.server import MetricsServer
from driftmon.serving.signals import stop_on_signals
from driftmon.serving.store_health import StoreHealth
from driftmon.stats.divergence import resolve_device
from driftmon.store.database import sqlite_daemon_lock
from driftmon.store.lease_queries import LeaseQueries
from driftmon.store.segment_queries import changed_segment_rows
from driftmon.windows import EPOCH

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
# A thread that waits for the GIL asks the holder to let go after this long
# (CPython's default: 5 ms). An HTTP handler waits at every socket call while
# runs compute; 1 ms bounds each wait (bench_daemon.py: /metrics p99 on SQLite).
GIL_SWITCH_SECONDS = 0.001
ABANDON_WAIT_SECONDS = 5.0
# The gauges are refreshed from the results database once per shortest schedule
# interval, but at least this often (one query each time, never one per scrape).
REFRESH_AT_LEAST_EVERY = timedelta(minutes=1)


def schedule_interval(schedule: Schedule) -> timedelta:
    """The time between two ticks (for cron, the first gap after now)."""
    if schedule.every is not None:
        return schedule.every
    now = datetime.now(UTC)
    trigger = crontab_trigger(schedule.cron)  # crontab(5)'s meaning: 0 and 7 are Sunday
    first = trigger.get_next_fire_time(None, now)
    second = trigger.get_next_fire_time(first, first + timedelta(microseconds=1))
    return (second - first) if first and second else timedelta(days=1)


def refresh_interval(monitors: list[MonitorSettings]) -> timedelta:
    """How often the gauges are refreshed from the results database: once per cycle of
    the most frequent monitor, at most ``REFRESH_AT_LEAST_EVERY`` apart, at least 1 s."""
    shortest = min((schedule_interval(m.schedule) for m in monitors), default=REFRESH_AT_LEAST_EVERY)
    return max(timedelta(seconds=1), min(shortest, REFRESH_AT_LEAST_EVERY))


class EpochIntervalTrigger(IntervalTrigger):
    """Fires at ``anchor + k × interval`` (anchor: the epoch plus ``offset``) after any
    previous run, on the grid or not.

    APScheduler's IntervalTrigger counts the next run from the previous one, so after
    the start-up catch-up run (at 08:12:49 for ``every: 1m``) every later run came at
    :49, up to a whole interval after its window's end.
    """

    def __init__(self, interval: timedelta, offset: timedelta = timedelta(0)):
        self.anchor = EPOCH + offset
        super().__init__(seconds=interval.total_seconds(), start_date=self.anchor, timezone=UTC)

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime:
        after = previous_fire_time + timedelta(microseconds=1) if previous_fire_time else now
        return self.anchor + -((self.anchor - after) // self.interval) * self.interval  # first tick ≥ after


class Daemon:
    """Runs the monitors on their schedules and serves what they found."""

    def __init__(self, config: Config, registry: CollectorRegistry):
        self.config = config
        self.monitors = config.resolved_monitors()
        self.registry = registry
        self.state = DriftState()
        self.run_metrics = RunMetrics(registry)
        self.collector: DriftCollector | None = None
        self.data_health = HealthState()  # volume, freshness, schema (health_metrics.py)
        self.health_collector: HealthCollector | None = None
        self.multivariate = MultivariateState()  # drift between columns (multivariate_metrics.py)
        self.multivariate_collector: MultivariateCollector | None = None
        self.stop_event = threading.Event()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.app: App | None = None
        self.scheduler: BackgroundScheduler | None = None
        self.stuck = False  # runs still going after the grace period and the abandon wait
        self._inflight = 0
        self._inflight_changed = threading.Condition()
        self._monitor_locks: dict[str, threading.Lock] = {}
        self.store_health = StoreHealth(self._ping)
        self.health = Health(self.store_health, self.stop_event)
        self.claims: WindowClaims | None = None

    # --- lifecycle -------------------------------------------------------------

    def serve(self) -> int:
        """Run until SIGTERM/SIGINT (or ``stop()``); returns the exit code."""
        with sqlite_daemon_lock(self.config.database.url):
            self.open()
            try:
                server = self._bind()
                with stop_on_signals(self.stop):
                    self._run(server)
            finally:
                self.store_health.close()
                self.app.close()
        return 0

    def open(self) -> None:
        """The results database, migrated, and this replica's claims on it (leases on PostgreSQL)."""
        self.app = open_app(self.config)
        repository, ttl = self.app.pipeline.repository, self.config.server.lease_ttl
        # SQLite: one daemon per database file (a file lock), so no leases.
        leases = Leases(self.app.results, LeaseQueries(), self.owner, ttl) \
            if self.app.results.dialect.name == "postgresql" else None
        self.claims = WindowClaims(self.app.results, repository, leases, ttl, self.run_metrics.record_missed)

    def stop(self) -> None:
        self.stop_event.set()

    def _bind(self) -> MetricsServer:
        host, port = self.config.server.host, self.config.server.port
        try:
            server = MetricsServer(host, port, self.registry, self.health.health_problem, self.health.ready_problem,
                                   exposition=self.exposition, reports=self._report_pages(),
                                   config=self.config.server)
        except OSError as exc:
            raise ConfigError(f"server.port: cannot listen on {host}:{port}: {exc.strerror}") from exc
        device = str(resolve_device(self.config.compute.device))
        build = {"version": driftmon.__version__, "torch_version": torch.__version__, "device": device}
        self.collector = DriftCollector(self.state, self.monitors, build)
        self.registry.register(self.collector)
        self.health_collector = HealthCollector(self.data_health, self.monitors)
        self.registry.register(self.health_collector)
        self.multivariate_collector = MultivariateCollector(self.multivariate, self.monitors)
        self.registry.register(self.multivariate_collector)
        self.run_metrics.prepare(m.name for m in self.monitors)
        return server

    def _report_pages(self):
        """/report and /report/<monitor>: the HTML report of each configured monitor, from the store."""
        from driftmon.inspect.report import ReportPages  # matplotlib: imported when serving, not for --help

        return ReportPages(self.monitors, self.app.results, dtype=self.config.compute.dtype)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """/metrics: the drift, data health and multivariate families and the daemon's own counters,
        from text pre-rendered per monitor: the families generate_latest would write of the registry."""
        _, content_type = choose_encoder(accept)
        openmetrics = content_type.startswith("application/openmetrics-text")
        parts = [*self.collector.exposition_parts(openmetrics), *self.health_collector.exposition_parts(openmetrics),
                 *self.multivariate_collector.exposition_parts(openmetrics)]
        return b"".join([*parts, *self.run_metrics.exposition_parts(openmetrics),
                         b"# EOF\n" if openmetrics else b""]), content_type

    def _run(self, server: MetricsServer) -> None:
        server.start()
        log.info("serving", extra={"event": "daemon.serving", "address": f"{server.server_address[0]}:"
                                   f"{server.server_address[1]}", "monitors": len(self.monitors)})
        self._restore()
        # What start-up built (modules, config, restored state) lives as long as the process:
        # move it out of the cyclic GC's reach, so that a full collection, which holds the
        # GIL and stalls /metrics, walks only what the runs create.
        gc.collect()
        gc.freeze()
        sys.setswitchinterval(GIL_SWITCH_SECONDS)
        self.scheduler = self.health.scheduler = self._start_scheduler()
        try:
            while not self.stop_event.wait(HEARTBEAT_SECONDS):
                pass
        finally:
            self._shutdown(server)

    def _restore(self) -> None:
        """Gauges come back from the latest stored results before /readyz turns ready."""
        rows, successes = self._read_latest()
        self.state.restore(rows, successes)
        self.health.restored()
        log.info("restored", extra={"event": "daemon.restored", "results": len(rows)})

    def _read_latest(self) -> tuple[list[dict], dict[str, datetime]]:
        with self.app.results.connect() as connection:
            rows = self.app.pipeline.repository.latest_results(connection)
            # Segmented monitors: their newest window's segment rows, when it changed.
            rows += changed_segment_rows(connection, rows, [m.name for m in self.monitors if m.segments],
                                         self.state.segment_marks())
            successes = self.app.pipeline.repository.last_successes(connection)
            self.data_health.restore(connection)
            self.multivariate.restore(connection)
        return rows, successes

    def refresh(self) -> None:
        """Take in the newest stored results, whoever stored them: the windows other
        replicas computed, a backfill's, recomputed ones. One query per cycle; a
        scrape still reads memory only."""
        try:
            rows, successes = self._read_latest()
        except SQLAlchemyError as exc:
            self.state.store_up = False
            log.warning("could not refresh the gauges from the results database", exc_info=exc,
                        extra={"event": "daemon.refresh_failed"})
            return
        self.state.restore(rows, successes)

    def sweep_leases(self) -> None:
        """Once per cycle: windows whose lease expired (a replica died) are taken over now,
        the other expired lease rows deleted."""
        try:
            taking_over = self.claims.sweep(self.monitors)
        except SQLAlchemyError as exc:
            log.warning("could not sweep the expired leases", exc_info=exc, extra={"event": "lease.sweep_failed"})
            return
        for monitor in taking_over:
            self._retry_at(monitor, datetime.now(UTC))

    def _start_scheduler(self) -> BackgroundScheduler:
        scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(self.config.compute.worker_count),
                       "heartbeat": ThreadPoolExecutor(1), "refresh": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        now = self.claims.started = datetime.now(UTC)  # the windows owed start with this start's catch-up
        for monitor in self.monitors:
            scheduler.add_job(
                self.run_monitor, _trigger(monitor.schedule), args=[monitor], id=monitor.name,
                name=f"monitor {monitor.name}", next_run_time=now,  # catch up at once
                misfire_grace_time=max(1, int(schedule_interval(monitor.schedule).total_seconds())),
            )
        scheduler.add_job(self.heartbeat, IntervalTrigger(seconds=HEARTBEAT_SECONDS), id="heartbeat",
                          executor="heartbeat", next_run_time=now, misfire_grace_time=None)
        # Half a cycle after the ticks: by then the replica that claimed a window has stored it.
        every = refresh_interval(self.monitors)
        for job in (self.refresh, self.sweep_leases):
            scheduler.add_job(job, EpochIntervalTrigger(every, offset=every / 2), id=job.__name__,
                              executor="refresh", misfire_grace_time=None)
        scheduler.add_listener(self._missed, EVENT_JOB_MISSED)
        scheduler.start()
        return scheduler

    def _missed(self, event: JobExecutionEvent) -> None:
        # Later than its misfire grace: the next run still computes the window (every tick
        # since the previous run is due), unless the take-over rule gave it up by then.
        log.warning("run missed its start", extra={
            "event": "run.missed", "monitor": event.job_id,
            "scheduled_at": event.scheduled_run_time.isoformat()})

    def _shutdown(self, server: MetricsServer) -> None:
        grace = self.config.server.shutdown_grace.total_seconds()
        log.info("stopping: no new runs", extra={"event": "daemon.stopping", "grace_seconds": grace,
                                                 "runs_in_flight": self._inflight})
        self.scheduler.shutdown(wait=False)
        if not self._wait_for_runs(grace):
            log.warning("grace period over: abandoning runs in flight", extra={
                "event": "daemon.abandoning", "runs_in_flight": self._inflight})
            self.app.pipeline.abandon.set()
            cancelled = self.app.pipeline.cancel_source_reads()
            log.info("source queries cancelled", extra={"event": "daemon.queries_cancelled", "queries": cancelled})
            self.stuck = not self._wait_for_runs(ABANDON_WAIT_SECONDS)
        server.stop()
        log.info("stopped", extra={"event": "daemon.stopped"})

    # --- runs ---------------------------------------------------------------------

    def run_monitor(self, monitor: MonitorSettings) -> None:
        """The scheduled job (and its retries): every due window of one monitor, oldest first."""
        lock = self._monitor_locks.setdefault(monitor.name, threading.Lock())
        if not lock.acquire(blocking=False):
            return  # a run of this monitor is going on: it covers the due windows
        try:
            self._run_due(monitor)
            self._retry_at(monitor, self.claims.next_retry(monitor))
        except SQLAlchemyError as exc:
            self.store_health.write_failed(str(exc).strip().splitlines()[0])
            self.state.store_up = False
            self.run_metrics.record_failure(monitor.name, "store")
            log.error("results database unavailable", exc_info=exc,
                      extra={"event": "run.store_unavailable", "monitor": monitor.name})
            self._retry_at(monitor, self.claims.store_failed(monitor, datetime.now(UTC)))
        finally:
            lock.release()

    def _run_due(self, monitor: MonitorSettings) -> None:
        due = self.claims.due(monitor, datetime.now(UTC))  # claimed already, on PostgreSQL
        for position, window in enumerate(due):
            if self.stop_event.is_set():
                self.claims.release(monitor, due[position:])
                return
            with self._in_flight(), self.claims.running(monitor, window):
                outcome = self.app.pipeline.run(monitor, self.config.source_url(monitor.source),
                                                window, scheduled_at=window.end)
            self.claims.finished(monitor, window, outcome.status == "ok", datetime.now(UTC))
            if outcome.status != "abandoned":
                self._record(outcome)

    def _retry_at(self, monitor: MonitorSettings, when: datetime | None) -> None:
        """One retry job per monitor, replaced by a newer one; none when nothing is pending."""
        if when is None or self.scheduler is None or self.stop_event.is_set():
            return
        self.scheduler.add_job(
            self.run_monitor, "date", run_date=max(when, datetime.now(UTC)), args=[monitor],
            id=f"{monitor.name}:retry", name=f"retry {monitor.name}", replace_existing=True,
            misfire_grace_time=None)

    def _record(self, outcome: RunOutcome) -> None:
        # Windows recomputed for late rows are older than the run's own: recorded first.
        finished = datetime.now(UTC)
        for recomputed in outcome.recomputed:
            self.state.record(recomputed, finished)
            self.data_health.record(recomputed)
            self.multivariate.record(recomputed)
            self.run_metrics.record(recomputed)
        self.state.record(outcome, finished)
        self.data_health.record(outcome)
        self.multivariate.record(outcome)
        self.run_metrics.record(outcome)
        if outcome.status == "ok":
            self.store_health.write_succeeded()
        elif outcome.reason == "store":
            self.store_health.write_failed(outcome.error or "unknown error")
        self.state.store_up = self.store_health.problem is None

    @contextmanager
    def _in_flight(self):
        with self._inflight_changed:
            self._inflight += 1
        try:
            yield
        finally:
            with self._inflight_changed:
                self._inflight -= 1
                self._inflight_changed.notify_all()

    def _wait_for_runs(self, seconds: float) -> bool:
        with self._inflight_changed:
            return self._inflight_changed.wait_for(lambda: self._inflight == 0, timeout=seconds)

    # --- health -------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Runs on the scheduler's own thread: proves the scheduler ticks, checks the store."""
        self.health.beat()
        self.store_health.check()
        self.state.store_up = self.store_health.problem is None

    def _ping(self) -> None:
        with self.app.results.connect() as connection:
            self.app.pipeline.repository.ping(connection)


def _trigger(schedule: Schedule):
    if schedule.every is not None:
        # Anchored at the epoch: ticks fall where windows.latest_tick puts them.
        return EpochIntervalTrigger(schedule.every)
    return crontab_trigger(schedule.cron)  # crontab(5)'s meaning: 0 and 7 are Sunday
