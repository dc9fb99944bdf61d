"""The Grafana dashboard and its provisioning files, checked offline for real.

No Grafana server runs here, so each part of the dashboard is checked by the
tool that owns it:

* the dashboard JSON against Grafana's dashboard schema, as generated into the
  ``grafana-foundation-sdk`` models for Grafana 11.1 (schemaVersion 39, the
  Grafana of docker-compose.yml) and its panel and Prometheus query plugins: every
  key must be one the schema knows, every required key present, and every value
  of the type (or enum member) the schema gives it;
* every panel query and template-variable selector with ``promtool check rules``;
* every metric and label a query names against a real scrape of the daemon.
"""

from __future__ import annotations

import enum
import json
import re
import shutil
import subprocess
import types
import typing
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa
import yaml
from grafana_foundation_sdk.cog import variants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import prometheus
from grafana_foundation_sdk.models.dashboard import Dashboard, Panel

from driftmon.config import Statistic
from tests.live import (
    ROOT,
    free_port,
    samples_named,
    scrape,
    start_daemon,
    stop,
    wait_for,
    wait_ready,
)
from tests.sourcedata import create_and_fill, events_table
from tests.test_daemon import FEATURES, REFERENCE_START, write_config
from tests.test_pipeline import drifted_rows

GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "driftmon.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "driftmon.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "driftmon.yml"

SCHEMA_VERSION = 39  # Grafana 11.1: the grafana-foundation-sdk release pinned in the test extras
# Concrete values for the template variables and Grafana's built-in interval variables.
SUBSTITUTIONS = {
    "monitor": ".*",
    "feature": ".*",
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
}
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>[a-zA-Z_]\w*)\)$")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
SELECTOR = re.compile(r"(?P<name>[a-zA-Z_:][\w:]*)\s*\{(?P<matchers>[^}]*)\}")
MATCHER = re.compile(r'(?P<label>[a-zA-Z_]\w*)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>(?:[^"\\]|\\.)*)"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
KEYWORDS = set(
    "by without on ignoring group_left group_right bool offset and or unless inf nan".split()
)
# Labels that Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panel_targets(dashboard: dict) -> list[tuple[dict, dict]]:
    return [(panel, target) for panel in dashboard["panels"] for target in panel["targets"]]


def variables(dashboard: dict) -> dict[str, dict]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


def substitute(expr: str, defined: set[str]) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        assert name in defined, f"{expr!r} uses ${name}, which the dashboard does not define"
        return SUBSTITUTIONS[name]

    return VARIABLE.sub(value, expr)


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable's selector.

    ``where`` is also a valid recording-rule name, so promtool's errors name the panel.
    """
    defined = set(variables(dashboard)) | {n for n in SUBSTITUTIONS if n.startswith("__")}
    found = [
        (f"dashboard:panel_{panel['id']}:{target['refId']}", substitute(target["expr"], defined))
        for panel, target in panel_targets(dashboard)
    ]
    for name, variable in variables(dashboard).items():
        if variable["type"] == "query":
            match = LABEL_VALUES.match(variable["query"])
            assert match, (
                f"variable {name}: {variable['query']!r} is not label_values(selector, label)"
            )
            found.append((f"dashboard:variable:{name}", substitute(match["selector"], defined)))
    return found


# --- 1. the dashboard against Grafana's schema -----------------------------------------


def _check_value(value, annotation, path: str, errors: list[str]) -> None:
    """Check a decoded value against an annotation of the SDK's generated models."""
    origin = typing.get_origin(annotation)
    if annotation is typing.Any:
        return
    if origin is typing.Union or origin is types.UnionType:
        options = [option for option in typing.get_args(annotation) if option is not type(None)]
        if value is None and len(options) < len(typing.get_args(annotation)):
            return
        # A decoded model picks its own branch of the union.
        options = [o for o in options if isinstance(o, type) and isinstance(value, o)] or options
        attempts: list[str] = []
        for option in options:
            attempt: list[str] = []
            _check_value(value, option, path, attempt)
            if not attempt:
                return
            attempts += attempt
        errors.extend(
            attempts
            if len(options) == 1
            else [f"{path}: {value!r} is none of {options}", *attempts]
        )
    elif origin is typing.Literal:
        if value not in typing.get_args(annotation):
            errors.append(f"{path}: {value!r} is not one of {typing.get_args(annotation)}")
    elif origin is list:
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {value!r}")
            return
        (item,) = typing.get_args(annotation)
        for index, element in enumerate(value):
            _check_value(element, item, f"{path}[{index}]", errors)
    elif origin is dict:
        _, item = typing.get_args(annotation)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            errors.append(f"{path}: expected an object, got {value!r}")
            return
        for name, element in value.items():
            _check_value(element, item, f"{path}.{name}", errors)
    elif annotation is type(None):
        if value is not None:
            errors.append(f"{path}: expected null, got {value!r}")
    elif annotation is object:
        # Panel options and custom field config: decoded by the panel plugin's hooks.
        if hasattr(value, "to_json"):
            _check_model(value, path, errors)
    elif annotation is bool:
        if not isinstance(value, bool):
            errors.append(f"{path}: expected a boolean, got {value!r}")
    elif annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: expected an integer, got {value!r}")
    elif annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors.append(f"{path}: expected a number, got {value!r}")
    elif annotation is str:
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string, got {value!r}")
    elif isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        members = {member.value for member in annotation}
        if isinstance(value, bool) or value not in members:
            errors.append(f"{path}: {value!r} is not one of {sorted(members)}")
    elif isinstance(annotation, type) and issubclass(annotation, variants.Dataquery):
        if type(value).__name__ == "UnknownDataquery" or not isinstance(value, annotation):
            errors.append(f"{path}: a query of no known data source type: {value!r}")
        else:
            _check_model(value, path, errors)
    elif isinstance(annotation, type) and hasattr(annotation, "from_json"):
        # The few fields that the SDK keeps undecoded (panel links, transformations).
        if isinstance(value, dict):
            decoded = annotation.from_json(value)
            _check_round_trip(value, decoded, path, errors)
            value = decoded
        if not isinstance(value, annotation):
            errors.append(f"{path}: expected {annotation.__name__}, got {value!r}")
            return
        _check_model(value, path, errors)
    else:
        raise AssertionError(f"{path}: no check for the annotation {annotation!r}")


def _check_model(model, path: str, errors: list[str]) -> None:
    for name, annotation in typing.get_type_hints(type(model)).items():
        _check_value(getattr(model, name), annotation, f"{path}.{name}", errors)


def _encoded(model) -> object:
    return json.loads(json.dumps(model, cls=JSONEncoder))


def _check_round_trip(original: dict, model, path: str, errors: list[str]) -> None:
    """The model keeps every key of ``original`` and adds none: nothing unknown, nothing missing."""
    encoded = _encoded(model)
    if encoded != original:
        errors.extend(f"{path}{where}: {what}" for where, what in _differences(original, encoded))


def _differences(original, encoded, where: str = "") -> typing.Iterator[tuple[str, str]]:
    if isinstance(original, dict) and isinstance(encoded, dict):
        for key in original.keys() - encoded.keys():
            yield f"{where}.{key}", "not in the schema (dropped on decoding)"
        for key in encoded.keys() - original.keys():
            yield (
                f"{where}.{key}",
                f"missing (the schema requires or defaults it to {encoded[key]!r})",
            )
        for key in original.keys() & encoded.keys():
            yield from _differences(original[key], encoded[key], f"{where}.{key}")
    elif isinstance(original, list) and isinstance(encoded, list) and len(original) == len(encoded):
        for index, (left, right) in enumerate(zip(original, encoded, strict=True)):
            yield from _differences(left, right, f"{where}[{index}]")
    elif original != encoded:
        yield where, f"{original!r} decodes to {encoded!r}"


def test_dashboard_validates_against_grafana_schema():
    register_default_plugins()
    raw = load_dashboard()
    dashboard = Dashboard.from_json(raw)
    errors: list[str] = []
    _check_round_trip(raw, dashboard, "$", errors)
    _check_model(dashboard, "$", errors)
    assert not errors, "the dashboard does not match Grafana's schema:\n" + "\n".join(errors)

    assert dashboard.schema_version == SCHEMA_VERSION
    assert dashboard.uid and 8 <= len(dashboard.uid) <= 40
    for panel in dashboard.panels:
        assert isinstance(panel, Panel), "no rows: every panel is a visualization"
        # Options and field config were decoded by the panel plugin's own schema, not kept as a bag.
        assert not isinstance(panel.options, dict), (
            f"panel {panel.id_val}: unknown panel type {panel.type_val}"
        )
        assert panel.targets and all(isinstance(t, prometheus.Dataquery) for t in panel.targets)


def test_dashboard_layout_and_variables():
    dashboard = load_dashboard()
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {ids}"
    occupied: dict[tuple[int, int], int] = {}
    for panel in panels:
        assert panel["title"] and panel["description"], (
            f"panel {panel['id']} needs a title and a description"
        )
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), f"panel {panel['id']}: refIds repeat"
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["y"] >= 0
        assert grid["x"] + grid["w"] <= 24, f"panel {panel['id']} is wider than the grid"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in occupied, (
                    f"panels {occupied[(x, y)]} and {panel['id']} overlap at {(x, y)}"
                )
                occupied[(x, y)] = panel["id"]

    declared = variables(dashboard)
    assert (
        declared["datasource"]["type"] == "datasource"
        and declared["datasource"]["query"] == "prometheus"
    )
    for name in ("monitor", "feature"):
        variable = declared[name]
        assert variable["type"] == "query" and variable["multi"] and variable["includeAll"]
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    # Every per-column series is filtered by both variables, every per-monitor one by $monitor.
    for panel, target in panel_targets(dashboard):
        for selector in SELECTOR.finditer(target["expr"]):
            labels = {m["label"]: m["value"] for m in MATCHER.finditer(selector["matchers"])}
            if "monitor" in labels:
                assert labels["monitor"] == "$monitor", (panel["id"], target["expr"])
            if "feature" in labels:
                assert labels["feature"] == "$feature", (panel["id"], target["expr"])


def test_provisioning_files():
    datasources = yaml.safe_load(DATASOURCES.read_text())
    assert datasources["apiVersion"] == 1 and set(datasources) <= {
        "apiVersion",
        "datasources",
        "deleteDatasources",
    }
    known = {
        "name",
        "type",
        "access",
        "orgId",
        "uid",
        "url",
        "user",
        "database",
        "basicAuth",
        "basicAuthUser",
        "withCredentials",
        "isDefault",
        "jsonData",
        "secureJsonData",
        "version",
        "editable",
    }
    (source,) = datasources["datasources"]
    assert set(source) <= known, f"unknown datasource keys: {set(source) - known}"
    assert {"name", "type", "url"} <= set(source)
    assert (
        source["type"] == "prometheus"
        and source["uid"] == "prometheus"
        and source["access"] == "proxy"
    )
    assert source["url"] == "http://prometheus:9090"
    # The dashboard's datasource variable defaults to this data source.
    default = variables(load_dashboard())["datasource"]["current"]["value"]
    assert default == source["uid"]

    providers = yaml.safe_load(PROVIDERS.read_text())
    assert providers["apiVersion"] == 1 and set(providers) == {"apiVersion", "providers"}
    known = {
        "name",
        "orgId",
        "folder",
        "folderUid",
        "type",
        "disableDeletion",
        "updateIntervalSeconds",
        "allowUiUpdates",
        "options",
    }
    (provider,) = providers["providers"]
    assert set(provider) <= known, f"unknown provider keys: {set(provider) - known}"
    assert provider["name"] and provider["type"] == "file"
    assert set(provider["options"]) <= {"path", "foldersFromFilesStructure"}
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


# --- 2. every query parses -------------------------------------------------------------


def promtool_check(tmp_path, found: list[tuple[str, str]]) -> subprocess.CompletedProcess:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": where, "expr": expr} for where, expr in found],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=30
    )


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool (Debian package 'prometheus') is not installed",
)
def test_every_query_parses(tmp_path):
    found = queries(load_dashboard())
    checked = promtool_check(tmp_path, found)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(found)} rules found" in checked.stdout
    # The check is live: promtool refuses a broken query.
    broken = promtool_check(
        tmp_path, [("dashboard:broken", 'sum by (monitor (driftmon_psi{monitor=~".*"})')]
    )
    assert broken.returncode != 0


# --- 3. every metric and label a query names is in a real scrape -----------------------


def metric_names(expr: str) -> set[str]:
    """Metric names in PromQL: the identifiers that are not functions, keywords or labels."""
    text = SELECTOR.sub(lambda m: m["name"], STRING.sub('""', expr))
    text = GROUPING.sub(" ", re.sub(r"\[[^\]]*\]", " ", text))
    names = set()
    for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(?![\w:])(\s*\()?", text):
        if not match.group(2) and match.group(1).lower() not in KEYWORDS:
            names.add(match.group(1))
    return names


def test_metric_names_are_extracted():
    expr = (
        "histogram_quantile(0.95, sum by (monitor, le) "
        '(rate(a_bucket{monitor=~"x|y", job="j"}[5m])))'
        " / on (monitor) group_left b_total offset 5m + time() - c"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


@pytest.fixture
def drifted_log(engine):
    """The daemon tests' drifted table: calm reference week, then two drifted hours up to now."""
    rng = np.random.default_rng(21)
    now = datetime.now(UTC)
    rows = drifted_rows(rng, 3000, REFERENCE_START, timedelta(days=7), False)
    rows += drifted_rows(rng, 1500, now - timedelta(hours=2), timedelta(hours=2, minutes=15), True)
    create_and_fill(engine, events_table(tenure=sa.Double, age=sa.Double), rows)


SIGNIFICANCE = {"driftmon_drift_p_value", "driftmon_drift_q_value"}
# Only a source table that changed has these series; the test's table never does
# (tests/test_health_metrics.py exports them, the offline test below covers the panel).
SCHEMA_CHANGES = {"driftmon_schema_change"}


def significance_stored(engine) -> bool:
    """Whether the runs stored p/q-values: until the engine computes them, their gauges
    are rightly absent from the scrape (tests/test_metrics.py exports them from values)."""
    with engine.connect() as connection:
        return bool(connection.execute(sa.text(
            "SELECT count(*) FROM results WHERE p_value IS NOT NULL OR q_value IS NOT NULL")).scalar())


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # one backend proves the names
def test_every_query_names_scraped_metrics_and_labels(tmp_path, db_url, engine, drifted_log):
    port = free_port()
    config = write_config(tmp_path, db_url, port)
    settings = yaml.safe_load(config.read_text())
    # Drift between columns, with explicit bounds so that both of them (and the KL's) are scraped.
    settings["monitors"][0]["multivariate"] = {"thresholds": {"reconstruction_error": {"lower": 0.001, "upper": 1000.0},
                                                              "gaussian_kl": {"upper": 1000.0}}}
    # A second monitor on a table that does not exist, so that run failures are counted too.
    settings["monitors"].append(
        {
            "name": "broken",
            "features": [{"column": "amount", "bins": 10}],
            "source": {"kind": "events", "table": "no_such_table", "timestamp_column": "ts"},
        }
    )
    # And a segmented one, so that the segment families and the segment mix are scraped too,
    # with a volume check (off by default against a fixed reference) for the volume families.
    settings["monitors"].append(
        {
            "name": "by_country",
            "features": [{"column": "amount", "bins": 10}, {"column": "age", "bins": 8}],
            "segments": {"by": ["country"], "top_k": 2},
            "volume": {},
            "source": {"kind": "events", "table": "inference_log", "timestamp_column": "ts"},
        }
    )
    config.write_text(yaml.safe_dump(settings))
    daemon = start_daemon(config, tmp_path / "daemon.log")
    try:
        wait_ready(port, daemon)

        def complete():
            metrics = scrape(port)
            kl = {dict(labels)["monitor"] for labels in samples_named(metrics, "driftmon_kl_divergence")}
            every_column = len(samples_named(metrics, "driftmon_kl_divergence")) == len(FEATURES) + 3
            segments = samples_named(metrics, "driftmon_segment_drift_status")
            failed = sum(samples_named(metrics, "driftmon_run_failures_total").values()) > 0
            multivariate = samples_named(metrics, "driftmon_reconstruction_error")
            return metrics if every_column and kl == {"fraud", "by_country"} and segments and failed \
                and multivariate else None

        metrics = wait_for(
            complete, 45, "KL of every column (2 + the mix of the segmented monitor), "
            "its segments, fraud's reconstruction error and a failed run of the broken monitor"
        )
    finally:
        assert stop(daemon) == 0

    labels: dict[str, set[str]] = {}
    values: dict[tuple[str, str], set[str]] = {}
    for name, pairs in metrics:
        labels.setdefault(name, set()).update(label for label, _ in pairs)
        for label, value in pairs:
            values.setdefault((name, label), set()).add(value)

    dashboard = load_dashboard()
    not_exported = (set() if significance_stored(engine) else SIGNIFICANCE) | SCHEMA_CHANGES
    used: set[str] = set()
    for where, expr in queries(dashboard):
        names = metric_names(expr)
        assert names, f"{where}: {expr!r} names no metric"
        used |= names
        if names <= not_exported:
            continue
        for name in names:
            assert name in labels, f"{where}: {name} is not in the daemon's scrape"
        for selector in SELECTOR.finditer(expr):
            for matcher in MATCHER.finditer(selector["matchers"]):
                name, label = selector["name"], matcher["label"]
                assert label in labels[name] | TARGET_LABELS, (
                    f"{where}: {name} has no label {label}"
                )
                if matcher["op"] != "=":
                    continue
                if label == "statistic":
                    assert matcher["value"] in typing.get_args(Statistic), where
                else:
                    assert matcher["value"] in values[(name, label)], (
                        f"{where}: no {name}{{{label}={matcher['value']!r}}}"
                    )
        for grouping in re.finditer(r"\bby\s*\(([^)]*)\)", expr):
            for label in (part.strip() for part in grouping.group(1).split(",")):
                assert any(label in labels[name] for name in names), (
                    f"{where}: no metric has label {label}"
                )
    for name, variable in variables(dashboard).items():
        if variable["type"] == "query":
            match = LABEL_VALUES.match(variable["query"])
            (metric,) = metric_names(match["selector"])
            assert match["label"] in labels[metric], (
                f"variable {name}: {metric} has no label {match['label']}"
            )

    # The dashboard shows every metric family the daemon exposes.
    exposed = {
        name
        for name in labels
        if name.startswith("driftmon_") and not name.endswith(("_created", "_sum", "_count"))
    }
    assert exposed - used == set(), f"metrics no panel shows: {sorted(exposed - used)}"


def test_dashboard_shows_every_family_the_collector_can_export():
    """Offline, so that families the test daemon's data cannot produce (the significance
    gauges before the engine computes them) are covered too."""
    from driftmon.serving.health_metrics import HealthCollector, HealthState
    from driftmon.serving.metrics import DriftCollector, DriftState
    from driftmon.serving.multivariate_metrics import MultivariateCollector, MultivariateState

    families = {family.name for family in DriftCollector(DriftState(), [], {}).describe()}
    families |= {family.name for family in HealthCollector(HealthState(), []).describe()}
    families |= {family.name for family in MultivariateCollector(MultivariateState(), []).describe()}
    used = set().union(*(metric_names(expr) for _, expr in queries(load_dashboard())))
    assert SIGNIFICANCE | SCHEMA_CHANGES <= families
    assert families - used == set(), f"families no panel shows: {sorted(families - used)}"
