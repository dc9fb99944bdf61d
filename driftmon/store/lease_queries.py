"""The lease queries of replicas sharing one PostgreSQL results database (README, "Running with
PostgreSQL, and replicas"): claim a window, claim the due ones, renew, release, and the janitor's
view of expired leases. driftmon/serving/leases.py runs them, each in autocommit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from driftmon.store.models import Lease, Result
from driftmon.store.stored_times import stored_utc

_leases = Lease.__table__
_results = Result.__table__


class LeaseQueries:
    """Every query of the leases table."""

    def claim_lease(self, connection: Connection, monitor: str, window_end: datetime,
                    owner: str, ttl: timedelta) -> bool:
        """Atomically claim (or take over an expired claim on) a monitor window.

        PostgreSQL judges expiry by its own clock, so replicas with skewed clocks
        agree. SQLite serves one daemon per file, so the local clock is the clock.
        """
        if connection.dialect.name == "postgresql":
            insert, now = postgresql.insert, sa.func.now()
            expires = now + sa.literal(ttl, sa.Interval)
        else:
            moment = datetime.now(UTC)
            insert, now = sqlite.insert, sa.literal(moment, _leases.c.expires_at.type)
            expires = sa.literal(moment + ttl, _leases.c.expires_at.type)
        statement = insert(_leases).values(
            monitor=monitor, window_end=window_end, owner=owner, expires_at=expires
        )
        statement = statement.on_conflict_do_update(
            index_elements=["monitor", "window_end"],
            set_={"owner": statement.excluded.owner, "expires_at": statement.excluded.expires_at},
            where=_leases.c.expires_at < now,
        ).returning(_leases.c.owner)
        return connection.execute(statement).scalar() == owner

    def claim_due_leases(self, connection: Connection, monitor: str, candidates: list[datetime],
                         wanted: list[datetime], owner: str, ttl: timedelta) -> tuple[set[datetime], set[datetime]]:
        """PostgreSQL, in ONE statement: which ``candidates`` have results, and claims on those of
        ``wanted`` that have none (a window nobody holds, or whose lease expired).

        Returns (ends with results, ends claimed by ``owner``). The results are read in the
        statement's snapshot; a replica that stores a window and lets go of its lease in between
        leaves it claimed here, and it is computed twice (the upsert keeps one copy).
        """
        ends_type = postgresql.ARRAY(_leases.c.window_end.type)
        stored = sa.select(_results.c.window_end).distinct().where(
            _results.c.monitor == monitor,
            _results.c.window_end == sa.func.any(sa.bindparam("candidates", candidates, type_=ends_type)),
        ).cte("stored")
        wanted_ends = sa.select(
            sa.func.unnest(sa.bindparam("wanted", wanted, type_=ends_type)).label("window_end")).subquery("wanted")
        now = sa.func.now()
        insert = postgresql.insert(_leases).from_select(
            ["monitor", "window_end", "owner", "expires_at"],
            sa.select(sa.literal(monitor, _leases.c.monitor.type), wanted_ends.c.window_end,
                      sa.literal(owner, _leases.c.owner.type), now + sa.literal(ttl, sa.Interval))
            .where(wanted_ends.c.window_end.not_in(sa.select(stored.c.window_end))))
        claimed = insert.on_conflict_do_update(
            index_elements=["monitor", "window_end"],
            set_={"owner": insert.excluded.owner, "expires_at": insert.excluded.expires_at},
            where=_leases.c.expires_at < now,
        ).returning(_leases.c.window_end).cte("claimed")
        statement = sa.union_all(
            sa.select(sa.literal(True).label("stored"), stored.c.window_end),
            sa.select(sa.literal(False).label("stored"), claimed.c.window_end))
        found: tuple[set[datetime], set[datetime]] = (set(), set())
        for is_stored, end in connection.execute(statement):
            found[0 if is_stored else 1].add(stored_utc(end))
        return found

    def renew_leases(self, connection: Connection, leases: list[tuple[str, datetime]], owner: str,
                     ttl: timedelta) -> set[tuple[str, datetime]]:
        """Push our claims' expiry ``ttl`` past now (the database's clock), all in one statement;
        returns the (monitor, window end) still ours."""
        if not leases:
            return set()
        if connection.dialect.name == "postgresql":
            expires = sa.func.now() + sa.literal(ttl, sa.Interval)
        else:
            expires = sa.literal(datetime.now(UTC) + ttl, _leases.c.expires_at.type)
        statement = _leases.update().where(
            sa.tuple_(_leases.c.monitor, _leases.c.window_end).in_(leases), _leases.c.owner == owner,
        ).values(expires_at=expires).returning(_leases.c.monitor, _leases.c.window_end)
        return {(monitor, stored_utc(end)) for monitor, end in connection.execute(statement)}

    def release_leases(self, connection: Connection, monitor: str, window_ends: list[datetime], owner: str) -> None:
        """Give our claims up, so that a retry (ours or another replica's) may claim the windows at once."""
        connection.execute(_leases.delete().where(
            _leases.c.monitor == monitor, _leases.c.window_end.in_(window_ends), _leases.c.owner == owner))

    def live_leases(self, connection: Connection, monitor: str, window_ends: list[datetime]) -> set[datetime]:
        """Those of ``window_ends`` on which some replica holds a lease that has not expired."""
        statement = sa.select(_leases.c.window_end).where(
            _leases.c.monitor == monitor, _leases.c.window_end.in_(window_ends), _leases.c.expires_at >= _lease_now())
        return {stored_utc(end) for end in connection.execute(statement).scalars()}

    def expired_leases(self, connection: Connection) -> list[tuple[str, datetime]]:
        """(monitor, window end) of every lease that has run out: its holder is gone."""
        statement = sa.select(_leases.c.monitor, _leases.c.window_end).where(_leases.c.expires_at < _lease_now())
        return [(monitor, stored_utc(end)) for monitor, end in connection.execute(statement)]

    def delete_expired_lease(self, connection: Connection, monitor: str, window_end: datetime) -> bool:
        """Delete the window's lease row if it is still expired (nobody claimed it since)."""
        return connection.execute(_leases.delete().where(
            _leases.c.monitor == monitor, _leases.c.window_end == window_end,
            _leases.c.expires_at < _lease_now())).rowcount == 1


def _lease_now():
    # PostgreSQL judges expiry by its own clock, as claim_lease does, so replicas with
    # skewed clocks agree; these serve replicas, which share PostgreSQL (SQLite: one daemon).
    return sa.func.now()
