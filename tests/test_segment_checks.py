"""check-config --connect for segmented monitors: the segments the reference would make, against pandas."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from driftmon.commands.setup_checks import connect_checks
from driftmon.config_file import parse_config
from tests.sourcedata import START, create_and_fill, events_table, random_events

NOW = START + timedelta(days=8)  # the latest window is [NOW - 1h, NOW); the reference [START, START + 7d)
REFERENCE = "[2024-03-01T00:00:00+00:00, 2024-03-08T00:00:00+00:00)"
REGIONS = ["north", "south", "east", "west", "centre", "islands", "overseas"]
SHARES = [.4, .25, .15, .1, .05, .03, .02]


def config_for(url, segments, top=None, **monitor):
    raw = {"database": {"url": url}, **(top or {}),
           "monitors": [{"name": "m", "source": {"kind": "events", "table": "inference_log", "timestamp_column": "ts",
                                                 **monitor.pop("source", {})},
                         "features": [{"column": "amount"}], **monitor}]}
    if segments is not None:
        raw["monitors"][0]["segments"] = segments
    return parse_config(raw, {})


def segmented_rows(seed: int = 0) -> list[dict]:
    """Reference rows with a region (2 % NULL), rows that runs do not read (another model version, after
    the reference) whose regions must not be counted, and a latest window with a region of its own."""
    rng = np.random.default_rng(seed)
    reference = random_events(rng, 3000, START, timedelta(days=7))
    for row in reference:
        row["region"] = None if rng.random() < .02 else str(rng.choice(REGIONS, p=SHARES))
    filtered_out = [{**row, "region": "elsewhere"} for row in random_events(rng, 40, START, timedelta(days=7),
                                                                            version="v2")]
    window = [{**row, "region": "new_in_window"} for row in random_events(rng, 150, NOW - timedelta(hours=1),
                                                                          timedelta(minutes=59))]
    return reference + filtered_out + window


def fill(engine, rows) -> pd.DataFrame:
    create_and_fill(engine, events_table(region=sa.String(20)), rows)
    return pd.DataFrame(rows)


def reference_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows a run's reference reads, selected independently of driftmon's SQL."""
    times = pd.to_datetime(frame["ts"], utc=True)
    inside = (times >= pd.Timestamp(START)) & (times < pd.Timestamp(START + timedelta(days=7)))
    return frame[inside & (frame["model_version"] == "v3")]


def expected_note(reference: pd.DataFrame, by: list[str], largest: int) -> str:
    """The note check-config should print, every figure counted by pandas."""
    missing = int(reference[by].isna().any(axis=1).sum())
    sizes = reference.dropna(subset=by).groupby(by).size().sort_values(ascending=False)
    own = min(largest, len(sizes))
    pooled, pooled_rows = len(sizes) - own, int(sizes.iloc[own:].sum())
    total = len(reference)
    other = f"{pooled:,} pooled into __other__"
    if pooled:
        other += f" ({pooled_rows:,} row(s), {100 * pooled_rows / total:.1f} % of the reference)"
    what, named, nulls = (("value(s)", by[0], f"NULL {by[0]}") if len(by) == 1 else
                          ("combination(s)", f"({', '.join(by)})", "a NULL in " + " or ".join(by)))
    return (f"m: segments by {named}: {len(sizes):,} distinct {what} in the reference, {own:,} segment(s) of their "
            f"own (segments.max {largest}), {other}; {missing:,} row(s) with {nulls} in __missing__ "
            f"({100 * missing / total:.1f} %)")


def test_the_segments_of_the_reference_are_counted_as_pandas_counts_them(engine, db_url):
    frame = fill(engine, segmented_rows())
    reference = reference_frame(frame)
    report = connect_checks(config_for(db_url, {"by": ["region"], "max": 4}, source={"where": {"model_version": "v3"}}),
                            NOW)
    assert report.problems == [] and report.warnings == []
    note = expected_note(reference, ["region"], 4)
    assert report.notes[-1] == note
    # The figures themselves, so that a wrong pandas expectation cannot pass unnoticed.
    assert "7 distinct value(s) in the reference, 4 segment(s) of their own (segments.max 4), 3 pooled" in note
    pooled_rows = int(reference["region"].isin(["centre", "islands", "overseas"]).sum())
    assert f"3 pooled into __other__ ({pooled_rows:,} row(s)," in note
    assert f"; {int(reference['region'].isna().sum()):,} row(s) with NULL region" in note


def test_nothing_is_pooled_when_max_covers_every_value(engine, db_url):
    frame = fill(engine, segmented_rows(1))
    notes = connect_checks(config_for(db_url, {"by": ["region"]}, source={"where": {"model_version": "v3"}}),
                           NOW).notes
    assert notes[-1] == expected_note(reference_frame(frame), ["region"], 50)
    assert ", 7 segment(s) of their own (segments.max 50), 0 pooled into __other__; " in notes[-1]


def test_combinations_of_two_columns(engine, db_url):
    """NULL in either column is __missing__ (random_events makes every 53rd country NULL)."""
    frame = fill(engine, segmented_rows(2))
    reference = reference_frame(frame)
    report = connect_checks(config_for(db_url, {"by": ["region", "country"], "max": 20},
                                       source={"where": {"model_version": "v3"}}), NOW)
    assert report.problems == []
    assert report.notes[-1] == expected_note(reference, ["region", "country"], 20)
    assert reference.dropna(subset=["region", "country"]).groupby(["region", "country"]).ngroups > 20  # some pooled


def test_a_missing_segment_column_is_a_problem_at_its_key(engine, db_url):
    fill(engine, segmented_rows())
    problems = connect_checks(config_for(db_url, {"by": ["regoin"]}), NOW).problems
    assert problems == ["monitors[0].segments.by[0]: table 'inference_log' has no column 'regoin'; "
                        "did you mean 'region'?"]
    inherited = connect_checks(config_for(db_url, None, top={"defaults": {"segments": {"by": ["region", "app"]}}}),
                               NOW).problems
    assert len(inherited) == 1 and inherited[0].startswith(
        "defaults.segments.by[1] (inherited by monitors[0]): table 'inference_log' has no column 'app' (its columns: ")


def test_a_segment_column_that_is_always_null_is_a_warning(engine, db_url):
    frame = fill(engine, [{**row, "region": None} for row in segmented_rows()])
    report = connect_checks(config_for(db_url, {"by": ["region"]}), NOW)
    assert report.problems == []
    assert report.warnings == [
        f"monitors[0].segments.by[0]: column 'region' is NULL in every row of the reference range {REFERENCE}: "
        "every row would be in the __missing__ segment, so no segment of its own would be compared"]
    rows = len(reference_frame(frame)) + 40  # no source.where here: the v2 rows count too
    assert report.notes[-1] == (f"m: segments by region: 0 distinct value(s) in the reference, 0 segment(s) of "
                                f"their own (segments.max 50), 0 pooled into __other__; {rows:,} row(s) with NULL "
                                "region in __missing__ (100.0 %)")


def test_an_empty_reference_is_one_problem_not_a_segment_warning(engine, db_url):
    fill(engine, [row for row in segmented_rows() if row["ts"] >= START + timedelta(days=7)])
    report = connect_checks(config_for(db_url, {"by": ["region"]}), NOW)
    assert len(report.problems) == 1 and report.problems[0].startswith("monitors[0].reference: no rows")
    assert not [w for w in report.warnings if "segments" in w]


def test_unsegmented_monitors_have_no_segment_note(engine, db_url):
    fill(engine, segmented_rows())
    assert not [n for n in connect_checks(config_for(db_url, None), NOW).notes if "segments" in n]


@pytest.mark.parametrize("by", [["region"], ["region", "country"]])
def test_check_config_connect_prints_the_segments(tmp_path, engine, db_url, by):
    """The real command, on the results database's engine (SQLite and PostgreSQL)."""
    import yaml

    from tests.cli_helpers import driftmon

    frame = fill(engine, segmented_rows(3))
    reference = {"kind": "fixed", "start": START.isoformat(), "end": (START + timedelta(days=7)).isoformat()}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "database": {"url": db_url}, "compute": {"device": "cpu"},
        "defaults": {"reference": reference, "segments": {"by": by, "max": 5}},
        "monitors": [{"name": "m", "features": [{"column": "amount"}],
                      "source": {"kind": "events", "table": "inference_log", "timestamp_column": "ts",
                                 "where": {"model_version": "v3"}}}]}))
    result = driftmon("check-config", "--connect", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"    {expected_note(reference_frame(frame), by, 5)}\n" in result.stdout
