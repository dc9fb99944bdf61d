"""SIGTERM/SIGINT handling for the daemon.

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

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals(on_stop: Callable[[], None]) -> Iterator[None]:
    """Call ``on_stop`` at the first SIGTERM or SIGINT while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may install handlers; tests run the daemon in threads
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def handle(signum, _frame) -> None:
        restore()
        log.info("stop requested", extra={"event": "daemon.stop_requested",
                                          "signal": signal.Signals(signum).name})
        on_stop()

    for sig in STOP_SIGNALS:
        signal.signal(sig, handle)
    try:
        yield
    finally:
        restore()
