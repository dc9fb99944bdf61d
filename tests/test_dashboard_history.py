"""The results-database dashboard and the report links, checked offline for real.

``deploy/grafana/dashboards/driftmon-history.json`` plots driftmon's stored results (every
window a run or a backfill wrote) with SQL through the PostgreSQL data source of
``deploy/grafana/provisioning/datasources/driftmon-results.yml``; both dashboards link each
monitor to its ``/report/<monitor>`` page. Checked here:

* the dashboard against Grafana's schema as tests/test_dashboard.py checks the Prometheus one
  (grafana-foundation-sdk, schemaVersion 39), its SQL queries against the fields of Grafana's
  SQL query model (the SDK has no PostgreSQL query model, so it is declared below);
* every panel query and variable query, with Grafana's macros and variables replaced as
  Grafana replaces them, run against a results database migrated by driftmon, on SQLite and
  on PostgreSQL (DRIFTMON_TEST_DATABASE_URL): each must run, return the columns its panel
  reads, and return only the selected monitors and columns;
* the provisioning file against docker-compose.yml's results database, with no password in it;
* the report links against the route driftmon serves.
"""

from __future__ import annotations

import json
import re
import typing
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import pytest
import sqlalchemy as sa
import yaml
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard, DataSourceRef, Panel
from sqlalchemy.orm import Session

from driftmon.config import ServerConfig
from driftmon.store.models import MultivariateResult, Result, WindowHealth
from tests.live import ROOT
from tests.test_dashboard import SCHEMA_VERSION, _check_model, _check_round_trip

GRAFANA = ROOT / "deploy" / "grafana"
HISTORY = GRAFANA / "dashboards" / "driftmon-history.json"
OVERVIEW = GRAFANA / "dashboards" / "driftmon.json"
RESULTS_SOURCE = GRAFANA / "provisioning" / "datasources" / "driftmon-results.yml"
COMPOSE = ROOT / "docker-compose.yml"
POSTGRES = "grafana-postgresql-datasource"  # the plugin id of Grafana's PostgreSQL data source (Grafana 10.3+)
REPORT_URL = "${driftmon_url}/report/${__value.raw}"


class SQLDataquery(variants.Dataquery):
    """Grafana's SQL query model (public/app/features/plugins/sql/types.ts, SQLQuery), the
    query of its PostgreSQL, MySQL and MSSQL data sources, limited to the raw-SQL fields."""

    ref_id: str
    hide: bool | None
    datasource: DataSourceRef | None
    editor_mode: typing.Literal["code", "builder"] | None
    format_val: typing.Literal["time_series", "table"] | None
    raw_query: bool | None
    raw_sql: str

    KEYS = {"refId": "ref_id", "hide": "hide", "datasource": "datasource", "editorMode": "editor_mode",
            "format": "format_val", "rawQuery": "raw_query", "rawSql": "raw_sql"}

    def __init__(self, **values: Any) -> None:
        for attribute in self.KEYS.values():
            setattr(self, attribute, values.get(attribute))

    def to_json(self) -> dict[str, object]:
        return {key: getattr(self, attribute) for key, attribute in self.KEYS.items()
                if getattr(self, attribute) is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        values = {attribute: data[key] for key, attribute in cls.KEYS.items() if key in data}
        if isinstance(values.get("datasource"), dict):
            values["datasource"] = DataSourceRef.from_json(values["datasource"])
        return cls(**values)


def load(path=HISTORY) -> dict:
    return json.loads(path.read_text())


def variables(dashboard: dict) -> dict[str, dict]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


def targets(dashboard: dict) -> list[tuple[dict, dict]]:
    return [(panel, target) for panel in dashboard["panels"] for target in panel["targets"]]


# --- 1. the dashboard against Grafana's schema -----------------------------------------


def test_history_dashboard_validates_against_grafana_schema():
    register_default_plugins()
    cogruntime.Runtime().register_dataquery_variant(
        cogruntime.DataqueryConfig(identifier=POSTGRES, from_json_hook=SQLDataquery.from_json))
    raw = load()
    dashboard = Dashboard.from_json(raw)
    errors: list[str] = []
    _check_round_trip(raw, dashboard, "$", errors)
    _check_model(dashboard, "$", errors)
    assert not errors, "the dashboard does not match Grafana's schema:\n" + "\n".join(errors)

    assert dashboard.schema_version == SCHEMA_VERSION
    assert dashboard.uid and 8 <= len(dashboard.uid) <= 40 and dashboard.uid != load(OVERVIEW)["uid"]
    for panel in dashboard.panels:
        assert isinstance(panel, Panel) and not isinstance(panel.options, dict), panel.id_val
        assert panel.targets and all(isinstance(t, SQLDataquery) for t in panel.targets)
    # The check is live: a key that Grafana's SQL query does not know is refused.
    raw["panels"][0]["targets"][0]["expr"] = "driftmon_psi"
    errors = []
    _check_round_trip(raw, Dashboard.from_json(raw), "$", errors)
    assert any(".expr: not in the schema" in error for error in errors)


def test_history_dashboard_layout_and_variables():
    dashboard = load()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    occupied: dict[tuple[int, int], int] = {}
    for panel in dashboard["panels"]:
        assert panel["title"] and panel["description"]
        assert panel["datasource"] == {"type": POSTGRES, "uid": "${datasource}"}
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs))
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in occupied, f"panels {occupied[(x, y)]} and {panel['id']} overlap"
                occupied[(x, y)] = panel["id"]
        for target in panel["targets"]:
            sql = target["rawSql"]
            assert target["datasource"] == panel["datasource"] and target["rawQuery"]
            assert "$__timeFilter(" in sql, f"panel {panel['id']}: not limited to the time range"
            assert "monitor IN ($monitor)" in sql
            if re.search(r"\bFROM results\b", sql):
                assert '"column" IN ($column)' in sql and "segment_key = ''" in sql, panel["id"]
            if panel["type"] == "timeseries":
                assert target["format"] == "time_series"
    declared = variables(dashboard)
    assert declared["datasource"]["type"] == "datasource" and declared["datasource"]["query"] == POSTGRES
    for name in ("monitor", "column"):
        assert declared[name]["type"] == "query" and declared[name]["multi"] and declared[name]["includeAll"]
        # No allValue: "All" expands to every value, quoted, which IN (...) needs.
        assert "allValue" not in declared[name]
        assert declared[name]["datasource"] == {"type": POSTGRES, "uid": "${datasource}"}


# --- 2. the links to driftmon's reports -------------------------------------------------


@pytest.mark.parametrize("path", [OVERVIEW, HISTORY], ids=["overview", "history"])
def test_monitors_link_to_their_reports(path):
    dashboard = load(path)
    url = variables(dashboard)["driftmon_url"]
    default = f"http://localhost:{ServerConfig().port}"
    assert url["type"] == "textbox" and url["query"] == url["current"]["value"] == default
    assert {"title": "driftmon reports", "url": "${driftmon_url}/report"}.items() <= dashboard["links"][0].items()
    linked = []
    for panel in dashboard["panels"]:
        if panel["type"] != "table":
            continue
        names = json.dumps(panel["transformations"])
        if '"monitor"' not in names:
            continue
        renamed = panel["transformations"][0]["options"]["renameByName"].get("monitor", "monitor")
        (override,) = [o for o in panel["fieldConfig"]["overrides"] if o["matcher"]["options"] == renamed
                       and o["properties"][0]["id"] == "links"]
        (link,) = override["properties"][0]["value"]
        assert link["url"] == REPORT_URL and link["targetBlank"]
        linked.append(panel["id"])
    assert linked, "no table links its monitors"
    # Rendered as Grafana renders it, the link is the page that driftmon serves for the monitor.
    rendered = REPORT_URL.replace("${driftmon_url}", default).replace("${__value.raw}", "fraud")
    assert rendered == f"http://localhost:{ServerConfig().port}/report/fraud"
    server = (ROOT / "driftmon" / "serving" / "server.py").read_text()
    assert 'path.startswith("/report/")' in server or 'startswith("/report/")' in server


# --- 3. the provisioned data source -----------------------------------------------------


def test_results_data_source_is_the_compose_results_database_without_its_password():
    text = RESULTS_SOURCE.read_text()
    provisioning = yaml.safe_load(text)
    assert provisioning["apiVersion"] == 1
    (source,) = provisioning["datasources"]
    assert source["type"] == POSTGRES and source["access"] == "proxy"
    assert source["uid"] == variables(load())["datasource"]["current"]["value"]
    # Grafana expands $VARIABLE in provisioning files from its environment when it starts.
    assert source["secureJsonData"] == {"password": "$POSTGRES_PASSWORD"}
    assert "password" not in source and "password" not in source["jsonData"]
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    postgres = services["postgres"]["environment"]
    assert source["url"] == "postgres:5432"
    assert source["user"] == postgres["POSTGRES_USER"]
    assert source["jsonData"]["database"] == postgres["POSTGRES_DB"]
    assert postgres["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-}"
    assert source["jsonData"]["postgresVersion"] // 100 == int(services["postgres"]["image"].split(":")[1])
    # The Prometheus data source stays the default one.
    assert not source["isDefault"]


# --- 4. every query runs against a real results database -------------------------------

START = datetime(2026, 3, 1, tzinfo=UTC)
WINDOWS = 48
SHOWN = ("fraud",)
SHOWN_COLUMNS = ("amount", "age", "tenure")
# The statistic each column alerts on: every statistic, so that every threshold series has rows.
STATISTICS = {"amount": "psi", "age": "kl", "tenure": "js", "score": "kl"}
# The time range of the check: the last day of the two stored, so $__timeFilter must cut.
RANGE = (START + timedelta(hours=WINDOWS // 2), START + timedelta(hours=WINDOWS))
# What each format returns to its panel: a time series is time, metric (its name) and value.
SERIES_COLUMNS = ["time", "metric", "value"]


@pytest.fixture
def stored(engine):
    """Two days of hourly windows of two monitors, as runs and backfills store them."""
    with Session(engine) as session:
        for hour in range(WINDOWS):
            end = START + timedelta(hours=hour + 1)
            common = {"window_start": end - timedelta(hours=1), "window_end": end, "computed_at": end}
            reference = {"reference_start": START - timedelta(days=7), "reference_end": START}
            for monitor in ("fraud", "churn"):
                for column, statistic in STATISTICS.items():
                    for segment in ("", "country=DE"):
                        session.add(Result(
                            monitor=monitor, column=column, role="feature", **common, **reference,
                            samples_current=100.0, samples_reference=700.0, missing_current=1.0,
                            missing_ratio=0.01, kl=0.01 * hour, psi=0.02 * hour, js=0.001 * hour,
                            statistic=statistic, threshold_warning=0.1,
                            threshold_critical=0.25, status=("critical", "warning", "ok")[hour % 3],
                            segment_key=segment, segment={"country": "DE"} if segment else None))
                session.add(WindowHealth(monitor=monitor, **common, rows=100.0, reference_rows=700.0,
                                         expected=104.0, change=-0.04, p_value=0.5, status="ok"))
                session.add(MultivariateResult(
                    monitor=monitor, **common, **reference, rows=100.0, reconstruction_error=1.0,
                    sampling_error=0.01, threshold_lower=0.9, threshold_upper=1.1, gaussian_kl=0.02,
                    gaussian_kl_threshold=0.05, status="ok", contributions={}, fit_key="k", fingerprint="f"))
        session.commit()


def grafana_sql(sql: str, dialect: str, monitors=SHOWN, columns=SHOWN_COLUMNS) -> str:
    """``sql`` as Grafana's PostgreSQL data source sends it: $__timeFilter(c) as c BETWEEN two
    RFC 3339 instants, multi-value variables as their values, quoted and comma-separated.
    SQLite (which stores timestamps as text, 'YYYY-MM-DD HH:MM:SS.ffffff') gets its own literals."""
    fmt = "%Y-%m-%dT%H:%M:%SZ" if dialect == "postgresql" else "%Y-%m-%d %H:%M:%S.%f"
    start, end = (instant.strftime(fmt) for instant in RANGE)
    sql = re.sub(r"\$__timeFilter\(([\w.]+)\)", rf"\1 BETWEEN '{start}' AND '{end}'", sql)
    quoted = {"monitor": monitors, "column": columns}
    sql = re.sub(r"\$(\w+)", lambda m: ",".join(f"'{v}'" for v in quoted[m[1]]), sql)
    assert "$" not in sql, sql
    return sql


def fields_read(panel: dict) -> set[str]:
    """The fields a table panel's transformations and overrides name."""
    organize = panel["transformations"][0]["options"]
    return set(organize["indexByName"]) | set(organize["renameByName"])


def test_grafana_sql_replaces_macros_and_variables():
    sql = 'SELECT 1 FROM results WHERE $__timeFilter(r.window_end) AND monitor IN ($monitor) AND "column" IN ($column)'
    assert grafana_sql(sql, "postgresql") == (
        "SELECT 1 FROM results WHERE r.window_end BETWEEN '2026-03-02T00:00:00Z' AND '2026-03-03T00:00:00Z'"
        " AND monitor IN ('fraud') AND \"column\" IN ('amount','age','tenure')")


def test_every_query_runs_on_the_results_database(engine, stored):
    dialect = engine.dialect.name
    dashboard = load()
    declared = variables(dashboard)
    with engine.connect() as connection:
        monitors = connection.execute(sa.text(grafana_sql(declared["monitor"]["query"], dialect))).scalars().all()
        assert monitors == ["churn", "fraud"]
        columns = connection.execute(sa.text(grafana_sql(declared["column"]["query"], dialect))).scalars().all()
        assert columns == sorted(STATISTICS)

        for panel, target in targets(dashboard):
            where = f"panel {panel['id']} ({panel['title']}) {target['refId']}"
            result = connection.execute(sa.text(grafana_sql(target["rawSql"], dialect)))
            names, rows = list(result.keys()), result.mappings().all()
            assert rows, f"{where}: no rows"
            if target["format"] == "time_series":
                assert names == SERIES_COLUMNS, f"{where}: returns {names}"
                times = [row["time"] for row in rows]
                assert times == sorted(times), f"{where}: not ordered by time"
                if dialect == "postgresql":  # SQLite has no timestamp type: Grafana reads PostgreSQL
                    assert all(isinstance(t, datetime) and RANGE[0] <= t <= RANGE[1] for t in times), where
                for row in rows:
                    assert "churn" not in row["metric"] and "score" not in row["metric"], where
                    assert isinstance(row["value"], int | float), where
                # One point per window and series: no segment rows, no duplicates.
                points = [(row["time"], row["metric"]) for row in rows]
                assert len(points) == len(set(points)), f"{where}: several points per window"
            else:
                assert fields_read(panel) <= set(names), f"{where}: lacks {fields_read(panel) - set(names)}"
                assert {(row["monitor"], row["column"]) for row in rows} == {
                    ("fraud", column) for column in SHOWN_COLUMNS}
                assert len(rows) == len(SHOWN_COLUMNS), f"{where}: not one row per column"
                assert {str(row["window_end"])[:19].replace("T", " ") for row in rows} == {
                    RANGE[1].strftime("%Y-%m-%d %H:%M:%S")}, where

        # The series have the windows in range: the KL of one column is the day's 24 (or 25: both ends).
        (kl,) = [t for p, t in targets(dashboard) if p["title"].startswith("KL") and t["refId"] == "A"]
        rows = connection.execute(sa.text(grafana_sql(kl["rawSql"], dialect, columns=("age",)))).all()
        assert len(rows) == WINDOWS // 2 + 1
        # Thresholds only where the monitor alerts on that statistic: amount alerts on PSI.
        (psi_warning,) = [t for p, t in targets(dashboard) if p["title"].startswith("PSI") and t["refId"] == "B"]
        rows = connection.execute(sa.text(grafana_sql(psi_warning["rawSql"], dialect))).all()
        assert {row.metric for row in rows} == {"warning threshold fraud / amount"}
