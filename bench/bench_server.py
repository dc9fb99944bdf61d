"""Benchmark of the HTTP endpoints under idle, slow and concurrent clients (issue 16, item 4).

Not a timed test: run it by hand (not yet listed in bench/README.md).

    python bench/bench_server.py [--exposition-mb 3] [--idle 4] [--slow 200] [--scrapers 20] [--burn 2]
    python bench/bench_server.py --server-file /tmp/old_server.py   # another implementation of the same API

The server runs in this process and serves a pre-rendered exposition of
``--exposition-mb`` MB (gauge lines shaped like the daemon's, as its exposition
callback returns them), with the daemon's 1 ms GIL switch interval. Phases:

1. **probes**: ``/healthz`` and ``/metrics`` a few times each, nothing else connected.
2. **idle**: ``--idle`` connections that connect and send nothing, then the probes.
3. **slow**: ``--slow`` connections opened at once (non-blocking connect, so
   those the listen backlog refuses stay half-open, retrying their SYN) that
   send half a request line, then the probes.
4. **scrapers**: ``--scrapers`` threads in a child process (a Prometheus of its
   own, not competing for the server's GIL) each GET /metrics ``--scrapes``
   times, one new connection per scrape: p50/p99/max latency of a whole scrape
   (connect to last byte), errors.
5. **scrapers + burn** (``--burn N``): the same while N threads of this process
   run pure-Python loops, as monitor runs hold the GIL in ``driftmon serve``.
6. **report clients** (``--report-clients N``, item 8 of the hardening issue):
   N threads in a child process each GET /report/shop ``--report-requests``
   times, one connection each, from a healthy "database": a stand-in for
   ``ReportPages`` whose page takes ``--report-render-ms`` (a cached page is its
   one query, under 1 ms on SQLite; an uncached one seconds). Counts each status:
   a busy server must answer 429 with Retry-After, never 503, which means the
   database is down. ``--report-clients 0`` skips it.

    python bench/bench_server.py --idle 0 --slow 0 --scrapers 0 --report-clients 200 --report-requests 20

Every wait is bounded: a probe by ``--probe-timeout``, a scrape by 10 s, the
scraper child by ``--phase-timeout``.
"""

from __future__ import annotations

import argparse
import errno
import http.client
import importlib.util
import json
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def exposition_bytes(megabytes: float) -> bytes:
    line = 'driftmon_kl_divergence{{monitor="monitor_{m:03d}",feature="column_{c:02d}",statistic="kl"}} {v!r}\n'
    lines, size, number = [b"# HELP driftmon_kl_divergence KL divergence.\n# TYPE driftmon_kl_divergence gauge\n"], 0, 0
    while size < megabytes * 1e6:
        text = line.format(m=number // 50, c=number % 50, v=number / 7919).encode()
        lines.append(text)
        size += len(text)
        number += 1
    return b"".join(lines)


def load_server_class(path: str | None):
    if path is None:
        from driftmon.serving.server import MetricsServer
        return MetricsServer
    spec = importlib.util.spec_from_file_location("bench_server_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.MetricsServer


def probe(port: int, path: str, timeout: float) -> float | None:
    """Seconds for one GET (connect to last byte), None when it failed or timed out."""
    began = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return time.perf_counter() - began if response.status == 200 else None
    except OSError:
        return None
    finally:
        connection.close()


def probes(port: int, timeout: float, rounds: int = 3) -> str:
    parts = []
    for path in ("/healthz", "/metrics"):
        took = [probe(port, path, timeout) for _ in range(rounds)]
        shown = ", ".join("timeout" if t is None else f"{t * 1000:.1f}" for t in took)
        parts.append(f"{path} [{shown}] ms")
    return "; ".join(parts)


def open_connections(port: int, count: int, send: bytes, settle: float = 3.0) -> tuple[list[socket.socket], int]:
    """``count`` sockets connecting at once; those connected within ``settle`` s send ``send``."""
    sockets, selector = [], selectors.DefaultSelector()
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        if sock.connect_ex(("127.0.0.1", port)) not in (0, errno.EINPROGRESS):
            sock.close()
            continue
        sockets.append(sock)
        selector.register(sock, selectors.EVENT_WRITE)
    connected, deadline = 0, time.monotonic() + settle
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
            selector.unregister(key.fileobj)
            if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                connected += 1
                if send:
                    try:
                        key.fileobj.send(send)
                    except OSError:
                        pass
    selector.close()
    return sockets, connected


def scrape_client(port: int, scrapers: int, scrapes: int) -> None:
    """The child process: print one JSON object of latencies (s) and errors."""
    latencies, errors, lock, began = [], [], threading.Lock(), time.perf_counter()

    def scrape() -> None:
        for _ in range(scrapes):
            took = probe(port, "/metrics", timeout=10)
            with lock:
                (errors if took is None else latencies).append(took)

    threads = [threading.Thread(target=scrape) for _ in range(scrapers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    print(json.dumps({"latencies": latencies, "errors": len(errors), "seconds": time.perf_counter() - began}))


def scrapers_phase(port: int, args: argparse.Namespace) -> str:
    child = subprocess.run(
        [sys.executable, __file__, "--scrape-client", str(port), str(args.scrapers), str(args.scrapes)],
        capture_output=True, text=True, timeout=args.phase_timeout, check=True)
    result = json.loads(child.stdout)
    took = sorted(result["latencies"])
    if not took:
        return f"no scrape answered ({result['errors']} errors)"
    p99 = took[min(len(took) - 1, int(0.99 * len(took)))]
    return (f"{len(took)} scrapes: p50 {statistics.median(took) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
            f"max {took[-1] * 1000:.1f} ms, errors {result['errors']}, {len(took) / result['seconds']:.0f} scrapes/s")


class SlowReports:
    """What serves /report, as ``ReportPages`` does for one monitor, in ``seconds`` a page (a query's wait)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.page_body = "<!DOCTYPE html><title>shop</title>" + "x" * 20_000

    def index(self, link_prefix: str) -> str:
        time.sleep(self.seconds)
        return f"<a href='{link_prefix}shop'>shop</a>"

    def page(self, name: str) -> str | None:
        time.sleep(self.seconds)
        return self.page_body if name == "shop" else None


def report_client(port: int, clients: int, requests: int) -> None:
    """The child process: print one JSON object of statuses, Retry-After values and latencies (s)."""
    statuses, retry_after, latencies, lock, began = {}, set(), [], threading.Lock(), time.perf_counter()

    def client() -> None:
        for _ in range(requests):
            start = time.perf_counter()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                connection.request("GET", "/report/shop")
                response = connection.getresponse()
                response.read()
                status, wait = str(response.status), response.headers.get("Retry-After")
            except OSError as exc:
                status, wait = type(exc).__name__, None
            finally:
                connection.close()
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(time.perf_counter() - start)
                if wait is not None:
                    retry_after.add(wait)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    print(json.dumps({"statuses": statuses, "retry_after": sorted(retry_after), "latencies": latencies,
                      "seconds": time.perf_counter() - began}))


def report_phase(port: int, args: argparse.Namespace) -> str:
    child = subprocess.run(
        [sys.executable, __file__, "--report-client", str(port), str(args.report_clients), str(args.report_requests)],
        capture_output=True, text=True, timeout=args.phase_timeout, check=True)
    result = json.loads(child.stdout)
    took = sorted(result["latencies"])
    p99 = took[min(len(took) - 1, int(0.99 * len(took)))]
    statuses = ", ".join(f"{status}: {count:,}" for status, count in sorted(result["statuses"].items()))
    return (f"{len(took):,} requests in {result['seconds']:.1f} s: {statuses}; Retry-After {result['retry_after']}; "
            f"p50 {statistics.median(took) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {took[-1] * 1000:.1f} ms")


def burn(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(range(10_000))


def run(args: argparse.Namespace) -> None:
    body = exposition_bytes(args.exposition_mb)
    content_type = "text/plain; version=0.0.4; charset=utf-8"
    server_class = load_server_class(args.server_file)
    server = server_class("127.0.0.1", 0, CollectorRegistry(), lambda: None, lambda: None,
                          exposition=lambda accept: (body, content_type),
                          reports=SlowReports(args.report_render_ms / 1000))
    port = server.server_address[1]
    sys.setswitchinterval(0.001)  # as driftmon serve sets it
    server.start()
    print(f"server: {args.server_file or 'driftmon.serving.server'}; exposition {len(body) / 1e6:.2f} MB")
    try:
        print(f"probes, nothing else connected: {probes(port, args.probe_timeout)}")
        for name, count, send in (("idle", args.idle, b""), ("slow", args.slow, b"GET /metr")):
            held, connected = open_connections(port, count, send)
            try:
                print(f"{count} {name} ({connected} connected): {probes(port, args.probe_timeout)}")
            finally:
                for sock in held:
                    sock.close()
            time.sleep(args.settle)  # let the server notice the closed connections
        if args.scrapers:
            print(f"{args.scrapers} scrapers: {scrapers_phase(port, args)}")
        if args.burn and args.scrapers:
            stop = threading.Event()
            burners = [threading.Thread(target=burn, args=(stop,), daemon=True) for _ in range(args.burn)]
            for thread in burners:
                thread.start()
            try:
                print(f"{args.scrapers} scrapers, {args.burn} GIL burners: {scrapers_phase(port, args)}")
            finally:
                stop.set()
        if args.report_clients:
            print(f"{args.report_clients} report clients, {args.report_render_ms:g} ms a page: "
                  f"{report_phase(port, args)}")
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server-file", help="a file defining MetricsServer (default: driftmon.serving.server)")
    parser.add_argument("--exposition-mb", type=float, default=3.0)
    parser.add_argument("--idle", type=int, default=4)
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--scrapers", type=int, default=20)
    parser.add_argument("--scrapes", type=int, default=25, help="per scraper")
    parser.add_argument("--burn", type=int, default=0, help="GIL-holding threads for a last scraper phase")
    parser.add_argument("--probe-timeout", type=float, default=5.0)
    parser.add_argument("--phase-timeout", type=float, default=300.0)
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--report-clients", type=int, default=0, help="concurrent /report clients (0: no phase)")
    parser.add_argument("--report-requests", type=int, default=20, help="per report client")
    parser.add_argument("--report-render-ms", type=float, default=5.0, help="what a page takes to render")
    parser.add_argument("--scrape-client", nargs=3, type=int, metavar=("PORT", "SCRAPERS", "SCRAPES"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--report-client", nargs=3, type=int, metavar=("PORT", "CLIENTS", "REQUESTS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scrape_client:
        scrape_client(*args.scrape_client)
    elif args.report_client:
        report_client(*args.report_client)
    else:
        run(args)


if __name__ == "__main__":
    main()
