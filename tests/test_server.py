"""The HTTP endpoints on their own: answers, concurrency, stalled clients, stopping."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from prometheus_client import CollectorRegistry, Gauge

from driftmon.server import HANDLER_THREADS, MetricsServer
from tests.live import http_get


@pytest.fixture
def server():
    registry = CollectorRegistry()
    Gauge("driftmon_example", "An example gauge.", registry=registry).set(3)
    problems = {"health": None, "ready": "starting"}
    server = MetricsServer("127.0.0.1", 0, registry, lambda: problems["health"], lambda: problems["ready"])
    server.problems = problems
    server.start()
    yield server
    server.stop()


def url(server: MetricsServer, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_endpoints_answer(server):
    status, body = http_get(url(server, "/metrics"))
    assert status == 200 and "driftmon_example 3.0" in body
    assert http_get(url(server, "/healthz")) == (200, "ok\n")
    assert http_get(url(server, "/readyz")) == (503, "starting\n")
    server.problems["ready"] = None
    assert http_get(url(server, "/readyz")) == (200, "ok\n")
    status, body = http_get(url(server, "/nowhere?x=1"))
    assert status == 404 and "/metrics" in body


def test_stalled_clients_do_not_block_health_checks(server):
    # Clients that connect and send nothing each hold one handler thread.
    stalled = [socket.create_connection(server.server_address, timeout=5) for _ in range(HANDLER_THREADS - 1)]
    try:
        began = time.monotonic()
        assert http_get(url(server, "/healthz"), timeout=3)[0] == 200
        assert time.monotonic() - began < 2
    finally:
        for connection in stalled:
            connection.close()


def test_concurrent_scrapes_all_answer(server):
    results: list[int] = []

    def scrape():
        for _ in range(10):
            results.append(http_get(url(server, "/metrics"), timeout=5)[0])

    threads = [threading.Thread(target=scrape) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [200] * 60


def test_stop_is_prompt_and_frees_the_port():
    server = MetricsServer("127.0.0.1", 0, CollectorRegistry(), lambda: None, lambda: None)
    port = server.server_address[1]
    server.start()
    assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    began = time.monotonic()
    server.stop()
    assert time.monotonic() - began < 2
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    assert not any(t.is_alive() for t in threading.enumerate() if t.name.startswith("driftmon-http"))
