"""Whether the results database works, as /readyz and ``driftmon_store_up`` tell it.

A read that answers is not enough: a read-only SQLite file or a full disk
answers every read while every run fails to store. So the health is the
bounded answer to a ping AND the outcome of the last write. The ping runs on
a worker thread and is waited for at most ``PING_TIMEOUT``: a database that
hangs (SIGSTOPped, a dead network path) is reported as such, and while that
ping is stuck no second one is started.

What ``problem`` says is served to any client of /readyz, so it never quotes
the database's message, which names its host, port, user and database
(``connection to server at "db.internal" (10.0.0.5), port 5432 failed: FATAL:
password authentication failed for user "driftmon"``): it says what is wrong in
fixed words (``public_reason``), and the message itself goes to the log.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

log = logging.getLogger(__name__)

PING_TIMEOUT = 5.0

# What a database's message says, in words that name nothing: (pattern of the message, what /readyz says).
# First match wins; the phrases are fixed text, never pieces of the message. The patterns are
# phrases no host, user or database name spells (a host "pg-readonly" must not read as read-only).
_REASON_PATTERNS = (
    (r"readonly database|read-only (transaction|file system|option)|read only", "the database is read-only"),
    (r"disk is full|no space left|disk full", "database or disk is full"),
    (r"password authentication failed|authentication failed|access denied for user|no pg_hba\.conf entry|"
     r"no password supplied", "authentication failed"),
    (r"database \S+ does not exist|unknown database", "the database named does not exist"),
    (r"could not translate host name|name or service not known|nodename nor servname|"
     r"unknown (mysql server )?host|temporary failure in name resolution", "the host name does not resolve"),
    (r"connection refused", "connection refused"),
    (r"timed out|timeout expired|statement timeout|lock wait timeout", "timed out"),
    (r"too many (connections|clients)|remaining connection slots", "too many connections"),
    (r"permission denied|unable to open database file", "cannot open the database (permissions, or a missing folder)"),
    (r"\bssl\b|certificate", "TLS failed"),
    (r"server closed the connection|connection reset|lost connection|has gone away|broken pipe",
     "the connection was lost"),
    (r"database is locked|deadlock detected", "the database is locked"),
)
_REASONS = tuple((re.compile(pattern, re.IGNORECASE), reason) for pattern, reason in _REASON_PATTERNS)
# SQLAlchemy starts its messages with the DB-API class: "(psycopg.OperationalError) …".
_DBAPI_CLASS = re.compile(r"^\(([A-Za-z_][\w.]*)\)")


def public_reason(error: str, kind: str | None = None) -> str:
    """What is wrong, in fixed words safe to serve: a known cause, else the error's class, else "see the log"."""
    for pattern, reason in _REASONS:
        if pattern.search(error):
            return reason
    if match := _DBAPI_CLASS.match(error.strip()):
        return f"{match.group(1).rsplit('.', 1)[-1]}; details in the log"
    return f"{kind}; details in the log" if kind else "details in the log"


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
            problem = f"results database does not answer: {public_reason(detail, type(exc).__name__)}"
            if problem != self._read_problem:  # once per change, not once per heartbeat
                log.warning("results database does not answer: %s", detail,
                            extra={"event": "store.ping_failed", "error": detail})
        self._read_problem = problem

    def write_failed(self, error: str) -> None:
        """Record a failed write; ``error`` (the database's message) is the caller's to log, never served."""
        self._write_problem = f"the last write to the results database failed: {public_reason(error)}"

    def write_succeeded(self) -> None:
        self._write_problem = None

    @property
    def problem(self) -> str | None:
        return self._read_problem or self._write_problem

    def close(self) -> None:
        self._pinger.shutdown(wait=False, cancel_futures=True)
