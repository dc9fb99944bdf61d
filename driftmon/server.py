"""The HTTP endpoints: /metrics, /healthz, /readyz and the /report pages, on threads of their own.

A few handler threads each block in ``accept()`` on the one listening socket
and answer the request they accepted themselves. The usual thread per request
(``ThreadingHTTPServer``) hands every scrape from the accepting thread to a new
one, and while runs hold the GIL each handoff waits for it: bench_daemon.py saw
/metrics take twice as long that way. Several threads rather than one, so
that a slow or stalled client cannot hold up a health check.

/report and /report/<monitor> are the drift reports (``driftmon.report.ReportPages``):
a monitor's name is looked up among the configured ones and nothing else, so a
path that names no configured monitor (``../``, quotes, a 10 kB name) is a 404.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from sqlalchemy.exc import SQLAlchemyError

from driftmon.errors import StoreError

log = logging.getLogger(__name__)

# Each check returns None when fine, else the reason it is not.
Check = Callable[[], str | None]
NOT_FOUND = b"not found: try /metrics, /healthz, /readyz or /report\n"
_HTML = "text/html; charset=utf-8"


class Reports(Protocol):
    """What serves /report (``driftmon.report.ReportPages``)."""

    def index(self, link_prefix: str) -> str: ...

    def page(self, name: str) -> str | None:
        """The monitor's page, or None when no configured monitor has that name."""

HANDLER_THREADS = 4
# How often a handler thread blocked in accept() looks at the stop flag.
ACCEPT_POLL_SECONDS = 0.25
# A client that sends nothing (or reads nothing) for this long is dropped.
CLIENT_TIMEOUT_SECONDS = 30.0


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    timeout = CLIENT_TIMEOUT_SECONDS

    def do_GET(self) -> None:  # noqa: N802 (the name http.server dispatches to)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            if self.server.exposition is not None:
                body, content_type = self.server.exposition(self.headers.get("Accept"))
            else:
                encoder, content_type = choose_encoder(self.headers.get("Accept"))
                body = encoder(self.server.registry)
            self._reply(200, body, content_type)
        elif path in ("/healthz", "/readyz"):
            check = self.server.health if path == "/healthz" else self.server.ready
            problem = check()
            self._reply(503 if problem else 200, f"{problem or 'ok'}\n".encode(), "text/plain")
        elif path == "/report" or path.startswith("/report/"):
            self._report(path)
        else:
            self._reply(404, NOT_FOUND, "text/plain")

    def _report(self, path: str) -> None:
        reports = self.server.reports
        if reports is None:
            self._reply(404, NOT_FOUND, "text/plain")
            return
        try:
            if path in ("/report", "/report/"):
                page = reports.index("report/" if path == "/report" else "")
            else:
                page = reports.page(urllib.parse.unquote(path.removeprefix("/report/"), errors="strict"))
        except UnicodeDecodeError:
            page = None
        except Exception as exc:  # the results database is down, or a bug: say so, keep serving
            self._report_failed(path, exc)
            return
        if page is None:
            self._reply(404, b"not found: no configured monitor has that name\n", "text/plain")
        else:
            self._reply(200, page.encode(), _HTML)

    def _report_failed(self, path: str, exc: Exception) -> None:
        unavailable = isinstance(exc, SQLAlchemyError | StoreError)
        log.error("report page failed", exc_info=exc, extra={"event": "http.report_failed", "path": path[:200]})
        status, text = (503, "results database does not answer") if unavailable else (500, "report failed")
        self._reply(status, f"{text}\n".encode(), "text/plain")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:  # noqa: A002 (the signature of the base class)
        log.debug(format, *args, extra={"event": "http.request"})


class MetricsServer(HTTPServer):
    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Check, ready: Check,
                 exposition: Callable[[str | None], tuple[bytes, str]] | None = None,
                 reports: Reports | None = None):
        # exposition(accept) -> (body, content type): a faster /metrics than encoding the registry.
        self.registry, self.health, self.ready, self.exposition = registry, health, ready, exposition
        self.reports = reports  # None: /report is a 404
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        super().__init__((host, port), _Handler)
        self.socket.settimeout(ACCEPT_POLL_SECONDS)

    def start(self) -> None:
        for number in range(HANDLER_THREADS):
            thread = threading.Thread(target=self._accept_and_answer, name=f"driftmon-http-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _accept_and_answer(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, address = self.socket.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                log.exception("accepting a connection failed", extra={"event": "http.accept_failed"})
                self._stopping.wait(ACCEPT_POLL_SECONDS)
                continue
            try:
                self.finish_request(connection, address)
            except Exception:
                self.handle_error(connection, address)
            finally:
                self.shutdown_request(connection)

    def handle_error(self, request, client_address) -> None:
        log.warning("request from %s failed", client_address[0], exc_info=True,
                    extra={"event": "http.request_failed"})

    def stop(self) -> None:
        # Threads still answering a slow client are daemon threads: they end with the process.
        self._stopping.set()
        deadline = time.monotonic() + 4 * ACCEPT_POLL_SECONDS
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self.server_close()
