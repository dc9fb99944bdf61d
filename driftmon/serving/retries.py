"""The windows a replica still owes, and the rule that decides when one is given up.

Every window a monitor's run looked at and did not find stored is *pending*
until it is stored or given up. A failed window (the source was away, a table
was dropped, the store did not answer) is retried with exponential backoff,
5 s, 10 s, 20 s, … up to half the schedule's interval. A window another
replica holds is looked at again when that replica's lease would have run out,
so a replica that crashed is taken over in about ``lease_ttl``.

The take-over rule (``keeps``): a window is given up only once it is older
than ``catch_up`` schedule intervals PLUS the lease time (``horizon``), and
never while another replica's lease on it may still be alive: a window seen
held stays pending until a claim on it has been tried again, which takes it
over once the lease has expired, however short the schedule. Under ``every:
5s`` with the default 30 s lease, a window stays due for 35 s, long enough for
a crashed replica's lease to run out first.

Pure bookkeeping: no I/O, every time passed in, so the rule is tested alone.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from driftmon.config import MonitorSettings
from driftmon.windows import TimeRange, interval_after, latest_tick

FIRST_DELAY = timedelta(seconds=5)
LONGEST_DELAY = timedelta(minutes=5)
# A held window is looked at again this long after its lease would have run out.
HELD_RECHECK_SLACK = timedelta(seconds=1)


def horizon(monitor: MonitorSettings, now: datetime, lease_ttl: timedelta) -> datetime:
    """The end of the oldest window still kept at ``now``: the latest ``catch_up`` ticks
    as they were ``lease_ttl`` ago. Windows ending before it are given up (see ``keeps``)."""
    then = now - lease_ttl
    return latest_tick(monitor.schedule, then) - interval_after(monitor.schedule, then) * (monitor.catch_up - 1)


@dataclass
class Pending:
    """What is known of one pending window."""

    failures: int = 0
    held: bool = False  # another replica held its lease when a claim was last tried
    retry_at: datetime | None = None  # when a retry is worth it; None: at the next run


def keeps(window: TimeRange, pending: Pending, oldest_kept: datetime) -> bool:
    """The take-over rule: a window stays due while it is within ``catch_up`` plus the lease
    time (``oldest_kept``, from ``horizon``), and whatever its age while it was last seen
    held: the next claim tried on it takes it over if the holder's lease has expired."""
    return pending.held or window.end >= oldest_kept


class PendingWindows:
    """Per monitor, the windows pending and what is known of each; thread-safe."""

    def __init__(self) -> None:
        self._pending: dict[str, dict[TimeRange, Pending]] = {}
        self._store_failures: dict[str, int] = {}
        self._lock = threading.Lock()

    def track(self, monitor: str, windows: set[TimeRange]) -> None:
        """Windows a run is about to look at: pending until stored or given up."""
        with self._lock:
            known = self._pending.setdefault(monitor, {})
            for window in windows:
                known.setdefault(window, Pending())

    def take_over(self, monitor: str, window: TimeRange) -> None:
        """A window whose lease expired while no run of ours tracked it: tried at the next run."""
        with self._lock:
            self._pending.setdefault(monitor, {})[window] = Pending(held=True)

    def failed(self, monitor: MonitorSettings, window: TimeRange, now: datetime) -> datetime:
        """Note a failure of ``window``; when to retry it (backoff)."""
        with self._lock:
            pending = self._pending.setdefault(monitor.name, {}).setdefault(window, Pending())
            pending.failures += 1
            pending.held = False
            pending.retry_at = now + backoff(monitor, pending.failures, now)
            return pending.retry_at

    def store_failed(self, monitor: MonitorSettings, now: datetime) -> datetime:
        """The store failed before any window was tried; when to retry the monitor (backoff)."""
        with self._lock:
            failures = self._store_failures[monitor.name] = self._store_failures.get(monitor.name, 0) + 1
        return now + backoff(monitor, failures, now)

    def held(self, monitor: str, window: TimeRange, now: datetime, lease_ttl: timedelta) -> datetime:
        """Another replica holds the window; when its lease would have run out, unless renewed."""
        with self._lock:
            pending = self._pending.setdefault(monitor, {}).setdefault(window, Pending())
            pending.held = True
            pending.retry_at = now + lease_ttl + HELD_RECHECK_SLACK
            return pending.retry_at

    def claimed(self, monitor: str, window: TimeRange) -> None:
        """This replica holds the window now: whatever held it before is gone."""
        with self._lock:
            pending = self._pending.get(monitor, {}).get(window)
            if pending is not None:
                pending.held = False

    def done(self, monitor: str, window: TimeRange) -> None:
        """Stored (by any replica): nothing is owed any more."""
        with self._lock:
            self._pending.get(monitor, {}).pop(window, None)
            self._store_failures.pop(monitor, None)

    def windows(self, monitor: str) -> dict[TimeRange, Pending]:
        with self._lock:
            return {window: Pending(p.failures, p.held, p.retry_at)
                    for window, p in self._pending.get(monitor, {}).items()}

    def give_up(self, monitor: str, windows: list[TimeRange]) -> None:
        with self._lock:
            known = self._pending.get(monitor, {})
            for window in windows:
                known.pop(window, None)

    def next_retry(self, monitor: str) -> datetime | None:
        """The earliest retry any pending window of the monitor waits for."""
        with self._lock:
            times = [p.retry_at for p in self._pending.get(monitor, {}).values() if p.retry_at is not None]
        return min(times, default=None)


def backoff(monitor: MonitorSettings, failures: int, now: datetime) -> timedelta:
    """5 s, 10 s, 20 s, … up to half the schedule's interval (at least 5 s, at most 5 minutes)."""
    ceiling = min(max(interval_after(monitor.schedule, now) / 2, FIRST_DELAY), LONGEST_DELAY)
    return min(FIRST_DELAY * 2 ** min(failures - 1, 16), ceiling)
