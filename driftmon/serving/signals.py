"""SIGTERM/SIGINT handling for the daemon and the long commands.

``docker stop`` sends SIGTERM and Ctrl-C sends SIGINT: both ask for a graceful
stop. The handlers restore the previous ones at the first signal, so a second
Ctrl-C falls through to Python's default and stops the process at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class StopRequest:
    """Which stop signal arrived, if any (``signal`` stays None until one does)."""

    signal: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number (Ctrl-C: 130)."""
        return 128 + (self.signal or signal.SIGINT)


@contextmanager
def stop_on_signals(on_stop: Callable[[], None] = lambda: None, *,
                    event: str = "daemon.stop_requested") -> Iterator[StopRequest]:
    """Call ``on_stop`` at the first SIGTERM or SIGINT while the block runs; the
    request it yields says which signal came (``event`` names the log line)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request  # only the main thread may install handlers; tests run the daemon in threads
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def handle(signum, _frame) -> None:
        restore()
        request.signal = signum
        log.info("stop requested", extra={"event": event, "signal": signal.Signals(signum).name})
        on_stop()

    for sig in STOP_SIGNALS:
        signal.signal(sig, handle)
    try:
        yield request
    finally:
        restore()
