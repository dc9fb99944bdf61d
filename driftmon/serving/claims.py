"""Which windows a replica runs, and what became of each: claims, take-overs, give-ups.

The scheduler only says *when* a monitor runs; ``WindowClaims`` says *which*
windows that run computes:

* the latest ``catch_up`` windows, every tick that came since the monitor's
  previous run (a run that started late, or was skipped while the worker pool
  was busy, leaves no tick behind) and every window still pending (failed, or
  held by another replica), less the windows with results;
* on PostgreSQL each one is claimed with a lease (driftmon/serving/leases.py), in the
  statement that checks for results, renewed while it runs and released after, so one
  replica computes it: a steady run's bookkeeping is that statement and the release;
* a monitor's first run after start-up keeps every window since start-up's catch-up,
  however late the pool gets to it;
* windows older than the take-over rule keeps (driftmon/serving/retries.py: ``catch_up``
  plus the lease time, and never while a lease on it may be alive) are given
  up: each one without results is counted in ``driftmon_windows_missed_total``
  and logged, and stays without results, so ``driftmon backfill`` fills it;
* ``sweep`` finds lease rows that expired (their replica died): a window
  without results is taken over, whatever the schedule, and every other
  expired row is deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from driftmon.config import MonitorSettings
from driftmon.serving.leases import Leases
from driftmon.serving.retries import Pending, PendingWindows, horizon, keeps
from driftmon.store.repository import Repository
from driftmon.windows import TimeRange, interval_after, latest_tick, ticks

log = logging.getLogger(__name__)

# A daemon stalled for longer than this many ticks (a suspended machine) looks back
# this far only; the ticks before are counted missed without being listed.
LOOK_BACK_TICKS = 10_000



class WindowClaims:
    """Due windows, claims and give-ups of every monitor of one replica."""

    def __init__(self, results: Engine, repository: Repository, leases: Leases | None, lease_ttl: timedelta,
                 missed: Callable[[str, int], None], started: datetime | None = None):
        self.results = results
        self.repository = repository
        self.leases = leases  # None on SQLite: one daemon per database file, held by a file lock
        self.lease_ttl = lease_ttl
        self.missed = missed  # (monitor, windows given up without results)
        self.pending = PendingWindows()
        # The windows owed start with the catch-up windows at start-up, however late a
        # monitor's first run comes (a busy pool at start-up runs the last ones minutes later).
        self.started = started or datetime.now(UTC)
        self._looked_at: dict[str, datetime] = {}  # per monitor: the newest tick a run looked at

    # --- which windows ---------------------------------------------------------------

    def due(self, monitor: MonitorSettings, now: datetime) -> list[TimeRange]:
        """The windows this run computes, oldest first: claimed on PostgreSQL (one statement with
        the check for results; SQLite: one query), the ones the rule no longer keeps given up.

        A monitor's first run keeps every window since start-up's catch-up, however late it comes:
        thousands of monitors' first runs queue on the pool, and what start-up queued is owed."""
        latest = latest_tick(monitor.schedule, now)
        first_look = monitor.name not in self._looked_at
        ends = self._new_ticks(monitor, latest, now)
        pending = self.pending.windows(monitor.name)
        candidates = {TimeRange(end - monitor.window.size, end) for end in ends} | set(pending)
        self._looked_at[monitor.name] = max(latest, self._looked_at.get(monitor.name, latest))
        if not candidates:
            return []
        oldest_kept = horizon(monitor, now, self.lease_ttl)
        if first_look:
            oldest_kept = min(oldest_kept, min(ends, default=oldest_kept))
        kept = {w for w in candidates if keeps(w, pending.get(w) or Pending(), oldest_kept)}
        stored, claimed = self._stored_and_claimed(monitor, candidates, kept)
        for window in [w for w in candidates if w.end in stored]:
            self.pending.done(monitor.name, window)
        self._give_up(monitor, {w for w in candidates - kept if w.end not in stored}, now)
        owed = {w for w in kept if w.end not in stored}
        self.pending.track(monitor.name, owed)
        for window in owed:
            if window.end in claimed:
                self.pending.claimed(monitor.name, window)
            else:  # held by another replica: looked at again when its lease would have run out
                self.pending.held(monitor.name, window, now, self.lease_ttl)
                log.debug("window claimed by another replica", extra={
                    "event": "run.skipped_claimed", "monitor": monitor.name, "window_end": window.end.isoformat()})
        return sorted(w for w in owed if w.end in claimed)

    def _stored_and_claimed(self, monitor: MonitorSettings, candidates: set[TimeRange],
                            kept: set[TimeRange]) -> tuple[set[datetime], set[datetime]]:
        """(ends with results, ends this replica computes now) of the candidate windows."""
        if self.leases is None:
            stored = self._stored(monitor, candidates)
            return stored, {w.end for w in kept} - stored
        return self.leases.claim_due(monitor.name, sorted(w.end for w in candidates), sorted(w.end for w in kept))

    def _new_ticks(self, monitor: MonitorSettings, latest: datetime, now: datetime) -> list[datetime]:
        """The latest ``catch_up`` ticks, and every tick after the one the previous run looked at
        (for the first run: the ticks from the catch-up windows at start-up on)."""
        interval = interval_after(monitor.schedule, now)
        first = latest - interval * (monitor.catch_up - 1)
        previous = self._looked_at.get(monitor.name)
        if previous is None:
            previous = latest_tick(monitor.schedule, self.started) - interval * monitor.catch_up
        if previous < first:
            oldest = latest - interval * LOOK_BACK_TICKS
            if previous < oldest:
                # Not counted: other replicas may have stored them; backfill fills the rest.
                log.warning("the daemon stalled: windows before the look-back were not looked at", extra={
                    "event": "daemon.stalled", "monitor": monitor.name,
                    "from": previous.isoformat(), "to": oldest.isoformat()})
                previous = oldest
            first = previous + timedelta(microseconds=1)
        return list(ticks(monitor.schedule, first, latest))

    def _stored(self, monitor: MonitorSettings, windows: set[TimeRange]) -> set[datetime]:
        if not windows:
            return set()
        span = TimeRange(min(w.end for w in windows) - timedelta(microseconds=1), max(w.end for w in windows))
        with self.results.connect() as connection:
            return self.repository.stored_window_ends(connection, monitor.name, span)

    def _give_up(self, monitor: MonitorSettings, old: set[TimeRange], now: datetime) -> None:
        """The owed windows the take-over rule no longer keeps, counted missed and forgotten,
        unless another replica's live lease says it is still computing one (a long run)."""
        if not old:
            return
        alive = self.leases.alive(monitor.name, [w.end for w in old]) if self.leases else set()
        for window in [w for w in old if w.end in alive]:
            self.pending.held(monitor.name, window, now, self.lease_ttl)
        given_up = {w for w in old if w.end not in alive}
        if given_up:
            self.pending.give_up(monitor.name, list(given_up))
            self.missed(monitor.name, len(given_up))
            log.warning("windows given up without results: driftmon backfill fills them", extra={
                "event": "window.missed", "monitor": monitor.name, "windows": len(given_up),
                "first_window_end": min(w.end for w in given_up).isoformat(),
                "last_window_end": max(w.end for w in given_up).isoformat()})

    # --- claims ----------------------------------------------------------------------

    def running(self, monitor: MonitorSettings, window: TimeRange) -> AbstractContextManager:
        """While a claimed window runs: its lease renewed, then released."""
        return self.leases.held(monitor.name, window.end) if self.leases else nullcontext()

    def release(self, monitor: MonitorSettings, windows: list[TimeRange]) -> None:
        """Claimed windows a run will not compute (the daemon is stopping): free for others now."""
        if self.leases is not None and windows:
            self.leases.release(monitor.name, [w.end for w in windows])

    def finished(self, monitor: MonitorSettings, window: TimeRange, ok: bool, now: datetime) -> None:
        if ok:
            self.pending.done(monitor.name, window)
        else:
            self.pending.failed(monitor, window, now)

    def store_failed(self, monitor: MonitorSettings, now: datetime) -> datetime:
        """The store failed before a window was tried: when to run the monitor again."""
        return self.pending.store_failed(monitor, now)

    def next_retry(self, monitor: MonitorSettings) -> datetime | None:
        """When the monitor's pending windows are worth another run, if any are pending."""
        return self.pending.next_retry(monitor.name)

    # --- expired leases ----------------------------------------------------------------

    def sweep(self, monitors: list[MonitorSettings]) -> list[MonitorSettings]:
        """Take over the windows whose lease expired without results; delete the other expired
        rows. Returns the monitors with windows to take over (to run now)."""
        if self.leases is None:
            return []
        by_name = {m.name: m for m in monitors}
        taking_over = {}
        for name, end in self.leases.expired():
            monitor = by_name.get(name)
            window = _window_of(monitor, end) if monitor else None
            if window is not None and not self._stored(monitor, {window}):
                self.pending.take_over(name, window)
                taking_over[name] = monitor
                log.info("taking over a window whose lease expired", extra={
                    "event": "lease.expired", "monitor": name, "window_end": end.isoformat()})
            elif self.leases.delete_expired(name, end):
                # Stored, or no window of the config (a monitor or schedule since removed).
                log.info("expired lease deleted", extra={
                    "event": "lease.cleaned", "monitor": name, "window_end": end.isoformat()})
        return list(taking_over.values())


def _window_of(monitor: MonitorSettings, end: datetime) -> TimeRange | None:
    """The monitor's window ending at ``end``, if ``end`` is one of its schedule's ticks."""
    return TimeRange(end - monitor.window.size, end) if latest_tick(monitor.schedule, end) == end else None
