"""The HTML index at /: links every endpoint, /report only where it is served, and reveals nothing behind it."""

from __future__ import annotations

import html.parser
import http.client
import urllib.parse

import pytest
from prometheus_client import CollectorRegistry

from driftmon.config import ServerConfig
from driftmon.serving import server as server_module
from driftmon.serving.server import MetricsServer, index_page
from tests.live import http_get

TOKEN = "0123456789abcdef0123456789abcdef"
SECRET_MONITOR = "secret-monitor-payroll"


class TouchyReports:
    """A report renderer that counts every call: the index must make none."""

    def __init__(self):
        self.calls = 0

    def index(self, link_prefix: str) -> str:
        self.calls += 1
        return f"<p>{SECRET_MONITOR}</p>"

    def page(self, name: str) -> str | None:
        self.calls += 1
        return f"<p>{SECRET_MONITOR}</p>" if name == SECRET_MONITOR else None


class Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs.append(dict(attrs)["href"])


def links_of(page: str, base: str) -> list[str]:
    parser = Links()
    parser.feed(page)
    return [urllib.parse.urlsplit(urllib.parse.urljoin(base, href)).path for href in parser.hrefs]


def serve(reports=None, config: ServerConfig | None = None) -> MetricsServer:
    server = MetricsServer("127.0.0.1", 0, CollectorRegistry(), lambda: None, lambda: None,
                           reports=reports, config=config)
    server.start()
    return server


def get(server: MetricsServer, path: str, headers: dict | None = None) -> tuple[int, str, http.client.HTTPMessage]:
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode(), response.headers
    finally:
        connection.close()


@pytest.fixture
def monkey_env(monkeypatch):
    monkeypatch.setenv("DRIFTMON_REPORT_TOKEN", TOKEN)
    return monkeypatch


def test_index_links_every_endpoint_and_each_link_answers():
    reports = TouchyReports()
    server = serve(reports)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        status, page, headers = get(server, "/")
        assert status == 200
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert headers["Content-Security-Policy"] == server_module.CONTENT_SECURITY_POLICY
        assert page.startswith("<!DOCTYPE html>")
        links = links_of(page, base)
        assert links == ["/metrics", "/healthz", "/readyz", "/report"]
        assert reports.calls == 0  # the index renders no report
        for path in links:  # every link leads somewhere that answers
            assert http_get(base.rstrip("/") + path)[0] == 200, path
    finally:
        server.stop()


def test_index_without_report_pages_does_not_link_them():
    for server in (serve(), serve(TouchyReports(), ServerConfig(report=False))):
        try:
            status, page, _ = get(server, "/")
            assert status == 200
            assert links_of(page, "http://x/") == ["/metrics", "/healthz", "/readyz"]
            assert "report" not in page.lower()
            assert get(server, "/report")[0] == 404
        finally:
            server.stop()


def test_index_behind_a_report_token_links_report_but_leaks_nothing(monkey_env):
    reports = TouchyReports()
    server = serve(reports, ServerConfig(report_token_env="DRIFTMON_REPORT_TOKEN"))
    try:
        status, page, _ = get(server, "/")  # no token: the index is open, like the probes
        assert status == 200
        assert "/report" in links_of(page, "http://x/")
        assert "bearer token" in page
        assert SECRET_MONITOR not in page and TOKEN not in page
        assert reports.calls == 0
        assert get(server, "/report")[0] == 401  # the page it links to still asks for the token
        status, page, _ = get(server, "/report", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and SECRET_MONITOR in page
    finally:
        server.stop()


def test_index_answers_head_and_only_at_the_root():
    server = serve()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
        try:
            connection.request("HEAD", "/")
            response = connection.getresponse()
            assert response.status == 200 and response.read() == b""
            assert int(response.headers["Content-Length"]) == len(get(server, "/")[1].encode())
        finally:
            connection.close()
        assert get(server, "/index")[0] == 404
        assert get(server, "/?x=<script>")[0] == 200  # the query is ignored, never echoed
        assert "<script>" not in get(server, "/?x=<script>")[1]
    finally:
        server.stop()


def test_index_page_escapes_what_it_shows(monkeypatch):
    monkeypatch.setattr(server_module, "INDEX_LINKS", (("/a&b", 'say "<hi>"'),))
    page = index_page(report=False)
    assert '<a href="a&amp;b">/a&amp;b</a>' in page
    assert "say &quot;&lt;hi&gt;&quot;" in page
    assert "<hi>" not in page
