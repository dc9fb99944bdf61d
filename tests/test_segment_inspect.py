"""`driftmon explain` and the report, per segment: read back from the stored rows, on SQLite and PostgreSQL.

The data: a ``region`` column whose small segment D (6 % of the rows) drifts by
one standard deviation in ``amount`` while every other segment stays put; E (4 %)
is outside the largest ``max: 4`` and pooled as ``region=__other__`` (with F, a
value seen only in the current window); NULL regions (1 %) are
``region=__missing__``, too few for ``min_samples``. Every number the commands
show is checked against the rows as stored (read with plain SQL) and the traffic
shares against pandas on the source rows.
"""

from __future__ import annotations

import html
import json
import math
import re
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from driftmon.cli import main
from driftmon.config_file import parse_config
from driftmon.inspect import segment_explain, segment_report
from driftmon.inspect.explain import explain_window
from driftmon.inspect.html_parts import STATUS_COLOURS
from driftmon.inspect.report import ReportPages, build_report
from driftmon.textsafe import is_visible, visible
from tests.sourcedata import START, create_and_fill, events_table
from tests.test_explain import AGE, AMOUNT, COUNTRY, WINDOW_END, independent_terms, settings, store, stored_rows
from tests.test_report import chromium  # noqa: F401  a fixture

REFERENCE_END = START + timedelta(days=7)
WINDOW_AT = REFERENCE_END + timedelta(hours=1)
MEMBERS = ["A", "B", "C", "D"]  # the largest four in the reference, by construction
MIN_SAMPLES = 100


def source_rows() -> pd.DataFrame:
    """A week of reference rows, then one hour in which segment D's amount moves by +1 sd."""
    rng = np.random.default_rng(23)

    def part(n: int, start, span: timedelta, regions: list, shares: list[float], drift: bool) -> pd.DataFrame:
        region = rng.choice(np.array(regions, dtype=object), size=n, p=shares)
        shift = np.where((region == "D") & drift, 1.0, 0.0)
        return pd.DataFrame({
            "ts": [start + timedelta(seconds=float(s)) for s in rng.uniform(0, span.total_seconds(), n)],
            "model_version": "v3", "amount": rng.normal(shift, 1.0), "score": rng.random(n),
            "country": rng.choice(["x", "y"], size=n), "region": region,
        })

    regions = ["A", "B", "C", "D", "E", None]
    reference = part(8000, START, timedelta(days=7), regions, [.5, .24, .15, .06, .04, .01], drift=False)
    current = part(8000, REFERENCE_END, timedelta(hours=1), [*regions, "F"], [.5, .24, .15, .06, .03, .01, .01],
                   drift=True)
    return pd.concat([reference, current], ignore_index=True)


def raw_config(url: str) -> dict:
    """Two monitors of the same table: "shop" segmented by region, "plain" not."""
    monitor = {"name": "shop", "source": {"kind": "events", "table": "inference_log", "timestamp_column": "ts"},
               "features": [{"column": "amount", "type": "numeric"},
                            {"column": "country", "type": "categorical"}]}
    segmented = {**monitor, "segments": {"by": ["region"], "max": len(MEMBERS)}}
    return {"database": {"url": url},
            "defaults": {"schedule": {"every": "1h"}, "min_samples": MIN_SAMPLES,
                         "reference": {"kind": "fixed", "start": START.isoformat(), "end": REFERENCE_END.isoformat()}},
            "monitors": [segmented, {**monitor, "name": "plain"}]}


def write_config(path, raw: dict):
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def segmented(tmp_path, db_url, engine):
    """The source table in the test database, one window computed by `run-once`; the config's path and rows."""
    frame = source_rows()
    table = events_table(region=sa.String(5))
    create_and_fill(engine, table, frame.astype(object).where(frame.notna(), None).to_dict("records"))
    config = write_config(tmp_path / "config.yaml", raw_config(db_url))
    run = CliRunner().invoke(main, ["run-once", "--config", str(config), "--at", WINDOW_AT.isoformat()])
    assert run.exit_code in (0, 1), run.output  # 1: the segment's drift is critical
    return config, frame


def explain(config, *args: str, monitor: str = "shop"):
    return CliRunner().invoke(main, ["explain", "--config", str(config), "--monitor", monitor, *args])


def stored(engine, segment_key: str | None = None) -> dict[tuple[str, str], dict]:
    """The stored rows of the window, read with plain SQL (not through the Repository), by (segment_key, column)."""
    query = sa.text("SELECT * FROM results WHERE monitor = 'shop'")
    with engine.connect() as connection:
        rows = [dict(r) for r in connection.execute(query).mappings()]
    for row in rows:  # JSON columns: text on SQLite, decoded by psycopg on PostgreSQL
        for name in ("segment", "labels", "reference_counts", "current_counts"):
            row[name] = json.loads(row[name]) if isinstance(row[name], str) else row[name]
    return {(r["segment_key"], r["column"]): r for r in rows if segment_key in (None, r["segment_key"])}


def segment_of(region) -> str:
    if region is None or (isinstance(region, float) and math.isnan(region)):
        return "region=__missing__"
    return f"region={region}" if region in MEMBERS else "region=__other__"


def pandas_shares(frame: pd.DataFrame) -> tuple[dict[str, float], dict[str, float]]:
    """Each segment's share of the reference rows and of the current window's rows, by pandas."""
    keys = frame["region"].map(segment_of)
    in_reference = (frame["ts"] >= START) & (frame["ts"] < REFERENCE_END)
    in_window = (frame["ts"] >= REFERENCE_END) & (frame["ts"] < WINDOW_AT)
    return (keys[in_reference].value_counts(normalize=True).to_dict(),
            keys[in_window].value_counts(normalize=True).to_dict())


# --- which segments drove it ---------------------------------------------------------------


def test_each_column_ranks_its_segments_with_their_traffic_shares(segmented, engine):
    config, frame = segmented
    result = explain(config, "--output", "json", "--top-segments", "10")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["segment"] is None
    rows = stored(engine)
    reference_share, current_share = pandas_shares(frame)
    assert set(current_share) == {*(f"region={m}" for m in MEMBERS), "region=__other__", "region=__missing__"}
    for column in document["columns"]:
        if column["role"] == "segment":  # the mix: no segments of its own
            assert column["segments"] is None
            continue
        found = column["segments"]
        assert found["ranked_by"] == column["statistic"] == "kl" and found["total"] == len(current_share)
        keys = [item["segment_key"] for item in found["top"]]
        mine = {k: rows[k, column["column"]] for k in current_share}
        expected = sorted(mine, key=lambda k: (mine[k]["status"] == "insufficient_data", -(mine[k]["kl"] or 0)))
        assert keys == expected
        for item in found["top"]:
            row = rows[item["segment_key"], column["column"]]
            assert item["segment"] == row["segment"] == {"region": item["segment_key"].removeprefix("region=")}
            for name in ("status", "value", "p_value", "q_value", "samples_current", "samples_reference"):
                assert item[name] == row["kl" if name == "value" else name], name
            assert item["current_share"] == pytest.approx(current_share[item["segment_key"]], rel=1e-12)
            assert item["reference_share"] == pytest.approx(reference_share[item["segment_key"]], rel=1e-12)
    amount = document["columns"][0]
    assert amount["column"] == "amount" and amount["status"] == "ok"  # the whole does not see it
    top = amount["segments"]["top"]
    assert (top[0]["segment_key"], top[0]["status"]) == ("region=D", "critical")
    assert (top[-1]["segment_key"], top[-1]["status"]) == ("region=__missing__", "insufficient_data")


def test_the_table_is_bounded_and_says_how_to_drill_down(segmented, engine):
    config, _ = segmented
    result = explain(config, "--column", "amount", "--top-segments", "2", "--top", "1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1] == ("segments: below each column, those that moved most; explain one with "
                        "`driftmon explain --monitor shop --segment region=D`")
    start = lines.index("  which segments drove it (6 segment(s), by kl, insufficient_data last):")
    assert lines[start + 1].split() == ["segment", "status", "kl", "q-value", "cur", "share", "ref", "share",
                                        "cur", "rows", "ref", "rows"]
    assert lines[start + 2].split()[:2] == ["region=D", "critical"]
    assert lines[start + 4] == "  (4 more segment(s); --top-segments shows more)"
    # The hint names the most drifted segment of the columns shown: of country alone, not region=D's amount.
    rows = stored(engine)
    country = max((row for (key, column), row in rows.items() if key and column == "country"
                   and row["status"] == "ok"), key=lambda row: row["kl"])
    assert all(row["status"] in ("ok", "insufficient_data") for (_, column), row in rows.items() if column == "country")
    only_country = explain(config, "--column", "country").output.splitlines()
    assert only_country[1].endswith(f"--segment {country['segment_key']}`") and country["segment_key"] != "region=D"


# --- one segment ------------------------------------------------------------------------------


def test_a_segment_is_explained_from_its_stored_rows(segmented, engine):
    config, frame = segmented
    result = explain(config, "--segment", "region=D", "--output", "json", "--top", "50")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["segment"] == {"region": "D"} and document["window_end"] == WINDOW_AT.isoformat()
    rows = stored(engine, "region=D")
    assert [c["column"] for c in document["columns"]] == ["amount", "country"]
    for column in document["columns"]:
        row = rows["region=D", column["column"]]
        for name in ("status", "kl", "psi", "js", "p_value", "q_value", "samples_current", "samples_reference"):
            assert column[name] == row[name], name
        by_label = {b["label"]: b for b in column["top_bins"]}
        assert [by_label[label]["current_count"] for label in row["labels"]] == row["current_counts"]
        assert [by_label[label]["reference_count"] for label in row["labels"]] == row["reference_counts"]
        terms = independent_terms(row["reference_counts"], row["current_counts"])
        np.testing.assert_allclose([by_label[label]["contribution"] for label in row["labels"]], terms["kl"],
                                   rtol=1e-9, atol=1e-15)
        assert math.fsum(b["contribution"] for b in column["top_bins"]) == pytest.approx(row["kl"], rel=1e-9)
    # The segment's counts, independently: pandas on the source rows.
    window = frame[(frame["ts"] >= REFERENCE_END) & (frame["ts"] < WINDOW_AT) & (frame["region"] == "D")]
    country = document["columns"][1]
    assert country["samples_current"] == len(window)
    assert {b["label"]: b["current_count"] for b in country["top_bins"]} == window["country"].value_counts().to_dict()
    amount = document["columns"][0]
    assert amount["status"] == "critical" and amount["top_bins"][0]["label"].endswith("+inf)")


def test_a_pooled_segment_and_the_table(segmented, engine):
    config, _ = segmented
    result = explain(config, "--segment", "region=__other__", "--column", "country")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("monitor shop, segment region=__other__: window [2024-03-08T00:00:00+00:00, ")
    row = stored(engine, "region=__other__")["region=__other__", "country"]
    assert lines[2].startswith(f"country (feature): {row['status']}  kl {row['kl']:.4f} ")
    assert f"samples {row['samples_reference']:.0f} ref / {row['samples_current']:.0f} cur" in lines[2]


def test_segment_usage_errors(segmented):
    config, _ = segmented
    unknown = explain(config, "--segment", "region=Z")
    assert unknown.exit_code == 2
    message = " ".join(unknown.output.split())
    assert "no segment 'region=Z' in the window ending 2024-03-08T01:00:00+00:00 of monitor 'shop'" in message
    assert ("(stored: region=A, region=B, region=C, region=D, region=__other__, region=__missing__); "
            "a value outside the largest 4 is pooled in region=__other__") in message
    wrong_column = explain(config, "--segment", "country=DE")
    assert wrong_column.exit_code == 2 and "names country; the monitor segments by region" in wrong_column.output
    no_value = explain(config, "--segment", "D")
    assert no_value.exit_code == 2 and "write column=value" in no_value.output
    unsegmented = explain(config, "--segment", "region=D", monitor="plain")
    assert unsegmented.exit_code == 2 and "monitor 'plain' is not segmented" in unsegmented.output
    too_early = explain(config, "--segment", "region=D", "--at", "2024-03-01")
    assert too_early.exit_code == 3 and "no stored results at or before" in too_early.output
    unknown_column = explain(config, "--segment", "region=D", "--column", "nope")
    assert unknown_column.exit_code == 2 and "no column named nope" in unknown_column.output


# --- the report --------------------------------------------------------------------------------


def cells(row: str) -> list[str]:
    return re.findall(r"<td[^>]*>(.*?)</td>", row)


def table_of(page: str, css_class: str, after: str = "") -> list[str]:
    start = page.index(f"<table class='{css_class}'>", page.index(after) if after else 0)
    return re.findall(r"<tr.*?</tr>", page[start:page.index("</table>", start)])


def test_the_report_has_a_heat_map_and_a_drill_down_per_segment(segmented, engine, db_url):
    config, frame = segmented
    monitor = parse_config(raw_config(db_url)).resolved_monitors()[0]
    with engine.connect() as connection:
        page = build_report(connection, monitor)
    rows = stored(engine)
    reference_share, current_share = pandas_shares(frame)
    heat = table_of(page, "heatmap")
    assert cells(heat[1])[0] == "whole population"
    assert [cells(r)[1] for r in heat[1:2]] == ["100 %"]
    listed = [re.sub(r"<.*?>", "", cells(r)[0]) for r in heat[2:]]
    assert listed[0] == "region=D" and set(listed) == set(current_share)  # the drifted segment first
    for index, row in enumerate(heat[2:]):
        key = listed[index]
        assert f"href='#segment-{index}'" in row
        assert cells(row)[1] == (f"{100 * current_share[key]:.1f} % / {100 * reference_share[key]:.1f} %")
        for position, column in enumerate(("amount", "country")):
            stored_row = rows[key, column]
            cell = re.findall(r"<td class='s-[^>]*>.*?</td>", row)[position]
            assert f"<td class='s-{stored_row['status']}' title='{stored_row['status']}, q " in cell
            assert f">{'–' if stored_row['kl'] is None else format(stored_row['kl'], '.4f')}<" in cell
    # The drill-down of D: its columns as stored.
    section = page[page.index("<h3 id='segment-0'>"):]
    assert section.startswith("<h3 id='segment-0'>region=D <span class='status' style='background:#c62828'>")
    assert f".s-critical{{background:{STATUS_COLOURS['critical']}}}" in page
    drill = table_of(page, "segment", "<h3 id='segment-0'>")
    for row, column in zip(drill[1:], ("amount", "country"), strict=True):
        stored_row = rows["region=D", column]
        values = cells(row)
        assert values[0] == column and values[1] == f"<span class='status s-{stored_row['status']}'>" \
            f"{stored_row['status']}</span>"
        assert values[3] == f"{stored_row['kl']:.4f}" and values[5] == f"{stored_row['q_value']:.3g}"
        assert values[4] == f"{stored_row['p_value']:.3g}"
        assert values[6] == f"{stored_row['samples_reference']:,.0f} / {stored_row['samples_current']:,.0f}"
    assert "driftmon explain --monitor shop --segment region=D" in section
    served = ReportPages([monitor], engine).page("shop")  # GET /report/shop: the same page
    assert table_of(served, "heatmap") == heat and "<h3 id='segment-0'>region=D " in served


def test_an_unsegmented_report_and_explanation_have_no_segment_parts(segmented, engine, db_url):
    config, _ = segmented
    plain = parse_config(raw_config(db_url)).resolved_monitors()[1]
    with engine.connect() as connection:
        page = build_report(connection, plain)
    assert "heatmap" not in page and "segment" not in page and segment_report.CSS not in page
    document = json.loads(explain(config, "--output", "json", monitor="plain").output)
    assert "segment" not in document and all("segments" not in c for c in document["columns"])
    assert "segments" not in explain(config, monitor="plain").output


# --- stored rows of every kind, without a source -------------------------------------------------


def segmented_settings():
    raw = {"database": {"url": "sqlite:///unused.db"},
           "defaults": {"thresholds": {"warning": 0.1, "critical": 0.25}},
           "monitors": [{"name": "shop", "source": {"kind": "events", "table": "orders", "timestamp_column": "ts"},
                         "features": [{"column": "amount"}, {"column": "country", "type": "categorical"},
                                      {"column": "age"}],
                         "segments": {"by": ["region"]}}]}
    return parse_config(raw).resolved_monitors()[0]


def segment_rows(region: str, columns: dict) -> list[dict]:
    rows = stored_rows(settings(), WINDOW_END, columns)
    return [{**row, "segment": {"region": region}, "segment_key": f"region={region}"} for row in rows]


WHOLE = {"amount": AMOUNT, "country": COUNTRY, "age": AGE}
CALM = {name: (labels, ref, ref) for name, (labels, ref, _) in WHOLE.items()}


def whole_rows() -> list[dict]:
    return [{**row, "segment": None, "segment_key": ""} for row in stored_rows(settings(), WINDOW_END, WHOLE)]


@pytest.mark.parametrize("region", ["\x1b[31mred\x1b[0m", "\u202egnp.exe", "<script>alert(1)</script>", "a\r\nb"])
def test_segment_values_from_the_data_are_shown_escaped(region):
    rows = whole_rows() + segment_rows(region, WHOLE) + segment_rows("calm", CALM)
    segments = segment_explain.rank_segments(rows)
    explanation = explain_window(segmented_settings(), [r for r in rows if not r["segment_key"]])
    text = segment_explain.as_table(explanation, segments)
    assert all(is_visible(line) for line in text.split("\n")) and visible(f"region={region}") in text
    view = segment_report.segment_view(segmented_settings(), explanation, [r for r in rows if r["segment_key"]])
    page = segment_report.heat_map(view, explanation) + segment_report.drill_downs(view)
    assert all(is_visible(line) for line in page.split("\n")) and "<script>" not in page
    assert html.escape(visible(f"region={region}"), quote=True) in page


def test_insufficient_segments_rank_last_and_ties_keep_the_stored_order():
    insufficient = [{**row, "status": "insufficient_data", "kl": 9.0} for row in segment_rows("tiny", WHOLE)]
    rows = whole_rows() + segment_rows("b", CALM) + insufficient + segment_rows("a", CALM) + segment_rows("x", WHOLE)
    ranked = segment_explain.rank_segments(rows)["amount"].ranked
    assert [item.key for item in ranked] == ["region=x", "region=b", "region=a", "region=tiny"]
    assert ranked[0].current_share == sum(AMOUNT[2]) / sum(AMOUNT[2])  # the same counts as the whole


def test_a_window_without_segment_rows_says_so(tmp_path, db_url, engine):
    store(engine, [{k: v for k, v in row.items() if k not in ("segment", "segment_key")} for row in whole_rows()])
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": db_url}, "monitors": [
        {"name": "shop", "source": {"kind": "events", "table": "orders", "timestamp_column": "ts"},
         "segments": {"by": ["region"]},
         "features": [{"column": "amount"}, {"column": "country", "type": "categorical"}, {"column": "age"}]}]}))
    table = explain(config)
    assert table.exit_code == 0, table.output
    assert table.output.splitlines()[1] == segment_explain.NO_SEGMENTS
    missing = explain(config, "--segment", "region=DE")
    assert missing.exit_code == 2 and "it has no segments stored" in missing.output


def test_a_segment_of_several_columns_is_named_in_any_order(tmp_path, db_url, engine):
    rows = [{**row, "segment": {"region": "D", "app": "web"}, "segment_key": "region=D,app=web"}
            for row in stored_rows(settings(), WINDOW_END, WHOLE)]
    store(engine, whole_rows() + rows)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": db_url}, "monitors": [
        {"name": "shop", "source": {"kind": "events", "table": "orders", "timestamp_column": "ts"},
         "segments": {"by": ["region", "app"]},
         "features": [{"column": "amount"}, {"column": "country", "type": "categorical"}, {"column": "age"}]}]}))
    result = explain(config, "--segment", "app=web,region=D", "--output", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["segment"] == {"region": "D", "app": "web"} and list(document["segment"]) == ["region", "app"]
    assert [c["kl"] for c in document["columns"]] == [r["kl"] for r in rows]
    half = explain(config, "--segment", "region=D")
    assert half.exit_code == 2 and "names region; the monitor segments by region, app" in half.output


def test_the_heat_map_and_drill_downs_are_bounded():
    rows = whole_rows()
    for k in range(5):
        rows += segment_rows(f"s{k}", WHOLE if k == 3 else CALM)
    explanation = explain_window(segmented_settings(), [r for r in rows if not r["segment_key"]])
    view = segment_report.segment_view(segmented_settings(), explanation, [r for r in rows if r["segment_key"]])
    assert [s.key for s in view.sections] == ["region=s3", "region=s0", "region=s1", "region=s2", "region=s4"]
    page = segment_report.heat_map(view, explanation, segments=2, columns=1)
    heat = table_of(page, "heatmap")
    assert len(heat) == 4 and len(cells(heat[0])) == 0 and heat[0].count("<th>") == 3  # segment, traffic, 1 column
    assert "Showing the 2 most drifted; the other 3 are left out" in page
    assert "Showing the 1 of 3 columns whose segments drifted most." in page
    drills = segment_report.drill_downs(view, segments=2, columns=1)
    assert drills.count("<h3 id='segment-") == 2 and "showing the 1 most drifted of this segment's 3 columns" in drills


HEAT_MAP = """Array.from(document.querySelectorAll('table.heatmap td[class^=s-]')).map(td =>
  [td.className, getComputedStyle(td).backgroundColor])"""
LINKS = """Array.from(document.querySelectorAll('table.heatmap a')).map(a =>
  [a.getAttribute('href'), document.getElementById(a.getAttribute('href').slice(1)) !== null])"""


def test_the_segmented_report_loads_in_chromium(chromium, segmented, engine, db_url, tmp_path):  # noqa: F811
    config, _ = segmented
    out = tmp_path / "report.html"
    written = CliRunner().invoke(main, ["report", "--config", str(config), "--monitor", "shop", "--out", str(out)])
    assert written.exit_code == 0, written.output
    visit = chromium.load(out.as_uri())
    assert visit["errors"] == [] and visit["requests"] == [out.as_uri()]
    links = chromium.evaluate(LINKS)
    assert [href for href, _ in links] == [f"#segment-{i}" for i in range(6)] and all(found for _, found in links)
    colours = {status: "rgb({}, {}, {})".format(*(int(colour[i:i + 2], 16) for i in (1, 3, 5)))
               for status, colour in STATUS_COLOURS.items()}
    cells = chromium.evaluate(HEAT_MAP)
    assert len(cells) == 7 * 2 and all(colour == colours[name.removeprefix("s-")] for name, colour in cells)
    chromium.screenshot(tmp_path / "segments.png")
    assert (tmp_path / "segments.png").stat().st_size > 10_000
