"""The HTTP endpoints on their own: answers, concurrency, stalled clients, stopping."""

from __future__ import annotations

import http.client
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
    assert status == 404 and "/metrics" in body and "/report" in body


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


# --- /report ------------------------------------------------------------------------


@pytest.fixture
def report_server(engine):
    from driftmon.report import ReportPages
    from tests.test_explain import AMOUNT, WINDOW_END, settings, store, stored_rows

    store(engine, stored_rows(settings(), WINDOW_END, {"amount": AMOUNT}))
    server = MetricsServer("127.0.0.1", 0, CollectorRegistry(), lambda: None, lambda: None,
                           reports=ReportPages([settings()], engine))
    server.start()
    yield server
    server.stop()


def raw_get(server: MetricsServer, path: str) -> tuple[int, str]:
    """GET the path exactly as written: no client-side normalising of ``..`` or quoting."""
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    try:
        connection.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", "127.0.0.1")
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_report_pages_answer(report_server):
    status, body = raw_get(report_server, "/report")
    assert status == 200 and "<a href='report/shop'>shop</a>" in body and ">critical<" in body
    status, body = raw_get(report_server, "/report/")
    assert status == 200 and "<a href='shop'>shop</a>" in body
    status, body = raw_get(report_server, "/report/shop?ignored=1")
    assert status == 200 and body.startswith("<!DOCTYPE html>")
    assert "<figure class='chart' data-column='amount'" in body
    assert raw_get(report_server, "/report/shop")[1] == body  # rendered once per stored window


HOSTILE_PATHS = [
    "/report/..", "/report/../metrics", "/report/../../etc/passwd", "/report/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/report/shop/", "/report/shop/../shop", "/report/./shop", "/report//shop", "/report/SHOP",
    "/report/shop'", "/report/shop%27%20OR%20%271%27=%271", "/report/%22%3E%3Cscript%3E", '/report/"',
    "/report/shop%00", "/report/%ff%fe", "/report/%", "/report/" + "a" * 10_000, "/report/" + "%41" * 3_000,
    "/reports", "/report.html",
]


@pytest.mark.parametrize("path", HOSTILE_PATHS, ids=lambda p: p[:40])
def test_hostile_report_paths_are_404(report_server, path, caplog):
    status, body = raw_get(report_server, path)
    assert status == 404, body
    assert "report page failed" not in caplog.text


def test_report_is_404_when_the_server_has_no_reports(server):
    assert http_get(url(server, "/report"))[0] == 404
    assert http_get(url(server, "/report/shop"))[0] == 404


def test_report_says_503_when_the_results_database_is_down(tmp_path):
    from driftmon.report import ReportPages
    from driftmon.store.database import create_db_engine
    from tests.test_explain import settings

    engine = create_db_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    server = MetricsServer("127.0.0.1", 0, CollectorRegistry(), lambda: None, lambda: None,
                           reports=ReportPages([settings()], engine))
    server.start()
    try:
        assert raw_get(server, "/report/shop") == (503, "results database does not answer\n")
        assert raw_get(server, "/report") == (503, "results database does not answer\n")
        assert raw_get(server, "/report/other")[0] == 404  # names are checked before the database
    finally:
        server.stop()
        engine.dispose()
