"""WindowClaims on its own: the take-over rule, late runs, give-ups, the sweep of expired leases.

Most tests run on a clock the test moves, with a results store and leases that
stand in for the database (same claim semantics as LeaseQueries.claim_lease:
a claim wins when there is no row or the row has expired), so that `every: 5s`
with the default 30 s lease plays out in microseconds.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta

import pytest

from driftmon.config_file import parse_config
from driftmon.serving.claims import WindowClaims
from driftmon.serving.retries import Pending, PendingWindows, horizon, keeps
from driftmon.windows import TimeRange

HELD = "held"
T = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a tick of every 5 s
LEASE = timedelta(seconds=30)  # server.lease_ttl's default
S = timedelta(seconds=1)


def monitor(every: str = "5s", catch_up: int = 1, name: str = "fraud"):
    raw = {"monitors": [{"name": name, "features": [{"column": "x"}], "schedule": {"every": every},
                         "catch_up": catch_up, "window": {"size": "1h"},
                         "source": {"kind": "events", "table": "t", "timestamp_column": "ts"}}]}
    return parse_config(raw, {}).resolved_monitors()[0]


def window(end: datetime) -> TimeRange:
    return TimeRange(end - timedelta(hours=1), end)


# --- the rule alone -------------------------------------------------------------------


def test_a_window_is_kept_catch_up_plus_the_lease_time_and_while_it_is_held():
    every_5s = monitor()
    w = window(T)
    assert keeps(w, Pending(), horizon(every_5s, T + 34.9 * S, LEASE))
    assert not keeps(w, Pending(), horizon(every_5s, T + 35 * S, LEASE))  # catch_up 1 x 5 s + 30 s
    # Seen held: kept until a claim was tried again, however old (its holder may be alive).
    assert keeps(w, Pending(held=True), horizon(every_5s, T + 10 * 60 * S, LEASE))
    assert not keeps(w, Pending(), horizon(monitor(catch_up=3), T + 45 * S, LEASE))
    assert keeps(w, Pending(), horizon(monitor(catch_up=3), T + 44.9 * S, LEASE))
    hourly = monitor(every="1h")
    assert keeps(w, Pending(), horizon(hourly, T + 3600 * S + 29 * S, LEASE))
    assert not keeps(w, Pending(), horizon(hourly, T + 3600 * S + 30 * S, LEASE))


def test_a_held_window_is_looked_at_again_when_the_lease_would_have_run_out():
    pending = PendingWindows()
    assert pending.held("fraud", window(T), T + S, LEASE) == T + 32 * S
    assert pending.next_retry("fraud") == T + 32 * S
    assert pending.failed(monitor(), window(T), T + 32 * S) == T + 37 * S  # a failure: backoff from 5 s
    assert not pending.windows("fraud")[window(T)].held


# --- WindowClaims on a clock the test moves -----------------------------------------------


class Clock:
    def __init__(self, now: datetime):
        self.now = now


class Store:
    """The results store: which window ends have results."""

    def __init__(self):
        self.ends: set[datetime] = set()

    def connect(self):
        return nullcontext(None)

    def stored_window_ends(self, connection, monitor: str, span: TimeRange) -> set[datetime]:
        return {end for end in self.ends if span.start < end <= span.end}


class Leases:
    """One replica's leases on a table shared by all, expiring on the test's clock."""

    def __init__(self, rows: dict, owner: str, clock: Clock, ttl: timedelta = LEASE, store: Store | None = None):
        self.rows, self.owner, self.clock, self.ttl, self.store = rows, owner, clock, ttl, store

    def claim_due(self, monitor: str, candidates: list[datetime], wanted: list[datetime]):
        """As LeaseQueries.claim_due_leases: which candidates are stored, and claims on the wanted rest."""
        stored = {end for end in candidates if end in self.store.ends}
        return stored, {end for end in wanted if end not in stored and self.claim(monitor, end)}

    def claim(self, monitor: str, end: datetime) -> bool:
        row = self.rows.get((monitor, end))
        if row is not None and row[1] >= self.clock.now:
            return False
        self.rows[(monitor, end)] = (self.owner, self.clock.now + self.ttl)
        return True

    @contextmanager
    def held(self, monitor: str, end: datetime):
        yield  # renewals are not played out here: tests renew by hand
        self.release(monitor, end)

    def release(self, monitor: str, end: datetime) -> None:
        if self.rows.get((monitor, end), ("",))[0] == self.owner:
            del self.rows[(monitor, end)]

    def alive(self, monitor: str, ends: list[datetime]) -> set[datetime]:
        return {e for e in ends if (monitor, e) in self.rows and self.rows[(monitor, e)][1] >= self.clock.now}

    def expired(self) -> list[tuple[str, datetime]]:
        return [key for key, (_, expires) in self.rows.items() if expires < self.clock.now]

    def delete_expired(self, monitor: str, end: datetime) -> bool:
        row = self.rows.get((monitor, end))
        if row is None or row[1] >= self.clock.now:
            return False
        del self.rows[(monitor, end)]
        return True


class Replica:
    """A replica's WindowClaims and what its runs did, driven by the test's clock."""

    def __init__(self, store: Store, rows: dict | None, clock: Clock, owner: str = "b"):
        self.store, self.clock = store, clock
        self.missed: dict[str, int] = {}
        leases = Leases(rows, owner, clock, store=store) if rows is not None else None
        self.claims = WindowClaims(store, store, leases, LEASE,
                                   lambda name, n: self.missed.__setitem__(name, self.missed.get(name, 0) + n),
                                   started=clock.now)

    def run(self, monitor, fail: set[datetime] = frozenset()) -> dict[datetime, str]:
        """One run, as Daemon._run_due does it: what happened to each owed window (``held``: by
        another replica; due() claims the windows it returns)."""
        due = self.claims.due(monitor, self.clock.now)
        seen = {w.end: HELD for w, p in self.claims.pending.windows(monitor.name).items() if p.held}
        for w in due:
            ok = w.end not in fail
            with self.claims.running(monitor, w):
                if ok:
                    self.store.ends.add(w.end)
            self.claims.finished(monitor, w, ok, self.clock.now)
            seen[w.end] = "computed" if ok else "failed"
        return seen


def test_a_dead_replicas_window_is_taken_over_when_its_lease_expires_under_every_5s():
    """The issue's case: `every: 5s`, the 30 s lease, catch_up 1. The window was once given up
    one tick after the catch_up, 25 s before the lease could expire: lost, its row left behind."""
    every_5s, clock, store, rows = monitor(), Clock(T + 0.2 * S), Store(), {}
    Leases(rows, "a", clock).claim("fraud", T)  # replica a claims the window ending at T, then is SIGKILLed
    b = Replica(store, rows, clock)
    timeline = {}
    clock.now = T + 0.3 * S
    while clock.now < T + 60 * S and T not in store.ends:  # b's runs, one per tick, just after a's claim
        timeline[round((clock.now - T) / S)] = b.run(every_5s).get(T)
        clock.now += 5 * S
    # Past its catch_up (one tick) and well past the next tick: still due, still held.
    assert [timeline[k] for k in range(0, 30, 5)] == [HELD] * 6
    assert timeline[30] == "computed" and T in store.ends  # a's lease ran out at T + 30.2 s: taken over
    assert rows == {} and b.missed == {}  # the lease row went with the take-over's release


def test_a_window_held_by_a_live_replica_is_not_given_up_whatever_its_age():
    every_5s, clock, store, rows = monitor(), Clock(T + 0.2 * S), Store(), {}
    a = Leases(rows, "a", clock)
    a.claim("fraud", T)
    b = Replica(store, rows, clock)
    clock.now = T + 0.3 * S
    for _ in range(24):  # two minutes: a renews its lease (a long run), b keeps looking
        assert b.run(every_5s).get(T) == HELD
        clock.now += 5 * S
        a.rows[("fraud", T)] = ("a", clock.now + LEASE)
    store.ends.add(T)  # a stores it and lets go
    a.release("fraud", T)
    clock.now += 5 * S
    assert T not in b.run(every_5s) and window(T) not in b.claims.pending.windows("fraud")  # done
    assert b.missed == {}


def test_late_and_skipped_runs_compute_every_tick_since_the_previous_run():
    """A busy pool starts a run late or skips it (max_instances): the next run computes every
    window since, as long as the rule keeps them; older ones are given up and counted."""
    every_5s, clock, store = monitor(), Clock(T + 0.1 * S), Store()
    single = Replica(store, None, clock)  # SQLite: no leases
    assert single.run(every_5s) == {T: "computed"}
    clock.now = T + 20.1 * S  # three ticks skipped
    assert single.run(every_5s) == {T + k * 5 * S: "computed" for k in (1, 2, 3, 4)}
    clock.now = T + 60.1 * S  # a stall: T + 25 s is past catch_up + the lease time
    assert sorted(single.run(every_5s)) == [T + k * 5 * S for k in range(6, 13)]
    assert single.missed == {"fraud": 1} and T + 25 * S not in store.ends


def test_a_monitor_whose_first_run_comes_late_computes_every_window_since_start_up():
    """Thousands of monitors' first runs queue on the pool: the last ones start minutes after
    /readyz. What start-up owed is computed then, none given up (the issue's 161 windows lost)."""
    every_5s, clock, store = monitor(), Clock(T + 0.1 * S), Store()
    single = Replica(store, None, clock)  # started at T + 0.1 s
    clock.now = T + 20.1 * S
    assert single.run(every_5s) == {T + k * 5 * S: "computed" for k in range(5)}  # from the catch-up window on
    late = Replica(Store(), None, Clock(T + 0.1 * S))
    late.clock.now = T + 60.1 * S
    assert sorted(late.run(monitor(name="late"))) == [T + k * 5 * S for k in range(13)]
    assert late.missed == {}
    # Its later runs keep the usual rule: a stall past catch_up plus the lease time gives up.
    late.clock.now = T + 120.1 * S
    assert sorted(late.run(monitor(name="late"))) == [T + k * 5 * S for k in range(18, 25)]
    assert late.missed == {"late": 5}


def test_a_late_first_run_on_postgresql_claims_start_up_windows_too():
    every_5s, clock, store, rows = monitor(), Clock(T + 0.1 * S), Store(), {}
    b = Replica(store, rows, clock)
    clock.now = T + 60.1 * S
    assert b.run(every_5s) == {T + k * 5 * S: "computed" for k in range(13)}
    assert rows == {} and b.missed == {}


def test_a_failed_window_is_retried_until_the_rule_gives_it_up_and_counted_once():
    every_5s, clock, store = monitor(), Clock(T + 0.1 * S), Store()
    single = Replica(store, None, clock)
    outcomes = []
    for _ in range(9):
        outcomes.append(single.run(every_5s, fail={T}).get(T))
        clock.now += 5 * S
    assert outcomes == ["failed"] * 7 + [None, None]  # tried until T + 35 s, given up then
    assert single.missed == {"fraud": 1}
    assert single.claims.pending.windows("fraud") == {}  # forgotten: no more retries


def test_a_window_another_replica_stored_is_done_not_missed():
    every_5s, clock, store, rows = monitor(), Clock(T + 0.1 * S), Store(), {}
    c = Replica(store, rows, clock, "c")
    Leases(rows, "b", clock).claim("fraud", T)  # b claims T first...
    assert c.run(every_5s) == {T: HELD}
    store.ends.add(T)  # ...and stores it
    Leases(rows, "b", clock).release("fraud", T)
    for _ in range(8):  # 40 s: past catch_up and the lease time
        clock.now += 5 * S
        assert T not in c.run(every_5s)
    assert c.missed == {} and window(T) not in c.claims.pending.windows("fraud")
    assert c.claims.leases.claim_due("fraud", [T], [T]) == ({T}, set())  # stored: not claimed again


def test_the_sweep_takes_over_expired_windows_and_deletes_the_other_expired_rows():
    every_5s, clock, store, rows = monitor(), Clock(T - 50 * S), Store(), {}
    dead = Leases(rows, "dead", clock)
    for end in (T - 60 * S, T - 55 * S, T - 52 * S):  # unstored, stored, off the 5 s grid
        dead.claim("fraud", end)
    dead.claim("gone", T - 60 * S)  # a monitor no longer configured
    store.ends.add(T - 55 * S)
    clock.now = T + S  # all four expired 21 s ago
    b = Replica(store, rows, clock)
    assert b.claims.sweep([every_5s]) == [every_5s]  # to run now
    assert list(rows) == [("fraud", T - 60 * S)]  # the three others deleted
    assert b.run(every_5s)[T - 60 * S] == "computed"  # taken over, though far past catch_up
    assert rows == {} and b.missed == {}


# --- the sweep on PostgreSQL ---------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_leases_expired_and_alive_on_postgresql(engine):
    import time

    from driftmon.serving.leases import Leases as RealLeases
    from driftmon.store.lease_queries import LeaseQueries

    end = datetime(2024, 3, 8, tzinfo=UTC)
    dead, alive = (RealLeases(engine, LeaseQueries(), owner, timedelta(seconds=1)) for owner in ("dead", "alive"))
    assert dead.claim("m", end) and dead.claim("m", end + timedelta(hours=1))
    assert dead.alive("m", [end, end + timedelta(hours=2)]) == {end}
    assert dead.expired() == [] and not dead.delete_expired("m", end)
    time.sleep(1.3)
    assert sorted(dead.expired()) == [("m", end), ("m", end + timedelta(hours=1))]
    assert alive.alive("m", [end]) == set()
    assert alive.claim("m", end)  # taken over: no longer expired, not deleted
    assert not alive.delete_expired("m", end)
    assert dead.delete_expired("m", end + timedelta(hours=1))
    assert dead.expired() == [] and alive.alive("m", [end]) == {end}
