"""The shipped alerting: rule and config checks, and alerts delivered end to end.

`promtool check rules`/`test rules`, `promtool check config` and
`amtool check-config` on the files under deploy/, then on loopback: driftmon
(the daemon on a generated drifted table, and `driftmon demo`) scraped by a
real Prometheus with the rules loaded, sending to a real Alertmanager, which
delivers to a webhook receiver run by the test. The drifted feature must page
(DriftmonDriftCritical) and the control feature (age) must raise nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from tests.live import ROOT, free_port, http_get, start_daemon, stop, wait_for, wait_ready
from tests.test_daemon import live_log, write_config  # noqa: F401  (live_log is a fixture)

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "driftmon-rules.yml"
RULES_TESTS = PROMETHEUS_DIR / "driftmon-rules.test.yml"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"

PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package 'prometheus')")
needs_amtool = pytest.mark.skipif(
    AMTOOL is None, reason="amtool is not installed (Debian package 'prometheus-alertmanager')")
needs_stack = pytest.mark.skipif(
    PROMETHEUS is None or ALERTMANAGER is None,
    reason="the end-to-end alert test needs the Debian packages 'prometheus' and "
           "'prometheus-alertmanager' (binaries prometheus and prometheus-alertmanager)")

ALERTS = {"DriftmonDriftCritical", "DriftmonDriftWarning", "DriftmonInsufficientData", "DriftmonSegmentCritical",
          "DriftmonMonitorStale", "DriftmonMonitorFailing", "DriftmonWindowsMissed", "DriftmonStoreDown",
          "DriftmonDown", "DriftmonVolumeCritical", "DriftmonSourceStale", "DriftmonSchemaBroken",
          "DriftmonMultivariateDrift"}


def _tool(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


# --- static checks ----------------------------------------------------------------


@needs_promtool
def test_rules_pass_promtool_check():
    assert "SUCCESS" in _tool(PROMTOOL, "check", "rules", str(RULES))


@needs_promtool
def test_rules_unit_tests_pass():
    assert "SUCCESS" in _tool(PROMTOOL, "test", "rules", str(RULES_TESTS))


def test_every_alert_is_defined_labelled_annotated_and_unit_tested():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} == ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, rule["alert"]
        # docs/runbooks.md's section of the alert (tests/test_runbooks.py resolves the anchors)
        assert annotations["runbook_url"] == f"runbooks.md#{rule['alert'].lower()}", rule["alert"]
        assert "{{ $labels.monitor }}" in annotations["summary"] or rule["alert"] in {
            "DriftmonStoreDown", "DriftmonDown"}, rule["alert"]  # no monitor label there
    for name in ("DriftmonDriftCritical", "DriftmonDriftWarning", "DriftmonInsufficientData",
                 "DriftmonSegmentCritical"):
        (rule,) = [r for r in rules if r["alert"] == name]
        assert "{{ $labels.feature }}" in rule["annotations"]["summary"]
        assert rule.get("for"), f"{name} needs a for: so that one noisy window does not page"
    for name in ("DriftmonVolumeCritical", "DriftmonMultivariateDrift"):
        (rule,) = [r for r in rules if r["alert"] == name]
        assert rule.get("for"), f"{name} needs a for: so that one odd window does not page"
    (stale,) = [r for r in rules if r["alert"] == "DriftmonSourceStale"]
    assert "3 * max without (instance) (driftmon_schedule_interval_seconds)" in stale["expr"]
    quoted = {"DriftmonDriftCritical": ("driftmon_drift_p_value", "driftmon_drift_q_value"),
              "DriftmonDriftWarning": ("driftmon_drift_p_value", "driftmon_drift_q_value"),
              "DriftmonInsufficientData": ('window="current"', 'window="reference"'),
              "DriftmonSegmentCritical": ("driftmon_segment_drift_status", "--segment"),
              "DriftmonVolumeCritical": ("driftmon_window_rows{", "driftmon_window_rows_expected{"),
              "DriftmonSourceStale": ("driftmon_schedule_interval_seconds",),
              "DriftmonSchemaBroken": ("driftmon_schema_change{", 'change!="added"'),
              "DriftmonMultivariateDrift": ('bound="lower"', 'bound="upper"', "driftmon_multivariate_kl{",
                                            "driftmon_multivariate_kl_threshold{")}
    for name, needles in quoted.items():
        (rule,) = [r for r in rules if r["alert"] == name]
        for needle in needles:  # the evidence is in the alert itself (promtool tests the values)
            assert needle in rule["annotations"]["description"], (name, needle)
    tests = yaml.safe_load(RULES_TESTS.read_text())["tests"]
    checks = [check for test in tests for check in test.get("alert_rule_test", [])]
    for name in ALERTS:
        mine = [check for check in checks if check["alertname"] == name]
        assert any(check["exp_alerts"] for check in mine), f"{name} is never tested firing"
        assert any(not check["exp_alerts"] for check in mine), f"{name} is never tested silent"


@needs_promtool
def test_example_prometheus_config_is_valid():
    # rule_files is relative to the config file, and the rules lie next to it.
    output = _tool(PROMTOOL, "check", "config", str(PROMETHEUS_CONFIG))
    assert "1 rule files found" in output
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "driftmon"  # DriftmonDown selects up{job="driftmon"}
    assert job["static_configs"][0]["targets"] == ["driftmon:9847"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


@needs_amtool
def test_example_alertmanager_config_is_valid():
    assert "SUCCESS" in _tool(AMTOOL, "check-config", str(ALERTMANAGER_CONFIG))
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    assert config["route"]["group_by"] == ["alertname", "monitor", "feature"]
    routes = {tuple(route["matchers"]): route["receiver"] for route in config["route"]["routes"]}
    assert routes[('severity="critical"',)] != routes[('severity="warning"',)]
    assert any(rule["source_matchers"] == ['severity="critical"']
               and rule["target_matchers"] == ['severity="warning"']
               and set(rule["equal"]) == {"monitor", "feature"} for rule in config["inhibit_rules"])


# --- end to end -------------------------------------------------------------------


@dataclass
class Webhook:
    """Alertmanager's webhook payloads, as received."""

    port: int
    payloads: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def alerts(self) -> list[dict]:
        with self.lock:
            return [alert for payload in self.payloads for alert in payload["alerts"]]

    def received(self, alertname: str, feature: str) -> list[dict]:
        return [a for a in self.alerts()
                if a["labels"].get("alertname") == alertname and a["labels"].get("feature") == feature]


@contextmanager
def webhook_receiver() -> Iterator[Webhook]:
    server = HTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    hook = Webhook(server.server_address[1])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with hook.lock:
                hook.payloads.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *args):  # noqa: A002
            pass

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="webhook", daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def fast_rules(path: Path) -> Path:
    """The shipped rules with every `for:` cut to 1s, so that the test takes seconds.

    The `for:` durations themselves (and their boundaries) are proven by the
    promtool unit tests; here only the expressions and the delivery path count.
    """
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as stream:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=stream, stderr=subprocess.STDOUT)


def _terminate(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@dataclass
class Stack:
    prometheus_port: int
    webhook: Webhook
    logs: list[Path]

    def query(self, promql: str) -> list[dict]:
        status, body = http_get(f"http://127.0.0.1:{self.prometheus_port}/api/v1/query?query={quote(promql)}")
        assert status == 200, body
        return json.loads(body)["data"]["result"]

    def diagnostics(self) -> str:
        return "\n".join(f"--- {log.name}\n{_tail(log)}" for log in self.logs) + \
            f"\n--- webhook received\n{json.dumps([a['labels'] for a in self.webhook.alerts()])}"


@contextmanager
def alerting_stack(tmp_path: Path, driftmon_port: int) -> Iterator[Stack]:
    """A real Alertmanager and Prometheus (rules loaded) on loopback, alerts to a test webhook."""
    prometheus_port, alertmanager_port = free_port(), free_port()
    with webhook_receiver() as hook:
        (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump({
            "route": {"receiver": "test", "group_by": ["alertname", "monitor", "feature"],
                      "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "test", "webhook_configs": [
                {"url": f"http://127.0.0.1:{hook.port}/", "send_resolved": False}]}],
        }))
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(fast_rules(tmp_path / "driftmon-rules.yml"))],
            "alerting": {"alertmanagers": [
                {"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]},
            "scrape_configs": [{"job_name": "driftmon",
                                "static_configs": [{"targets": [f"127.0.0.1:{driftmon_port}"]}]}],
        }))
        logs = [tmp_path / "alertmanager.log", tmp_path / "prometheus.log"]
        alertmanager = _spawn([
            ALERTMANAGER, f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'alertmanager'}",
            f"--web.listen-address=127.0.0.1:{alertmanager_port}",
            "--cluster.listen-address=",  # empty: no gossip cluster, loopback only
        ], logs[0])
        try:
            prometheus = _spawn([
                PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ], logs[1])
            stack = Stack(prometheus_port, hook, logs)
            try:
                for name, process, port in (("alertmanager", alertmanager, alertmanager_port),
                                            ("prometheus", prometheus, prometheus_port)):
                    def ready(process=process, port=port, name=name):
                        assert process.poll() is None, f"{name} exited early:\n{stack.diagnostics()}"
                        return http_get(f"http://127.0.0.1:{port}/-/ready", timeout=2)[0] == 200
                    wait_for(ready, 30, f"{name} to be ready")
                yield stack
            finally:
                _terminate(prometheus)
        finally:
            _terminate(alertmanager)


def assert_alerts(stack: Stack, monitor: str, critical: list[str], control: str, timeout: float,
                  warning: list[str] = ()) -> None:
    """`critical` features page through Alertmanager (`warning` ones warn); the control raises nothing."""
    expected = [("DriftmonDriftCritical", f) for f in critical] + [("DriftmonDriftWarning", f) for f in warning]
    try:
        wait_for(lambda: all(stack.webhook.received(*alert) for alert in expected),
                 timeout, f"{expected} at the webhook")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.diagnostics()}") from None
    for feature in critical:
        (alert, *_) = stack.webhook.received("DriftmonDriftCritical", feature)
        assert alert["status"] == "firing"
        assert alert["labels"]["monitor"] == monitor and alert["labels"]["severity"] == "critical"
        assert alert["annotations"]["summary"] == f"Critical drift in {monitor}/{feature}"
        assert alert["annotations"]["runbook_url"] == "runbooks.md#driftmondriftcritical"
    # The control column is really there, ok, and nothing (not even pending) concerns it.
    control_status = stack.query(f'driftmon_drift_status{{monitor="{monitor}",feature="{control}"}} == 1')
    assert [s["metric"]["status"] for s in control_status] == ["ok"]
    assert stack.query(f'ALERTS{{feature="{control}"}}') == []
    assert not [a for a in stack.webhook.alerts() if a["labels"].get("feature") == control], stack.diagnostics()


@needs_stack
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # one backend proves the path
def test_drift_alert_reaches_alertmanager_webhook(tmp_path, db_url, live_log):  # noqa: F811
    # live_log: amount, country and score drift in the current hour; age is the control.
    started = time.monotonic()
    port = free_port()
    daemon = start_daemon(write_config(tmp_path, db_url, port), tmp_path / "daemon.log")
    try:
        with alerting_stack(tmp_path, port) as stack:
            stack.logs.append(tmp_path / "daemon.log")
            wait_ready(port, daemon)
            assert_alerts(stack, "fraud", critical=["amount"], control="age", timeout=60)
    finally:
        assert stop(daemon) == 0
    assert time.monotonic() - started < 90


DEMO_DRIFTED = ["amount", "country", "tenure", "score"]
# session_minutes doubles in the kiosk app only (5 % of the traffic): ok over all traffic,
# critical in its segment. "segment" is the monitor's traffic mix over apps, compared like a column.
DEMO_COLUMNS = {*DEMO_DRIFTED, "age", "session_minutes", "segment"}


@needs_stack
def test_demo_drift_alerts_reach_alertmanager_webhook(tmp_path):
    """The issue's path: `driftmon demo` scraped by Prometheus, alerts through Alertmanager."""
    started = time.monotonic()
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTMON_")}
    with open(tmp_path / "demo.log", "w") as log:
        demo = subprocess.Popen(
            [sys.executable, "-m", "driftmon", "demo", "--dir", str(tmp_path / "demo"), "--port", str(port)],
            cwd=tmp_path, env=environ, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        with alerting_stack(tmp_path, port) as stack:  # starts while the demo seeds and backfills
            stack.logs.append(tmp_path / "demo.log")
            try:
                wait_ready(port, demo, timeout=120)  # seeding and backfill dominate
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{stack.diagnostics()}") from None

            def statuses() -> dict[str, str]:
                found = stack.query('driftmon_drift_status{monitor="demo_model"} == 1')
                return {s["metric"]["feature"]: s["metric"]["status"] for s in found}

            status = wait_for(lambda: set(statuses()) == DEMO_COLUMNS and statuses(), 20,
                              "a scrape of the demo with every column")
            critical = sorted(f for f, s in status.items() if s == "critical")
            warning = sorted(f for f, s in status.items() if s == "warning")
            # Only injected drift alarms, and some of it is critical.
            assert critical and set(critical + warning) <= set(DEMO_DRIFTED), status
            assert_alerts(stack, "demo_model", critical=critical, warning=warning, control="age", timeout=30)
            assert status["session_minutes"] == "ok"
            try:
                (alert, *_) = wait_for(lambda: stack.webhook.received("DriftmonSegmentCritical", "session_minutes"),
                                       30, "the kiosk segment's drift at the webhook")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{stack.diagnostics()}") from None
            assert alert["labels"]["monitor"] == "demo_model" and alert["labels"]["severity"] == "critical"
            assert "app=kiosk" in alert["annotations"]["description"], alert
    finally:
        assert stop(demo) == 0
    assert time.monotonic() - started < 150
