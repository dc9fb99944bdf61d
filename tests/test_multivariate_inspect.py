"""`driftmon explain` and `driftmon report` show a monitor's multivariate drift, read from stored results.

The results are real: NannyML's sample (tests/multivariate_data.py) in a SQLite source, weekly
windows backfilled by the command line, the reference fixed on weeks 1-10. Weeks 16-19 come
out critical (their reconstruction error below its band), week 20 a warning (only its Gaussian
KL above its threshold). Monitor "plain" watches the same table without ``multivariate``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from driftmon.cli import main
from driftmon.config_file import load_config
from driftmon.inspect.multivariate_chart import multivariate_section
from driftmon.inspect.multivariate_explain import NOT_STORED, MultivariateSection, as_json, as_table
from driftmon.store.multivariate_queries import results_between
from driftmon.windows import TimeRange
from tests.cli_helpers import driftmon
from tests.multivariate_data import nannyml_sample
from tests.test_volume_report import points

START = datetime(2020, 1, 6)
BACKFILL = ("2020-03-16T00:00:00", "2020-05-25T00:00:00")  # weeks 11-20: ok, then critical, then warning
CRITICAL_WEEK, OK_WEEK, WARNING_WEEK = "2020-05-18T00:00:00", "2020-04-06T00:00:00", "2020-05-25T00:00:00"
CRITICAL, WARNING = "#c62828", "#ef8f00"


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> dict:
    """The config file and the stored multivariate rows by window end."""
    folder = tmp_path_factory.mktemp("multivariate")
    source = f"sqlite:///{folder / 'source.db'}"
    data = nannyml_sample()
    table = sa.Table("events", sa.MetaData(), sa.Column("ts", sa.DateTime), sa.Column("f1", sa.Double),
                     sa.Column("f2", sa.Double), sa.Column("f3", sa.BigInteger), sa.Column("f4", sa.String(10)))
    engine = sa.create_engine(source)
    table.create(engine)
    with engine.begin() as connection:
        connection.execute(table.insert(), [
            {"ts": START + timedelta(minutes=10 * i), "f1": float(data["f1"][i]), "f2": float(data["f2"][i]),
             "f3": int(data["f3"][i]), "f4": str(data["f4"][i])} for i in range(len(data["rid"]))])
    engine.dispose()
    common = {"source": {"kind": "events", "url": source, "table": "events", "timestamp_column": "ts"},
              "schedule": {"cron": "0 0 * * 1"}, "window": {"size": "7d"},
              "reference": {"kind": "fixed", "start": "2020-01-06T00:00:00Z", "end": "2020-03-16T00:00:00Z"}}
    features = [{"column": "f1"}, {"column": "f2"}, {"column": "f3", "type": "categorical"},
                {"column": "f4", "type": "categorical"}]
    results = f"sqlite:///{folder / 'results.db'}"
    config = {"database": {"url": results}, "compute": {"device": "cpu"}, "monitors": [
        {"name": "nml", **common, "features": features, "multivariate": {}},
        {"name": "plain", **common, "features": features[:2]}]}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = driftmon("backfill", "--config", str(path), "--start", BACKFILL[0], "--end", BACKFILL[1])
    assert run.returncode == 1, run.stderr[-3000:]  # critical multivariate drift in weeks 16-19
    engine = sa.create_engine(results)
    with engine.connect() as connection:
        rows = results_between(connection, "nml")
    engine.dispose()
    assert [r["status"] for r in rows] == ["ok"] * 5 + ["critical"] * 4 + ["warning"]
    return {"config": path, "folder": folder, "rows": {r["window_end"]: r for r in rows}}


def invoke(stored: dict, *args: str):
    result = CliRunner().invoke(main, [*args[:1], "--config", str(stored["config"]), *args[1:]])
    assert result.exit_code == 0, result.output
    return result.output


def row_at(stored: dict, at: str) -> dict:
    return stored["rows"][datetime.fromisoformat(at).replace(tzinfo=UTC)]


def g(value: float) -> str:
    return f"{value:.4g}"


# --- explain -----------------------------------------------------------------------------


def test_explain_lists_the_values_and_the_columns_that_moved(stored):
    output = invoke(stored, "explain", "--monitor", "nml", "--at", CRITICAL_WEEK)
    row = row_at(stored, CRITICAL_WEEK)
    univariate, _, section = output.partition("\nmultivariate (drift between columns): ")
    assert "f4 (feature):" in univariate  # the univariate explanation first, as it was
    lines = section.splitlines()
    assert lines[0] == "critical: the reconstruction error is below its band"
    assert lines[1] == (f"  reconstruction error {g(row['reconstruction_error'])}, sampling error "
                        f"{g(row['sampling_error'])}, band [{g(row['threshold_lower'])}, {g(row['threshold_upper'])}]")
    assert lines[2] == f"  Gaussian KL {g(row['gaussian_kl'])} (threshold {g(row['gaussian_kl_threshold'])})  rows 1008"
    residuals = row["contributions"]["residuals"]
    assert [c for c, *_ in residuals] == ["f4", "f3", "f1"]
    for column, window, reference in residuals:
        line = next(line for line in lines if line.startswith(f"    {column} ") and g(reference) in line)
        assert line.split()[1:4] == [g(window), g(reference), f"{window - reference:+.4g}"]
    kl = row["contributions"]["gaussian_kl"]
    assert [c for c, _ in kl] == ["f2", "f1", "f3"]
    table = lines[lines.index("  columns contributing most to the Gaussian KL (their terms add up to it over all "
                              "columns):") + 1:]
    assert table[0].split() == ["column", "kl", "term", "of", "kl"]
    for (column, term), line in zip(kl, table[1:], strict=True):
        assert line.split() == [column, g(term), f"{100 * term / row['gaussian_kl']:.1f}%"]


def test_explain_says_why_for_each_status(stored):
    ok = invoke(stored, "explain", "--monitor", "nml", "--at", OK_WEEK)
    assert ("multivariate (drift between columns): ok: the reconstruction error is within its band and the "
            "Gaussian KL under its threshold") in ok
    warning = invoke(stored, "explain", "--monitor", "nml")  # the newest window
    assert ("multivariate (drift between columns): warning: the Gaussian KL is above its threshold (the "
            "reconstruction error is within its band)") in warning
    row = row_at(stored, WARNING_WEEK)
    assert f"reconstruction error {g(row['reconstruction_error'])}," in warning


def test_explain_json_carries_the_stored_values(stored):
    document = json.loads(invoke(stored, "explain", "--monitor", "nml", "--at", CRITICAL_WEEK, "--output", "json"))
    row = row_at(stored, CRITICAL_WEEK)
    found = document["multivariate"]
    assert found["window_end"] == document["window_end"] == row["window_end"].isoformat()
    assert found["status"] == "critical" and found["rows"] == 1008
    for key in ("reconstruction_error", "sampling_error", "threshold_lower", "threshold_upper", "gaussian_kl",
                "gaussian_kl_threshold"):
        assert found[key] == row[key]
    assert [[r["column"], r["window"], r["reference"]] for r in found["residuals"]] == \
        row["contributions"]["residuals"]
    assert all(r["change"] == pytest.approx(r["window"] - r["reference"]) for r in found["residuals"])
    assert [[c["column"], c["contribution"]] for c in found["gaussian_kl_columns"]] == \
        row["contributions"]["gaussian_kl"]
    assert found["gaussian_kl_columns"][0]["share_of_kl"] == pytest.approx(
        row["contributions"]["gaussian_kl"][0][1] / row["gaussian_kl"])
    assert [c["column"] for c in document["columns"]] == ["f1", "f2", "f3", "f4"]  # explain's shape, as it was


def test_explain_keeps_the_section_with_a_column_filter(stored):
    output = invoke(stored, "explain", "--monitor", "nml", "--column", "f1")
    assert "f2 (feature)" not in output and "\nmultivariate (drift between columns): warning" in output


def test_a_monitor_without_multivariate_has_no_section(stored):
    output = invoke(stored, "explain", "--monitor", "plain")
    assert "f1 (feature)" in output and "multivariate" not in output.lower()
    document = json.loads(invoke(stored, "explain", "--monitor", "plain", "--output", "json"))
    assert "multivariate" not in document


def test_configured_without_a_stored_result_says_so():
    assert as_table("table", MultivariateSection(None)) == f"table\n\nmultivariate: {NOT_STORED}"
    assert json.loads(as_json({"monitor": "m"}, MultivariateSection(None))) == {"monitor": "m", "multivariate": None}
    assert as_table("table", None) == "table" and json.loads(as_json({"monitor": "m"}, None)) == {"monitor": "m"}


# --- report ------------------------------------------------------------------------------


def report(stored: dict, monitor: str, *args: str) -> str:
    out = stored["folder"] / f"{monitor}.html"
    invoke(stored, "report", "--monitor", monitor, "--out", str(out), *args)
    return out.read_text(encoding="utf-8")


def multivariate_part(page: str) -> str:
    start = page.index("<h2 id='multivariate'>")
    return page[start:page.index("</figure>", start) + len("</figure>")]


def test_the_report_charts_the_reconstruction_error_and_the_kl(stored):
    page = report(stored, "nml", "--start", BACKFILL[0])
    part = multivariate_part(page)
    assert page.index("<h2 id='volume'>") < page.index("<h2 id='multivariate'>")  # after Volume, as placed
    assert "<figure class='multivariate' data-windows='10' role='img'" in part
    assert "10 windows: 1 warning (Gaussian KL above its threshold), 4 critical (reconstruction error outside" in part
    row = row_at(stored, WARNING_WEEK)
    assert (f"reconstruction error {g(row['reconstruction_error'])} ± {g(row['sampling_error'])}, band "
            f"[{g(row['threshold_lower'])}, {g(row['threshold_upper'])}]") in part
    moved = ", ".join(c for c, *_ in row["contributions"]["residuals"])
    carried = ", ".join(c for c, _ in row["contributions"]["gaussian_kl"])
    assert f"residuals moved most in {moved}; most of the KL from {carried}" in part
    for text in ("reconstruction error per window", "±3 sampling errors", "band (lower, upper)",
                 "outside its band", "Gaussian KL per window (nats)", "above its threshold"):
        assert text in part
    assert points(part, CRITICAL) == 4  # weeks 16-19: the error below its band
    assert points(part, WARNING) == 5  # weeks 16-20: the KL above its threshold
    assert "<svg" in part and "<script" not in part


def test_the_default_range_shows_the_newest_window(stored):
    part = multivariate_part(report(stored, "nml"))
    assert "data-windows='1'" in part and "1 window: 1 warning" in part


def test_a_report_without_multivariate_has_no_section(stored):
    page = report(stored, "plain", "--start", BACKFILL[0])
    assert "<h2 id='volume'>" in page and "id='multivariate'" not in page and "Gaussian KL" not in page


def test_configured_without_stored_results_is_one_line(stored):
    monitor = load_config(str(stored["config"])).resolved_monitors()[0]
    span = TimeRange(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 8, tzinfo=UTC))
    section = multivariate_section(monitor, [], span)
    assert "No multivariate results stored for this range." in section and "<figure" not in section
