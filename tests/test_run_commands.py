"""run-once and backfill through the real CLI: tables, JSON contract, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from tests.cli_helpers import driftmon
from tests.sourcedata import create_and_fill, events_table
from tests.test_pipeline import AT, DAY, FEATURES, HOUR, REFERENCE, START, WINDOW, drifted_rows

JSON_KEYS = ["monitor", "column", "role", "window_start", "window_end", "reference_start",
             "reference_end", "samples_current", "samples_reference", "missing_ratio", "kl", "psi",
             "js", "status"]


@pytest.fixture
def config_file(db_url, engine, tmp_path):
    rng = np.random.default_rng(5)
    rows = drifted_rows(rng, 2000, START, 7 * DAY, False) + drifted_rows(rng, 400, WINDOW.start, HOUR, True)
    rows += drifted_rows(rng, 400, WINDOW.end, HOUR, False)  # the next hour is calm
    create_and_fill(engine, events_table(tenure=sa.Double, age=sa.Double), rows)

    def write(**overrides):
        config = {
            "database": {"url": db_url},
            "defaults": {"schedule": {"every": "1h"}, "min_samples": 50,
                         "reference": {"kind": "fixed", "start": REFERENCE.start.isoformat(),
                                       "end": REFERENCE.end.isoformat()}},
            "monitors": [{"name": "fraud", "features": FEATURES,
                          "source": {"kind": "events", "table": "inference_log", "timestamp_column": "ts"}}],
            **overrides,
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        return str(path)

    return write


def test_run_once_table_and_exit_1_on_critical(config_file):
    result = driftmon("run-once", "--config", config_file(), "--at", AT.isoformat())
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["monitor", "column", "role", "samples", "KL", "PSI", "JS", "status"]
    amount = next(line.split() for line in lines if line.startswith("fraud") and " amount " in line)
    assert amount[-1] == "critical" and amount[3] == "400"
    assert "run.finished" in result.stderr  # one structured log line per run (JSON off a TTY)


def test_run_once_exit_0_when_calm(config_file):
    calm = driftmon("run-once", "--config", config_file(), "--at", (AT + HOUR).isoformat())
    assert calm.returncode == 0, calm.stdout + calm.stderr


def test_run_once_json_contract(config_file):
    result = driftmon("run-once", "--config", config_file(), "--at", AT.isoformat(), "--output", "json")
    records = json.loads(result.stdout)
    assert len(records) == len(FEATURES)
    for record in records:
        assert list(record) == JSON_KEYS
        assert record["window_start"] == "2024-03-08T00:00:00+00:00"
        assert record["window_end"] == "2024-03-08T01:00:00+00:00"
        assert record["samples_current"] == 400 and record["samples_reference"] == 2000
    assert {r["column"]: r["role"] for r in records}["score"] == "prediction"


def test_run_once_insufficient_data_is_null(config_file):
    result = driftmon("run-once", "--config", config_file(), "--at", (AT - 3 * DAY).isoformat(),
                      "--output", "json")
    assert result.returncode == 0
    for record in json.loads(result.stdout):
        assert record["status"] == "insufficient_data"
        assert record["kl"] is None and record["psi"] is None and record["js"] is None


def test_run_once_exit_3_when_a_monitor_fails(config_file, tmp_path):
    path = config_file()
    config = yaml.safe_load(Path(path).read_text())
    config["monitors"].append({"name": "gone", "features": [{"column": "x"}],
                               "source": {"kind": "events", "table": "no_such_table", "timestamp_column": "ts"}})
    path = tmp_path / "with-failure.yaml"
    path.write_text(yaml.safe_dump(config))
    result = driftmon("run-once", "--config", str(path), "--at", AT.isoformat())
    assert result.returncode == 3
    assert "gone: FAILED: monitor 'gone', table 'no_such_table'" in result.stdout
    assert " amount " in result.stdout  # the other monitor's results are still shown


def test_run_once_usage_errors_exit_2(config_file):
    assert driftmon("run-once", "--config", config_file(), "--monitor", "nope").returncode == 2
    assert driftmon("run-once", "--config", config_file(), "--at", "yesterday").returncode == 2
    assert driftmon("backfill", "--config", config_file(), "--start", "2024-03-02",
                    "--end", "2024-03-01").returncode == 2


@pytest.mark.parametrize("command", ["run-once", "serve"])
def test_cuda_requested_without_cuda_is_a_config_error(config_file, command):
    result = driftmon(command, "--config", config_file(compute={"device": "cuda"}))
    assert result.returncode == 2  # serve: before the server binds or a run starts
    assert "compute.device" in result.stderr and "CUDA" in result.stderr


def test_backfill_command(config_file, engine):
    path = config_file()
    args = ("backfill", "--config", path, "--start", (WINDOW.start - DAY).isoformat(),
            "--end", (WINDOW.start + 2 * HOUR).isoformat())
    first = driftmon(*args)
    assert first.returncode == 1, first.stderr  # the drifted hour is critical
    assert "backfilled 26 window(s): 0 failed" in first.stdout
    again = driftmon(*args)
    assert again.returncode == 0 and "backfilled 0 window(s)" in again.stdout
    with engine.connect() as connection:
        count = connection.execute(sa.text("SELECT count(*) FROM results")).scalar()
    assert count == 26 * len(FEATURES)
