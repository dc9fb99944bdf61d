"""Windows a replica runs again before their next tick: failed ones, and ones another replica holds.

A failed window (the source was away, a table was dropped, the store did not
answer) is retried with exponential backoff, 5 s, 10 s, 20 s, … up to half the
schedule's interval, while it is within ``catch_up`` (plus one tick). A window
held by another replica is looked at again when that replica's lease would
have run out, so a replica that crashed is taken over in about ``lease_ttl``.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from driftmon.config import MonitorSettings
from driftmon.windows import TimeRange, interval_after

FIRST_DELAY = timedelta(seconds=5)
LONGEST_DELAY = timedelta(minutes=5)


class Retries:
    """Per monitor, the windows pending a retry and how often each failed."""

    def __init__(self) -> None:
        self._pending: dict[str, dict[TimeRange, int]] = {}
        self._store_failures: dict[str, int] = {}
        self._lock = threading.Lock()

    def failed(self, monitor: MonitorSettings, window: TimeRange | None) -> timedelta:
        """Note a failure (``window`` None: the store failed before any window); the delay to retry."""
        with self._lock:
            if window is None:
                attempts = self._store_failures[monitor.name] = self._store_failures.get(monitor.name, 0) + 1
            else:
                windows = self._pending.setdefault(monitor.name, {})
                attempts = windows[window] = windows.get(window, 0) + 1
        ceiling = min(max(interval_after(monitor.schedule, datetime.now(UTC)) / 2, FIRST_DELAY), LONGEST_DELAY)
        return min(FIRST_DELAY * 2 ** min(attempts - 1, 16), ceiling)

    def claimed_elsewhere(self, monitor: MonitorSettings, window: TimeRange, ttl: timedelta) -> timedelta:
        with self._lock:
            self._pending.setdefault(monitor.name, {}).setdefault(window, 0)
        return ttl + timedelta(seconds=1)

    def done(self, monitor: MonitorSettings, window: TimeRange) -> None:
        with self._lock:
            self._pending.get(monitor.name, {}).pop(window, None)
            self._store_failures.pop(monitor.name, None)

    def pending(self, monitor: MonitorSettings, ended_after: datetime) -> set[TimeRange]:
        """The monitor's pending windows that end after ``ended_after``; older ones are given up."""
        with self._lock:
            windows = self._pending.get(monitor.name, {})
            for window in [w for w in windows if w.end <= ended_after]:
                del windows[window]
            return set(windows)
