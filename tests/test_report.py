"""The HTML drift report: self-contained, escaped, and loaded for real in headless Chromium.

The browser is Debian's ``chromium``, driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: NUL-separated JSON on file descriptors 3 and 4), so
no websocket client or driver is needed. It records every console message,
uncaught exception, log entry (Content-Security-Policy violations among them)
and network request while a page loads.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import select
import shutil
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from driftmon.cli import main
from driftmon.inspect import report
from driftmon.inspect.explain import explain_window
from driftmon.inspect.report import ReportPages, build_report, marked_bins, render_report
from driftmon.serving.server import MetricsServer
from driftmon.store.database import create_db_engine
from driftmon.textsafe import is_visible, visible
from driftmon.windows import TimeRange
from tests.test_explain import (  # noqa: F401  config_file is a fixture
    AGE,
    AMOUNT,
    COUNTRY,
    LABELS,
    NO_BINS,
    WINDOW_END,
    by_movement,
    config_file,
    label_rows,
    monitor_config,
    settings,
    store,
    stored_rows,
)

COLUMNS = {"amount": AMOUNT, "country": COUNTRY, "age": AGE}


def store_history(engine, hours: int = 24, columns: dict | None = None) -> None:
    """``hours`` hourly windows ending at WINDOW_END; the last six drift (their counts are the drifted ones)."""
    columns = columns or COLUMNS
    calm = {name: (labels, ref, ref) for name, (labels, ref, _) in columns.items()}
    rows = []
    for hour in range(hours):
        end = WINDOW_END - timedelta(hours=hours - 1 - hour)
        rows += stored_rows(settings(), end, columns if hour >= hours - 6 else calm)
    store(engine, rows)


@pytest.fixture
def sqlite_engine(sqlite_template, tmp_path):
    """For tests whose subject is the page, not the database: SQLite only."""
    path = tmp_path / "results.db"
    shutil.copy(sqlite_template, path)
    engine = create_db_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


def report_of(engine, **options) -> str:
    with engine.connect() as connection:
        return build_report(connection, settings(), **options)


# --- the page ------------------------------------------------------------------------------


def test_the_page_is_self_contained(engine):
    store_history(engine)
    page = report_of(engine)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"<script|<iframe|<object|<embed|@import|\bsrc=", page, re.I)
    for target in re.findall(r"""(?:href|xlink:href)=["']([^"']*)""", page):
        assert target.startswith(("#", "data:")), target
    assert not re.search(r"url\((?!#)", page)  # only references inside the page
    charts = re.findall(r"<figure class='chart' data-column='([^']+)'[^>]*><svg", page)
    assert charts == list(COLUMNS)
    # Ids of the inline SVGs stay unique across charts.
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_summary_shows_each_column_with_status_statistic_and_p_value(engine):
    store_history(engine)
    page = report_of(engine)
    summary = page[page.index("<table class='summary'>"):page.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", summary)[1:]
    assert [re.search(r">([^<]+)</a>", r)[1] for r in rows] == list(COLUMNS)
    country = re.findall(r"<td[^>]*>(.*?)</td>", rows[1])
    assert ">critical<" in country[2] and country[3] == "kl"
    assert country[7] == "2e-06" and country[8] == "4e-06"  # p- and q-value
    assert country[-1] == "6 of 24"  # windows in warning or critical over the range


def test_the_bins_that_moved_most_are_marked_whatever_the_kl_direction(engine):
    # With the default KL(reference || current) the new category's KL term is negative: ranked
    # by it, the report marked DE, FR and US, which merely lost share, and left __other__ out.
    store_history(engine)
    page = report_of(engine)
    summary = page[page.index("<table class='summary'>"):page.index("</table>")]
    country = re.findall(r"<td[^>]*>(.*?)</td>", re.findall(r"<tr>(.*?)</tr>", summary)[2])
    assert country[10].startswith("__other__ (") and "% of psi; kl term -0.0" in country[10]
    explanation = explain_window(settings(), stored_rows(settings(), WINDOW_END, COLUMNS))
    for name, (labels, ref, cur) in COLUMNS.items():
        marked = marked_bins(explanation.column(name), 3)
        assert marked == {label: rank for rank, label in enumerate(by_movement(labels, ref, cur)[:3], start=1)}
    assert next(iter(marked_bins(explanation.column("country"), 3))) == "__other__"


def test_names_and_labels_are_escaped(engine):
    hostile = {"<img src=x onerror=alert(1)>": (["<b>", "'&\""], [10, 20], [20, 10])}
    store(engine, stored_rows(settings(), WINDOW_END, hostile))
    page = report_of(engine)
    assert "<img src=x" not in page and "<b>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;b&gt;" in page


def test_results_stored_without_bins_still_report(engine):
    rows = stored_rows(settings(), WINDOW_END, COLUMNS)
    rows[0].update(labels=None, reference_counts=None, current_counts=None)
    store(engine, rows)
    page = report_of(engine)
    assert html.escape(NO_BINS) in page and "no bins stored for this window" in page
    assert len(re.findall(r"<figure class='chart'", page)) == 3


def test_a_monitor_without_results_gets_a_page_saying_so(engine):
    assert "No stored results for this monitor" in report_of(engine)


def test_the_range_chooses_window_and_history(engine):
    store_history(engine)
    page = report_of(engine, start=WINDOW_END - timedelta(hours=10), end=WINDOW_END - timedelta(hours=3))
    assert "window 2024-03-08 08:00 UTC – 2024-03-08 09:00 UTC" in page
    assert "history 2024-03-08 02:00 UTC – 2024-03-08 09:00 UTC" in page
    assert re.findall(r"<td>(\d+ of \d+)</td>", page) == ["3 of 7", "3 of 7", "0 of 7"]  # age never drifts


def test_a_week_of_24_columns_is_small_enough_to_mail(sqlite_engine):
    engine = sqlite_engine
    columns = {f"feature_{i:02d}": [AMOUNT, COUNTRY, AGE][i % 3] for i in range(24)}
    store_history(engine, hours=7 * 24, columns=columns)
    began = time.perf_counter()
    page = report_of(engine)
    size, seconds = len(page.encode()), time.perf_counter() - began
    print(f"24 columns x 168 hourly windows: {size / 1024:.0f} KiB in {seconds:.1f} s")
    assert len(re.findall(r"<figure class='chart'", page)) == 24
    assert size < 1_000_000


def test_report_command_writes_the_file(config_file, engine, tmp_path):  # noqa: F811  the imported fixture
    store_history(engine)
    out = tmp_path / "shop.html"
    result = CliRunner().invoke(main, ["report", "--config", str(config_file), "--monitor", "shop",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(rf"wrote {re.escape(str(out))} \(\d+ KiB\) in \d+\.\d s\n", result.output)
    assert out.read_text().startswith("<!DOCTYPE html>")
    backwards = CliRunner().invoke(main, ["report", "--config", str(config_file), "--monitor", "shop",
                                          "--start", "2024-03-08", "--end", "2024-03-01", "--out", str(out)])
    assert backwards.exit_code == 2 and "--start must be before --end" in backwards.output


@pytest.mark.parametrize("folder", ["missing", "a-file"])
def test_report_into_a_folder_that_is_not_there_is_a_usage_error(config_file, engine, tmp_path, folder):  # noqa: F811
    # It rendered the page, then died on the write with a traceback and exit 1.
    store_history(engine)
    (tmp_path / "a-file").write_text("not a folder")
    out = tmp_path / folder / "shop.html"
    result = CliRunner().invoke(main, ["report", "--config", str(config_file), "--monitor", "shop",
                                       "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "'--out'" in result.output and str(tmp_path / folder) in result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, OSError)
    assert (tmp_path / "a-file").read_text() == "not a folder"
    directory = CliRunner().invoke(main, ["report", "--config", str(config_file), "--monitor", "shop",
                                          "--out", str(tmp_path)])
    assert directory.exit_code == 2 and "'--out'" in directory.output  # as a folder given as --out was


def test_a_report_that_cannot_be_written_is_a_usage_error(config_file, engine, tmp_path, monkeypatch):  # noqa: F811
    store_history(engine)

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "write_text", refuse)  # a read-only folder, which root could still write to
    result = CliRunner().invoke(main, ["report", "--config", str(config_file), "--monitor", "shop",
                                       "--out", str(tmp_path / "shop.html")])
    assert result.exit_code == 2, result.output
    assert "'--out'" in result.output and "Permission denied" in result.output


# --- labels from the data --------------------------------------------------------------------


def chart_texts(page: str) -> set[str]:
    """Every text the page's charts draw (kept as text in the SVGs), unescaped."""
    return {html.unescape(text) for text in re.findall(r"<text\b[^>]*>([^<]*)</text>", page)}


def drawn_as(label: str, texts: set[str]) -> bool:
    """Whether one of ``texts`` is ``label`` as an axis shows it: escaped, and if long, its start and an ellipsis."""
    shown = visible(label)
    return shown in texts or any(t.endswith("…") and shown.startswith(t[:-1]) and len(t) > 1 for t in texts)


def test_a_label_of_math_text_is_drawn_as_plain_text(config_file, engine):  # noqa: F811  the imported fixture
    # One source row whose category was $x^$: matplotlib parsed the bin label as math text and
    # raised, so `driftmon report` exited 1 writing nothing and /report/shop answered 500 for as
    # long as any window of the range had that bin.
    store(engine, label_rows("$a$", ["$x^$", "$\\frac{$", "%s {0}", "plain"]))
    page = report_of(engine)
    assert {"$x^$", "$\\frac{$", "%s {0}"} <= chart_texts(page)
    assert "<h2 id='column-0'>$a$ " in page
    out = config_file.parent / "report.html"
    result = CliRunner().invoke(main, ["report", "--config", str(config_file), "--monitor", "shop",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "$x^$" in out.read_text()
    assert ReportPages([settings()], engine).page("shop").startswith("<!DOCTYPE html>")  # not a 500


SPAN = TimeRange(WINDOW_END - timedelta(days=1), WINDOW_END)


@hypothesis_settings(max_examples=20, deadline=None)
@given(labels=st.lists(LABELS, min_size=1, max_size=3, unique=True), column=LABELS)
@example(labels=["$x^$", ' d="1x"', "url(#p1)", "\u202egnp.exe", "\x1b[2J\r\n"], column="$\\frac{$")
def test_any_label_is_drawn_as_plain_visible_text(labels, column):
    # Labels are text to matplotlib (never math text or TeX) and to the page (never markup, a
    # control character or a bidi control); the SVG's ids and paths are rewritten, never its text.
    rows = label_rows(column, labels)
    page = render_report(settings(), explain_window(settings(), rows), rows, SPAN)
    assert is_visible(page.replace("\n", ""))
    figures = re.findall(r"<figure class='chart'.*?</figure>", page, re.S)
    assert len(figures) == 1
    texts = chart_texts(figures[0])
    numeric = re.compile(r"^[\[(].*\)$")  # drawn with their edges rounded
    drawn = [label for label in labels if label and not numeric.match(label)]  # "" draws nothing
    assert all(drawn_as(label, texts) for label in drawn), (labels, texts)
    assert f"<h2 id='column-0'>{html.escape(visible(column))} " in page


# --- many columns --------------------------------------------------------------------------

WARNING_HIGH = (["a", "b", "c"], [500, 300, 200], [250, 350, 400])  # kl 0.161
WARNING_LOW = (["a", "b", "c"], [500, 300, 200], [280, 360, 360])  # kl 0.117
OK_HIGH = (["a", "b", "c"], [500, 300, 200], [300, 350, 350])  # kl 0.097, below the warning line


def wide_monitor(count: int, drifted: dict[int, tuple]) -> dict[str, tuple]:
    """``count`` columns that did not drift (AGE), but for those at the positions of ``drifted``."""
    return {f"feature_{i:05d}": drifted.get(i, AGE) for i in range(count)}


def table_rows(page: str, caption: str) -> list[list[str]]:
    """The cells of each row of the table that follows ``caption``."""
    table = page[page.index(caption):]
    table = table[:table.index("</table>")]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table)[1:]]


def test_many_columns_chart_the_most_drifted_and_list_the_others(engine):
    # A 10,000-column report did not render in 150 s: one chart per column. Charts now go to the
    # columns that drifted most, by status, then statistic; the page says so and lists the rest.
    drifted = {900: COUNTRY, 10: AMOUNT, 500: WARNING_HIGH, 20: WARNING_LOW, 700: OK_HIGH}
    store_history(engine, hours=3, columns=wide_monitor(1000, drifted))
    page = report_of(engine, charts=4)
    assert "showing the 4 most drifted of 1,000 columns" in page
    charted = ["feature_00010", "feature_00020", "feature_00500", "feature_00900"]  # in the columns' order
    assert re.findall(r"<figure class='chart' data-column='([^']+)'", page) == charted
    assert page.count("<svg") == 4
    summary = table_rows(page, "<h2>Summary</h2>")
    assert [re.search(r">([^<]+)</a>", row[0])[1] for row in summary] == charted
    assert [row[-1] for row in summary] == ["3 of 3"] * 4  # every window of the range drifted
    others = table_rows(page, "<h2 id='other-columns'>")
    assert [row[0] for row in others] == [f"feature_{i:05d}" for i in range(1000) if f"feature_{i:05d}" not in charted]
    assert others[0][-1] == "0 of 3" and ">ok<" in others[0][2]
    assert next(row for row in others if row[0] == "feature_00700")[4] == "0.0970"  # its kl
    # Fewer charts wanted: the worst status first, then the largest statistic.
    fewer = report_of(engine, charts=2)
    assert re.findall(r"<figure class='chart' data-column='([^']+)'", fewer) == ["feature_00010", "feature_00900"]


def test_a_monitor_within_the_bound_charts_every_column_without_a_note(engine):
    store_history(engine, hours=3)
    page = report_of(engine, charts=3)
    assert "most drifted" not in page and "other-columns" not in page
    assert re.findall(r"<figure class='chart' data-column='([^']+)'", page) == list(COLUMNS)


def test_ten_thousand_columns_render_a_bounded_number_of_charts(sqlite_engine, monkeypatch):
    drawn = []

    def count(column, *args, **kwargs):  # the charts themselves are not the subject here
        drawn.append(column.column)
        return "<svg></svg>"

    monkeypatch.setattr(report, "_figure_svg", count)
    store(sqlite_engine, stored_rows(settings(), WINDOW_END, wide_monitor(10_000, {9_999: COUNTRY})))
    page = report_of(sqlite_engine)
    assert len(drawn) == report.MAX_CHARTS == 50 and "feature_09999" in drawn
    assert f"showing the {report.MAX_CHARTS} most drifted of 10,000 columns" in page
    assert len(table_rows(page, "<h2 id='other-columns'>")) == 10_000 - report.MAX_CHARTS
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert f"the {report.MAX_CHARTS} most drifted columns" in readme


# --- in a real browser --------------------------------------------------------------------------


class Chromium:
    """Headless Chromium, spoken to over the DevTools protocol on a pair of pipes."""

    def __init__(self, profile: Path):
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()

        def on_descriptors_3_and_4():  # what --remote-debugging-pipe reads and writes
            reads, writes = os.dup(to_browser), os.dup(from_browser)
            os.dup2(reads, 3)
            os.dup2(writes, 4)

        self.process = subprocess.Popen(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--disable-background-networking", "--disable-component-update",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=on_descriptors_3_and_4, close_fds=False,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id, self.events = b"", 0, []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=self.session)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=self.session)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        number = self._next_id
        reply = self._receive(lambda m: m.get("id") == number, timeout, method)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return reply["result"]

    def _receive(self, wanted, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "id" not in message:
                    self.events.append(message)
                if wanted(message):
                    return message
            ready, _, _ = select.select([self._from_browser], [], [], 0.2)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise AssertionError(f"chromium closed the pipe while waiting for {what}")
                self._buffer += chunk
        raise AssertionError(f"chromium: no {what} within {timeout} s")

    def load(self, url: str) -> dict:
        """Navigate and wait for the load event; what the page logged and fetched meanwhile."""
        self.events.clear()
        self.call("Page.navigate", {"url": url}, session=self.session)
        self._receive(lambda m: m.get("method") == "Page.loadEventFired", 30.0, f"load event of {url}")
        self.call("Runtime.evaluate", {"expression": "1"}, session=self.session)  # drain what came before
        return {
            "errors": [e for e in self.events if _is_error(e)],
            "requests": [e["params"]["request"]["url"] for e in self.events
                         if e.get("method") == "Network.requestWillBeSent"
                         and not e["params"]["request"]["url"].startswith("data:")],
        }

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                           session=self.session)
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        shot = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                         session=self.session)
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (AssertionError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        os.close(self._to_browser)
        os.close(self._from_browser)


def _is_error(event: dict) -> bool:
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled":
        return params.get("type") in ("error", "assert")
    if method == "Log.entryAdded":
        return params["entry"]["level"] == "error"
    return method in ("Runtime.exceptionThrown", "Network.loadingFailed")


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    if shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run installs Debian's chromium")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium): the browser tests need it")
    browser = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield browser
    browser.close()


CHARTS = """Array.from(document.querySelectorAll('figure.chart')).map(f => {
  const svg = f.querySelector('svg'); const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
  return [f.dataset.column, box.width, box.height, svg ? svg.querySelectorAll('path').length : 0]; })"""


def assert_every_chart_drawn(chromium: Chromium, columns) -> None:
    charts = chromium.evaluate(CHARTS)
    assert [c[0] for c in charts] == list(columns)
    for column, width, height, paths in charts:
        assert width > 600 and height > 100 and paths > 10, (column, width, height, paths)


def test_the_report_file_loads_in_chromium(chromium, sqlite_engine, tmp_path):
    engine = sqlite_engine
    store_history(engine)
    page = tmp_path / "report.html"
    page.write_text(report_of(engine))
    visit = chromium.load(page.as_uri())
    assert visit["errors"] == []
    assert visit["requests"] == [page.as_uri()]  # the file itself, nothing else
    assert chromium.evaluate("document.title") == "driftmon report: shop"
    assert_every_chart_drawn(chromium, COLUMNS)
    chromium.screenshot(tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_the_daemon_page_loads_in_chromium(chromium, sqlite_engine, tmp_path):
    engine = sqlite_engine
    store_history(engine)
    server = MetricsServer("127.0.0.1", 0, CollectorRegistry(), lambda: None, lambda: None,
                           reports=ReportPages([settings()], engine))
    server.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        index = chromium.load(f"{base}/report")
        assert index["errors"] == [] and index["requests"] == [f"{base}/report"]
        link = chromium.evaluate("document.querySelector('a').href")
        assert link == f"{base}/report/shop"
        visit = chromium.load(link)
        assert visit["errors"] == [] and visit["requests"] == [link]
        assert_every_chart_drawn(chromium, COLUMNS)
        assert chromium.evaluate("document.querySelector('a[href=\"../report\"]').href") == f"{base}/report"
        chromium.screenshot(tmp_path / "daemon-report.png")
    finally:
        server.stop()
