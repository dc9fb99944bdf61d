"""A fixed number of slots shared by several asyncio event loops and the threads they hand work to.

/report renders on threads (``server.REPORT_THREADS`` of them at most), while
requests arrive on several event loops. A request that finds every slot taken
waits its turn in a short first-come, first-served queue, so that a burst of
clients of a healthy database is served a little later instead of being turned
away; only one that has waited ``wait`` seconds, or finds the queue full, is
refused (the server answers 429 then). A slot is released from any thread and
handed straight to the longest-waiting request, on that request's own loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    granted: bool = field(default=False)  # set, under the lock, by the release that hands it a slot


class Slots:
    """At most ``limit`` holders at once; up to ``max_waiting`` more wait, oldest first."""

    def __init__(self, limit: int, max_waiting: int):
        self.limit, self.max_waiting = limit, max_waiting
        self._free = limit
        self._waiting: deque[_Waiter] = deque()
        self._lock = threading.Lock()

    async def acquire(self, wait: float) -> bool:
        """Take a slot, waiting at most ``wait`` seconds for one; False when none came (or the queue is full).

        The caller owns the slot when True, and must ``release()`` it, from any thread.
        """
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                return True
            if len(self._waiting) >= self.max_waiting:
                return False
            loop = asyncio.get_running_loop()
            waiter = _Waiter(loop, loop.create_future())
            self._waiting.append(waiter)
        try:
            async with asyncio.timeout(wait):
                await waiter.future
            return True
        except TimeoutError:
            return self._withdraw(waiter)  # a slot handed over just as the wait ran out is kept
        except asyncio.CancelledError:  # the loop is ending: give back a slot handed over meanwhile
            if self._withdraw(waiter):
                self.release()
            raise

    def release(self) -> None:
        """Give a slot back: to the longest-waiting request whose loop still runs, else to the free ones."""
        with self._lock:
            while self._waiting:
                waiter = self._waiting.popleft()
                try:
                    waiter.loop.call_soon_threadsafe(_wake, waiter.future)
                except RuntimeError:  # that loop has closed: its request is gone
                    continue
                waiter.granted = True
                return
            self._free += 1

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _withdraw(self, waiter: _Waiter) -> bool:
        """Leave the queue; True when a slot was handed over first (the waiter then holds it)."""
        with self._lock:
            if waiter.granted:
                return True
            self._waiting.remove(waiter)
            return False


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():  # cancelled when its wait ran out meanwhile
        future.set_result(None)
