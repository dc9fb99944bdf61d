"""run-once's ``__volume__`` object and volume line, and its exit code, from outcomes built by hand."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from driftmon.commands.outputs import as_json, as_table
from driftmon.commands.runs import _exit_code
from driftmon.config import VolumeCheck as VolumeSettings
from driftmon.outcomes import RunOutcome
from driftmon.stats.volume import VolumeCheck
from driftmon.textsafe import is_visible
from tests.cli_helpers import driftmon
from tests.test_outputs import OUTCOMES, REFERENCE, WINDOW, column
from tests.test_pipeline import AT, FEATURES, HOUR
from tests.test_run_commands import config_file  # noqa: F401  a fixture

NEWEST = datetime(2024, 3, 8, 0, 55, tzinfo=UTC)
VOLUME_KEYS = ["monitor", "column", "role", "segment", "window_start", "window_end", "status", "rows", "expected",
               "reference_rows", "change", "p_value", "threshold_warning", "threshold_critical", "newest_row_at"]
DROPPED = VolumeCheck(rows=240.0, reference_rows=67200.0, share=1 / 168, expected=400.0, change=-0.4,
                      p_value=1.5e-16, status="critical")
EMPTY_REFERENCE = VolumeCheck(rows=12.0, reference_rows=0.0, share=1 / 168, expected=None, change=None,
                              p_value=None, status="insufficient_data")


class Monitor:
    """What as_json reads of a monitor's settings: its name and its volume check."""

    def __init__(self, name: str, volume: VolumeSettings | None):
        self.name, self.volume = name, volume


def calm(volume: VolumeCheck | None = DROPPED, newest_row_at: datetime | None = NEWEST) -> RunOutcome:
    """A run whose one column is calm, with this volume check."""
    return RunOutcome("fraud", WINDOW, "ok", [column("amount", 0.5, 0.5, "ok")], REFERENCE, volume=volume,
                      newest_row_at=newest_row_at)


def test_a_volume_object_follows_the_monitors_columns():
    outcomes = [calm(), *OUTCOMES]
    records = json.loads(as_json(outcomes, [Monitor("fraud", VolumeSettings(warning=0.1, critical=0.25))]))
    assert [(r["monitor"], r["column"]) for r in records] == [
        ("fraud", "amount"), ("fraud", "__volume__"), ("fraud", "amount"), ("fraud", "age"), ("gone", None)]
    volume = records[1]
    assert list(volume) == VOLUME_KEYS
    assert volume == {
        "monitor": "fraud", "column": "__volume__", "role": "volume", "segment": None,
        "window_start": "2024-03-08T00:00:00+00:00", "window_end": "2024-03-08T01:00:00+00:00",
        "status": "critical", "rows": 240, "expected": 400.0, "reference_rows": 67200, "change": -0.4,
        "p_value": 1.5e-16, "threshold_warning": 0.1, "threshold_critical": 0.25,
        "newest_row_at": "2024-03-08T00:55:00+00:00"}


def test_a_volume_without_reference_or_settings_is_null_where_unknown():
    (_, volume) = json.loads(as_json([calm(EMPTY_REFERENCE, newest_row_at=None)]))
    assert volume["status"] == "insufficient_data" and volume["rows"] == 12
    for key in ("expected", "change", "p_value", "threshold_warning", "threshold_critical", "newest_row_at"):
        assert volume[key] is None, key


def test_no_volume_object_without_a_volume_check():
    assert "__volume__" not in as_json([calm(None), *OUTCOMES])
    assert " volume " not in as_table([calm(None), *OUTCOMES])


def test_the_table_has_a_volume_line_after_the_columns():
    lines = as_table([calm(), calm(EMPTY_REFERENCE, newest_row_at=None), *OUTCOMES]).splitlines()
    volume = [line for line in lines if ": volume " in line]
    assert volume == [
        "fraud: volume critical: 240 rows, expected 400 (-40.0 %), p 1.5e-16, newest row at 2024-03-08T00:55:00+00:00",
        "fraud: volume insufficient_data: 12 rows, expected -, p -, newest row at -"]
    assert lines.index(volume[0]) > max(i for i, line in enumerate(lines) if line.startswith("fraud "))
    assert lines.index(volume[1]) + 1 == lines.index("gone: FAILED: monitor 'gone': table 'x' does not exist")


def test_a_hostile_monitor_name_is_escaped_in_the_volume_line():
    hostile = replace(calm(), monitor="fr\x1b[2Jaud\u202e")
    lines = as_table([hostile]).split("\n")
    assert all(is_visible(line) for line in lines)
    assert any(line.startswith("fr\\x1b[2Jaud\\u202e: volume critical") for line in lines)
    assert json.loads(as_json([hostile]))[1]["monitor"] == hostile.monitor


def test_a_critical_volume_exits_1_like_a_critical_column():
    assert _exit_code([calm(replace(DROPPED, status="warning"))]) == 0
    assert _exit_code([calm()]) == 1
    assert _exit_code([calm(None)]) == 0
    assert _exit_code([calm(), OUTCOMES[1]]) == 3  # a failed run still wins


def with_volume(config_file, **check) -> str:  # noqa: F811  the imported fixture
    """The CLI tests' monitor (a fixed reference: no volume check unless written) with one."""
    path = Path(config_file())
    config = yaml.safe_load(path.read_text())
    config["monitors"][0]["volume"] = check
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_run_once_prints_the_volume_and_a_critical_volume_exits_1(config_file):  # noqa: F811
    # The calm hour after the drifted one: no column is critical (it exits 0 without a volume
    # check), but 400 rows where the week's 2,000 make 11.9 an hour is a volume far off.
    path = with_volume(config_file, warning=0.2, critical=0.5)
    result = driftmon("run-once", "--config", path, "--at", (AT + HOUR).isoformat(), "--output", "json")
    assert result.returncode == 1, result.stdout + result.stderr
    records = json.loads(result.stdout)
    assert [r["column"] for r in records][-1] == "__volume__" and len(records) == len(FEATURES) + 1
    assert all(r["status"] != "critical" for r in records[:-1])
    volume = records[-1]
    assert list(volume) == VOLUME_KEYS
    assert (volume["status"], volume["rows"], volume["reference_rows"]) == ("critical", 400, 2000)
    assert volume["expected"] == pytest.approx(2000 / 168) and volume["p_value"] < 1e-100
    assert (volume["threshold_warning"], volume["threshold_critical"]) == (0.2, 0.5)
    assert volume["window_end"] == (WINDOW.end + HOUR).isoformat() and volume["newest_row_at"] is not None
    table = driftmon("run-once", "--config", path, "--at", (AT + HOUR).isoformat())
    assert table.returncode == 1
    assert "fraud: volume critical: 400 rows, expected 11.9 (+3260.0 %), p " in table.stdout
