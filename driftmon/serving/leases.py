"""Which replica computes a monitor window: a lease row, short, renewed while the run is alive.

A claim lasts ``ttl`` (30 s by default) on the database's clock and is renewed
every third of it by a small thread while the run goes on, so a run that takes
minutes keeps its window, and a replica that crashed (SIGKILL, a lost machine)
loses it within ``ttl``: another replica then takes the window over. A run that
ends, well or not, releases its claim, so a failed window can be retried at
once. The results' unique constraint stays the backstop.

Expired rows (their holder died, or lost the database for a whole ``ttl``)
are found by ``expired`` and either taken over or deleted
(driftmon/serving/claims.py), so none stays behind; expiry is judged on the
database's clock (``Repository``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from driftmon.store.repository import Repository

log = logging.getLogger(__name__)


class Leases:
    """Claims on (monitor, window end) for one replica (``owner``) on PostgreSQL."""

    def __init__(self, results: Engine, repository: Repository, owner: str, ttl: timedelta):
        self.results = results
        self.repository = repository
        self.owner = owner
        self.ttl = ttl

    def claim(self, monitor: str, window_end: datetime) -> bool:
        with self.results.begin() as connection:
            return self.repository.claim_lease(connection, monitor, window_end, self.owner, self.ttl)

    @contextmanager
    def held(self, monitor: str, window_end: datetime) -> Iterator[None]:
        """Keep a claimed lease alive while the block runs, then release it."""
        done = threading.Event()
        keeper = threading.Thread(target=self._renew, args=(monitor, window_end, done),
                                  name=f"lease {monitor}", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            done.set()
            keeper.join(timeout=self.ttl.total_seconds())
            self.release(monitor, window_end)

    def _renew(self, monitor: str, window_end: datetime, done: threading.Event) -> None:
        while not done.wait(self.ttl.total_seconds() / 3):
            try:
                with self.results.begin() as connection:
                    kept = self.repository.renew_lease(connection, monitor, window_end, self.owner, self.ttl)
            except SQLAlchemyError as exc:  # the store is away: the run's own write will say so
                log.warning("could not renew a lease", extra={
                    "event": "lease.renew_failed", "monitor": monitor, "error": str(exc).splitlines()[0]})
                continue
            if not kept:
                log.warning("lease lost to another replica; the results' unique key keeps one copy", extra={
                    "event": "lease.lost", "monitor": monitor, "window_end": window_end.isoformat()})
                return

    def release(self, monitor: str, window_end: datetime) -> None:
        try:
            with self.results.begin() as connection:
                self.repository.release_lease(connection, monitor, window_end, self.owner)
        except SQLAlchemyError:  # it expires by itself within ttl
            log.warning("could not release a lease", extra={"event": "lease.release_failed", "monitor": monitor})

    def alive(self, monitor: str, window_ends: list[datetime]) -> set[datetime]:
        """Those of ``window_ends`` on which some replica holds a lease that has not expired."""
        if not window_ends:
            return set()
        with self.results.connect() as connection:
            return self.repository.live_leases(connection, monitor, window_ends)

    def expired(self) -> list[tuple[str, datetime]]:
        """(monitor, window end) of every lease that has run out: its holder is gone."""
        with self.results.connect() as connection:
            return self.repository.expired_leases(connection)

    def delete_expired(self, monitor: str, window_end: datetime) -> bool:
        """Delete the window's lease row if it is still expired (nobody claimed it since)."""
        with self.results.begin() as connection:
            return self.repository.delete_expired_lease(connection, monitor, window_end)
