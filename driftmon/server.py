"""The HTTP endpoints: /metrics, /healthz and /readyz, on a thread of their own."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

# Each check returns None when fine, else the reason it is not.
Check = Callable[[], str | None]


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

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
        else:
            self._reply(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:  # noqa: A002 (the signature of the base class)
        log.debug(format, *args, extra={"event": "http.request"})


class MetricsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Check, ready: Check,
                 exposition: Callable[[str | None], tuple[bytes, str]] | None = None):
        # exposition(accept) -> (body, content type): a faster /metrics than encoding the registry.
        self.registry, self.health, self.ready, self.exposition = registry, health, ready, exposition
        super().__init__((host, port), _Handler)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="driftmon-http", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
