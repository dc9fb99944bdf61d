"""The HTTP endpoints: an index at /, /metrics, /healthz, /readyz and the /report pages, on event loops of their own.

A few threads each run an asyncio event loop that accepts connections on the
one listening socket (each on a dup of it) and answers /metrics, /healthz and
/readyz itself. A connection costs a socket and a coroutine, not a thread, so
idle or slow clients cannot use up what the probes need (issue 16: four idle
connections held all four handler threads of the previous server for its 30 s
read timeout, and its listen backlog of 5 turned 20 concurrent scrapers into
TCP retries, p99 about 1 s). A client has ``HEADER_TIMEOUT_SECONDS`` for its
whole request line and headers, however it trickles them; past the connection
limit a new connection evicts the one that has waited longest for its request;
a response not read within ``WRITE_TIMEOUT_SECONDS`` is dropped. One request
per connection (``Connection: close``), GET and HEAD.

The loop that accepts a scrape also answers it: no handoff to another thread,
which while runs hold the GIL waits for it (bench_daemon.py saw /metrics take
twice as long with a thread per request). Several loops rather than one,
because each socket call gives the GIL up and waits for it again: one loop
waits for every call in turn, four wait side by side (bench_server.py, 20
scrapers of 3 MB beside two GIL-bound threads: p99 577 ms with one loop, 94 ms
with four). The exposition callback and the checks therefore run on a loop:
they must read memory only, as the daemon's do.

/report and /report/<monitor> are the drift reports (``driftmon.inspect.report.ReportPages``),
rendered on threads of their own, since they read the results database: a
database that hangs holds those, never the probes. At most ``REPORT_THREADS``
render at once; a request beyond waits up to ``REPORT_WAIT_SECONDS`` in a short
queue (``driftmon.serving.slots``), then is answered 429 with ``Retry-After``: a busy
server is not a database that is down, which alone answers 503 (200 clients of
a healthy database got 4,626 503s in 31,337 requests when a full house was
refused at once). A monitor's name is looked up among the configured ones and
nothing else, so a path that names no configured monitor (``../``, quotes, a
10 kB name) is a 404. ``server.report`` and ``server.report_token_env`` turn
the pages off or put them behind a bearer token (``driftmon.serving.report_access``).

``/`` is a small static HTML index (``index_page``) that links the other
endpoints, /report only where it is served. It reads nothing the report token
protects (no monitor, column or database): it is open like the probes, and
says no more than the 404 that lists the same paths.

Every response carries ``SECURITY_HEADERS``: a Content-Security-Policy that
allows what the self-contained report uses (inline styles, data: images) and
nothing else, framing included (a ``<meta>`` policy cannot forbid that), and
neither MIME sniffing nor a Referer.
"""

from __future__ import annotations

import asyncio
import html
import logging
import resource
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from sqlalchemy.exc import SQLAlchemyError

from driftmon.errors import StoreError
from driftmon.serving.report_access import ReportAccess
from driftmon.serving.slots import Slots

if TYPE_CHECKING:
    from driftmon.config import ServerConfig

log = logging.getLogger(__name__)

# Each check returns None when fine, else the reason it is not.
Check = Callable[[], str | None]
# exposition(accept) -> (body, content type)
Exposition = Callable[[str | None], tuple[bytes, str]]
NOT_FOUND = b"not found: try /metrics, /healthz, /readyz or /report\n"
NOT_FOUND_WITHOUT_REPORT = b"not found: try /metrics, /healthz or /readyz\n"
# On every response. The policy is the report's own <meta> one (default-src 'none'; inline
# styles; data: images, which its favicon is) plus what only a header can say: no framing.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                           "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
_HTML = "text/html; charset=utf-8"
_TEXT = "text/plain"


# (path, what it answers) of the index at /, in its order; /report is added only where it is served.
INDEX_LINKS: tuple[tuple[str, str], ...] = (
    ("/metrics", "Prometheus metrics (the drift scores and statuses of every monitor)"),
    ("/healthz", "liveness: ok while the daemon runs"),
    ("/readyz", "readiness: ok once the daemon can serve, else why not"),
)
REPORT_LINK = ("/report", "the drift reports, one page per monitor")
REPORT_LINK_WITH_TOKEN = ("/report", "the drift reports, one page per monitor (needs its bearer token)")


def index_page(report: bool, token_required: bool = False) -> str:
    """The HTML index at /: links to the endpoints, /report only when ``report`` (it is served).

    Links are relative (``metrics``, not ``/metrics``), so they still resolve behind a proxy that
    serves the daemon under a path prefix. Everything in the page is escaped, constant as it is.
    """
    links = [*INDEX_LINKS]
    if report:
        links.append(REPORT_LINK_WITH_TOKEN if token_required else REPORT_LINK)
    items = "\n".join(
        f'<li><a href="{html.escape(path.removeprefix("/"), quote=True)}">{html.escape(path)}</a>'
        f" &mdash; {html.escape(what)}</li>"
        for path, what in links)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<title>driftmon</title>\n"
            "<style>body{font-family:system-ui,sans-serif;margin:2rem;line-height:1.5}</style>\n"
            "</head>\n<body>\n<h1>driftmon</h1>\n<p>A data-drift monitoring daemon. Its endpoints:</p>\n"
            f"<ul>\n{items}\n</ul>\n</body>\n</html>\n")


class Reports(Protocol):
    """What serves /report (``driftmon.inspect.report.ReportPages``)."""

    def index(self, link_prefix: str) -> str: ...

    def page(self, name: str) -> str | None:
        """The monitor's page, or None when no configured monitor has that name."""


EVENT_LOOPS = 4
# The request line and headers must all arrive within this long of the connect.
HEADER_TIMEOUT_SECONDS = 5.0
# A client that has not read its whole response this long after it asked is dropped.
WRITE_TIMEOUT_SECONDS = 15.0
# The kernel caps it at net.core.somaxconn (4096 on current Linux).
LISTEN_BACKLOG = 1024
# Open connections, all loops together; at most half the file-descriptor limit.
MAX_CONNECTIONS = 1024
# As http.server: the longest request or header line, and the most header lines.
MAX_LINE_BYTES = 65_536
MAX_HEADERS = 100
REPORT_THREADS = 4
# A request that finds every renderer busy waits this long, among at most REPORT_QUEUE others,
# before a 429 that asks it to come back after RETRY_AFTER_SECONDS (about one uncached render).
REPORT_WAIT_SECONDS = 2.0
REPORT_QUEUE = 256
RETRY_AFTER_SECONDS = 5
# How long stop() waits for the loops to close what they hold.
STOP_SECONDS = 2.0
# What stop() lets the dropped connections' tasks take to end.
SHUTDOWN_SETTLE_SECONDS = 0.05


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query
    headers: dict[str, str]  # names in lower case


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = _TEXT
    headers: tuple[tuple[str, str], ...] = ()  # beyond those every response has


class BadRequest(Exception):
    """The request could not be read; the status says why."""

    def __init__(self, status: HTTPStatus):
        super().__init__(status.phrase)
        self.status = status


def connection_limit() -> int:
    """MAX_CONNECTIONS, or half the soft file-descriptor limit when that is lower (the daemon needs the rest)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_CONNECTIONS if soft == resource.RLIM_INFINITY else max(EVENT_LOOPS, min(MAX_CONNECTIONS, soft // 2))


class MetricsServer:
    """Listens from the constructor on (so a busy port fails there); serves from ``start()`` to ``stop()``."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Check, ready: Check,
                 exposition: Exposition | None = None, reports: Reports | None = None,
                 config: ServerConfig | None = None):
        """``config``: the ``server`` section, for who may see /report (its token is read here, from the
        environment: a missing one is a ConfigError before the port is taken)."""
        # The exposition is a faster /metrics than encoding the registry.
        self.registry, self.health, self.ready, self.exposition = registry, health, ready, exposition
        self.access = ReportAccess.from_config(config)
        self.reports = reports if self.access.enabled else None  # None: /report is a 404
        self.not_found = NOT_FOUND if self.reports is not None else NOT_FOUND_WITHOUT_REPORT
        self.index = index_page(self.reports is not None, self.access.token is not None).encode()
        self.socket = socket.create_server((host, port), backlog=LISTEN_BACKLOG)
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]
        per_loop = connection_limit() // EVENT_LOOPS
        self._loops = [_EventLoop(self, self.socket.dup(), per_loop, f"driftmon-http-{number}")
                       for number in range(EVENT_LOOPS)]
        self._report_slots = Slots(REPORT_THREADS, REPORT_QUEUE)

    def start(self) -> None:
        for loop in self._loops:
            loop.start()

    def stop(self) -> None:
        """Stop listening and drop every connection; a thread still rendering a report ends with the process."""
        deadline = time.monotonic() + STOP_SECONDS
        for loop in self._loops:
            loop.ask_to_stop()
        for loop in self._loops:
            loop.join(deadline)
        self.socket.close()

    async def respond(self, request: Request) -> Response:
        """The answer to one request (any loop's)."""
        if request.method not in ("GET", "HEAD"):
            return Response(HTTPStatus.METHOD_NOT_ALLOWED, b"only GET and HEAD\n")
        try:
            if request.path == "/report" or request.path.startswith("/report/"):
                return await self._report(request)
            return self._answer(request)
        except Exception as exc:  # a bug: say so, keep serving
            log.error("request failed", exc_info=exc, extra={"event": "http.request_failed",
                                                            "path": request.path[:200]})
            return Response(HTTPStatus.INTERNAL_SERVER_ERROR, b"request failed\n")

    def _answer(self, request: Request) -> Response:
        if request.path == "/":
            return Response(HTTPStatus.OK, self.index, _HTML)
        if request.path == "/metrics":
            accept = request.headers.get("accept")
            if self.exposition is not None:
                body, content_type = self.exposition(accept)
            else:
                encoder, content_type = choose_encoder(accept)
                body = encoder(self.registry)
            return Response(HTTPStatus.OK, body, content_type)
        if request.path in ("/healthz", "/readyz"):
            problem = (self.health if request.path == "/healthz" else self.ready)()
            return Response(HTTPStatus.SERVICE_UNAVAILABLE if problem else HTTPStatus.OK,
                            f"{problem or 'ok'}\n".encode())
        return Response(HTTPStatus.NOT_FOUND, self.not_found)

    async def _report(self, request: Request) -> Response:
        """Off, unauthorised, busy, or the page: each checked before any database is read."""
        if self.reports is None:
            return Response(HTTPStatus.NOT_FOUND, self.not_found)
        if challenge := self.access.challenge(request.headers.get("authorization")):
            return Response(HTTPStatus.UNAUTHORIZED, b"unauthorized: /report needs its bearer token\n",
                            headers=(("WWW-Authenticate", challenge),))
        if not await self._report_slots.acquire(REPORT_WAIT_SECONDS):
            return Response(HTTPStatus.TOO_MANY_REQUESTS,
                            f"busy: every report renderer is in use; retry after {RETRY_AFTER_SECONDS} s\n".encode(),
                            headers=(("Retry-After", str(RETRY_AFTER_SECONDS)),))
        return await in_thread(self._render_report, request.path)

    def _render_report(self, path: str) -> Response:
        try:
            return self._report_page(path)
        finally:  # here, not in _report: a dropped connection leaves its thread rendering
            self._report_slots.release()

    def _report_page(self, path: str) -> Response:
        try:
            if path in ("/report", "/report/"):
                page = self.reports.index("report/" if path == "/report" else "")
            else:
                page = self.reports.page(urllib.parse.unquote(path.removeprefix("/report/"), errors="strict"))
        except UnicodeDecodeError:
            page = None
        except Exception as exc:  # the results database is down, or a bug: say so, keep serving
            return report_failed(path, exc)
        if page is None:
            return Response(HTTPStatus.NOT_FOUND, b"not found: no configured monitor has that name\n")
        return Response(HTTPStatus.OK, page.encode(), _HTML)


class _EventLoop:
    """One thread, one asyncio loop: accepts on its own dup of the listening socket, answers what it accepted."""

    def __init__(self, server: MetricsServer, listening: socket.socket, max_connections: int, name: str):
        self.server, self.listening, self.max_connections = server, listening, max_connections
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        # Each connection's transport; those still reading their request apart, longest waiting first.
        self._open: set[asyncio.Transport] = set()
        self._reading: dict[asyncio.Transport, None] = {}

    def start(self) -> None:
        self.thread.start()
        if not self._started.wait(STOP_SECONDS):
            raise RuntimeError(f"{self.thread.name}: the event loop did not start")

    def ask_to_stop(self) -> None:
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._stopping.set)
        except RuntimeError:  # the loop has ended already
            pass

    def join(self, deadline: float) -> None:
        if self.thread.is_alive():
            self.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self.listening.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception:
            log.exception("the HTTP server stopped", extra={"event": "http.server_failed"})

    async def _serve(self) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        # The backlog again: asyncio listens once more on the socket it is given, by default with 100.
        server = await asyncio.start_server(self._connection, sock=self.listening, limit=MAX_LINE_BYTES,
                                            backlog=LISTEN_BACKLOG)
        self._started.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for transport in list(self._open):
                transport.abort()  # its task then ends on its own, as for a client that went away
            # Let those tasks end before asyncio.run cancels what is left. (A socket accepted in this
            # very step, its task not started yet, is closed by the GC, not here.)
            await asyncio.sleep(SHUTDOWN_SETTLE_SECONDS)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        self._admit(transport)
        # drain() then waits until the kernel holds every byte written, not only most of them.
        writer.transport.set_write_buffer_limits(high=0)
        try:
            try:
                request = await self._read(reader, transport)
            except BadRequest as exc:
                await send(writer, Response(exc.status, f"{exc.status.phrase}\n".encode()), head_only=False)
                return
            response = await self.server.respond(request)
            log.debug("%s %s %d", request.method, request.path[:200], response.status,
                      extra={"event": "http.request"})
            await send(writer, response, head_only=request.method == "HEAD")
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # a silent, slow, vanished or dropped client: nothing to answer
        except asyncio.CancelledError:
            pass  # the loop is ending (a report was still rendering): nothing awaits this task
        finally:
            self._open.discard(transport)
            self._reading.pop(transport, None)
            # Every byte owed is with the kernel by now, or never will be: nothing to flush.
            transport.abort()

    def _admit(self, transport: asyncio.Transport) -> None:
        if len(self._open) >= self.max_connections and self._reading:
            longest_waiting = next(iter(self._reading))
            del self._reading[longest_waiting]
            longest_waiting.abort()
        self._open.add(transport)
        self._reading[transport] = None

    async def _read(self, reader: asyncio.StreamReader, transport: asyncio.Transport) -> Request:
        async with asyncio.timeout(HEADER_TIMEOUT_SECONDS):
            request_line = await read_line(reader)
            lines = []
            while (line := await read_line(reader)) and len(lines) <= MAX_HEADERS:
                lines.append(line)
        self._reading.pop(transport, None)
        if len(lines) > MAX_HEADERS:
            raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        return parse_request(request_line, lines)


async def send(writer: asyncio.StreamWriter, response: Response, head_only: bool) -> None:
    """The status line, the headers (``SECURITY_HEADERS`` on every response) and, unless HEAD, the body."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (*SECURITY_HEADERS, *response.headers))
    head = (f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}\r\n"
            f"Content-Type: {response.content_type}\r\nContent-Length: {len(response.body)}\r\n"
            f"Date: {formatdate(usegmt=True)}\r\nConnection: close\r\n{extra}\r\n").encode("latin-1")
    # Head and body in one write: one send while the loop holds the GIL, not two waits for it.
    writer.write(head if head_only else head + response.body)
    async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
        await writer.drain()


async def read_line(reader: asyncio.StreamReader) -> bytes:
    """One line without its end (CRLF or a bare LF); b"" for the blank line that ends the headers."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError as exc:
        raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE) from exc
    return line.rstrip(b"\r\n")


def parse_request(request_line: bytes, header_lines: list[bytes]) -> Request:
    parts = request_line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        raise BadRequest(HTTPStatus.BAD_REQUEST)
    headers = {}
    for line in header_lines:
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest(HTTPStatus.BAD_REQUEST)
        headers[name.lower()] = value.strip()
    return Request(parts[0], parts[1].split("?", 1)[0], headers)


def report_failed(path: str, exc: Exception) -> Response:
    log.error("report page failed", exc_info=exc, extra={"event": "http.report_failed", "path": path[:200]})
    if isinstance(exc, SQLAlchemyError | StoreError):
        return Response(HTTPStatus.SERVICE_UNAVAILABLE, b"results database does not answer\n")
    return Response(HTTPStatus.INTERNAL_SERVER_ERROR, b"report failed\n")


async def in_thread(function: Callable[..., Response], *args) -> Response:
    """``function(*args)`` on a daemon thread of its own: one that hangs on a database
    neither holds a loop nor keeps the process from exiting (an executor's thread would)."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(outcome: Response | BaseException) -> None:
        if future.done():  # the connection was dropped meanwhile
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def work() -> None:
        try:
            outcome = function(*args)
        except BaseException as exc:  # handed to the awaiting coroutine, raised there
            outcome = exc
        try:
            loop.call_soon_threadsafe(settle, outcome)
        except RuntimeError:  # the server stopped meanwhile
            pass

    threading.Thread(target=work, name="driftmon-http-report", daemon=True).start()
    return await future
