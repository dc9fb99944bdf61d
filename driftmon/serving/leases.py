"""Which replica computes a monitor window: a lease row, short, renewed while the run is alive.

A claim lasts ``ttl`` (30 s by default) on the database's clock and is renewed
every third of it, with every other lease the replica holds, by one keeper
thread while the run goes on, so a run that takes minutes keeps its window,
and a replica that crashed (SIGKILL, a lost machine) loses it within ``ttl``:
another replica then takes the window over. A run that ends, well or not,
releases its claim, so a failed window can be retried at once. The results' unique constraint stays the backstop.

Expired rows (their holder died, or lost the database for a whole ``ttl``)
are found by ``expired`` and either taken over or deleted
(driftmon/serving/claims.py), so none stays behind; expiry is judged on the
database's clock (driftmon/store/lease_queries.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from driftmon.store.database import single_statements
from driftmon.store.lease_queries import LeaseQueries

log = logging.getLogger(__name__)


class Leases:
    """Claims on (monitor, window end) for one replica (``owner``) on PostgreSQL.

    One keeper thread renews every lease this replica holds in one statement, every third
    of ``ttl``: a thread and a statement per running window cost more than the run's own
    bookkeeping once thousands of monitors share a daemon.
    """

    def __init__(self, results: Engine, queries: LeaseQueries, owner: str, ttl: timedelta):
        self.results = results
        self.queries = queries
        self.owner = owner
        self.ttl = ttl
        self._held: set[tuple[str, datetime]] = set()
        self._lock = threading.Lock()
        self._keeper: threading.Thread | None = None

    def claim(self, monitor: str, window_end: datetime) -> bool:
        with self.results.begin() as connection:
            return self.queries.claim_lease(connection, monitor, window_end, self.owner, self.ttl)

    def claim_due(self, monitor: str, candidates: list[datetime],
                  wanted: list[datetime]) -> tuple[set[datetime], set[datetime]]:
        """(ends of ``candidates`` with results, ends of ``wanted`` claimed now): one statement."""
        with single_statements(self.results) as connection:
            stored, claimed = self.queries.claim_due_leases(connection, monitor, candidates, wanted,
                                                               self.owner, self.ttl)
        # Kept alive from now: a run computes its claimed windows one after the other.
        self._hold(monitor, claimed)
        return stored, claimed

    @contextmanager
    def held(self, monitor: str, window_end: datetime) -> Iterator[None]:
        """Keep a claimed lease alive while the block runs, then release it."""
        self._hold(monitor, [window_end])
        try:
            yield
        finally:
            self.release(monitor, [window_end])

    def _hold(self, monitor: str, window_ends) -> None:
        with self._lock:
            self._held.update((monitor, end) for end in window_ends)
            if self._held and (self._keeper is None or not self._keeper.is_alive()):
                self._keeper = threading.Thread(target=self._renew, name="lease keeper", daemon=True)
                self._keeper.start()

    def _renew(self) -> None:
        """Renew every held lease each third of ``ttl``; ends once none is held."""
        while True:
            time.sleep(self.ttl.total_seconds() / 3)
            with self._lock:
                held = sorted(self._held)
                if not held:
                    self._keeper = None
                    return
            try:
                with single_statements(self.results) as connection:
                    kept = self.queries.renew_leases(connection, held, self.owner, self.ttl)
            except SQLAlchemyError as exc:  # the store is away: the run's own write will say so
                log.warning("could not renew the leases", extra={
                    "event": "lease.renew_failed", "leases": len(held), "error": str(exc).splitlines()[0]})
                continue
            for monitor, window_end in sorted(set(held) - kept):
                with self._lock:
                    if (monitor, window_end) not in self._held:
                        continue  # released meanwhile
                log.warning("lease lost to another replica; the results' unique key keeps one copy", extra={
                    "event": "lease.lost", "monitor": monitor, "window_end": window_end.isoformat()})

    def release(self, monitor: str, window_ends: list[datetime]) -> None:
        """Give up our claims on these windows of the monitor (one statement)."""
        if not window_ends:
            return
        with self._lock:
            self._held.difference_update((monitor, end) for end in window_ends)
        try:
            with single_statements(self.results) as connection:
                self.queries.release_leases(connection, monitor, window_ends, self.owner)
        except SQLAlchemyError:  # they expire by themselves within ttl
            log.warning("could not release a lease", extra={"event": "lease.release_failed", "monitor": monitor})

    def alive(self, monitor: str, window_ends: list[datetime]) -> set[datetime]:
        """Those of ``window_ends`` on which some replica holds a lease that has not expired."""
        if not window_ends:
            return set()
        with self.results.connect() as connection:
            return self.queries.live_leases(connection, monitor, window_ends)

    def expired(self) -> list[tuple[str, datetime]]:
        """(monitor, window end) of every lease that has run out: its holder is gone."""
        with self.results.connect() as connection:
            return self.queries.expired_leases(connection)

    def delete_expired(self, monitor: str, window_end: datetime) -> bool:
        """Delete the window's lease row if it is still expired (nobody claimed it since)."""
        with self.results.begin() as connection:
            return self.queries.delete_expired_lease(connection, monitor, window_end)
