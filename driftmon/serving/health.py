"""What /healthz and /readyz answer about the daemon.

``Health`` reads state that others keep (the heartbeat's last tick, whether
the gauges are restored, the scheduler, the stop event, the results
database's health) and never computes it: the checks themselves run on the
scheduler's heartbeat job (driftmon/serving/daemon.py).
"""

from __future__ import annotations

import threading
import time

from apscheduler.schedulers.base import BaseScheduler

from driftmon.serving.store_health import StoreHealth

# The heartbeat job ticks every 2 s; this long without one means the scheduler is wedged.
WEDGED_AFTER_SECONDS = 30.0


class Health:
    """Liveness and readiness of one daemon, from the state it is shown."""

    def __init__(self, store: StoreHealth, stopping: threading.Event):
        self.store = store
        self.stopping = stopping
        self.scheduler: BaseScheduler | None = None
        self._beat = time.monotonic()
        self._restored = False

    def beat(self) -> None:
        """The scheduler ran its heartbeat job: it ticks."""
        self._beat = time.monotonic()

    def restored(self) -> None:
        """The gauges are back from the results database: ready, unless something else says no."""
        self._restored = True

    def health_problem(self) -> str | None:
        """Why /healthz fails: the scheduler stopped, or has not ticked for too long."""
        if self.scheduler is None:
            return None
        if not self.scheduler.running and not self.stopping.is_set():
            return "scheduler is not running"
        silence = time.monotonic() - self._beat
        if silence > WEDGED_AFTER_SECONDS:
            return f"scheduler has not ticked for {silence:.0f} s"
        return None

    def ready_problem(self) -> str | None:
        """Why /readyz fails: still starting, shutting down, or the results database's problem."""
        if not self._restored:
            return "starting"
        if self.stopping.is_set():
            return "shutting down"
        return self.store.problem
