"""Whether the results database works, as /readyz and ``driftmon_store_up`` tell it.

A read that answers is not enough: a read-only SQLite file or a full disk
answers every read while every run fails to store. So the health is the
bounded answer to a ping AND the outcome of the last write. The ping runs on
a worker thread and is waited for at most ``PING_TIMEOUT``: a database that
hangs (SIGSTOPped, a dead network path) is reported as such, and while that
ping is stuck no second one is started.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

PING_TIMEOUT = 5.0


class StoreHealth:
    def __init__(self, ping: Callable[[], None], timeout: float = PING_TIMEOUT):
        self._ping = ping
        self.timeout = timeout
        self._pinger = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-ping")
        self._pending: tuple[float, Future] | None = None
        self._read_problem: str | None = None
        self._write_problem: str | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        """Ping the store, waiting at most ``timeout``; called by the heartbeat."""
        with self._lock:
            if self._pending is None or self._pending[1].done():
                self._pending = (time.monotonic(), self._pinger.submit(self._ping))
            started, future = self._pending
        try:
            future.result(timeout=max(0.0, self.timeout - (time.monotonic() - started)))
            problem = None
        except FutureTimeout:
            problem = f"results database has not answered a ping for {time.monotonic() - started:.0f} s"
        except Exception as exc:  # noqa: BLE001  any failure of the ping is the answer
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            problem = f"results database does not answer: {detail}"
        self._read_problem = problem

    def write_failed(self, error: str) -> None:
        self._write_problem = f"the last write to the results database failed: {error}"

    def write_succeeded(self) -> None:
        self._write_problem = None

    @property
    def problem(self) -> str | None:
        return self._read_problem or self._write_problem

    def close(self) -> None:
        self._pinger.shutdown(wait=False, cancel_futures=True)
