"""run-once and backfill through the real CLI: tables, JSON contract, exit codes."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import tty
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from tests.cli_helpers import ROOT, driftmon
from tests.sourcedata import create_and_fill, events_table
from tests.test_pipeline import AT, DAY, FEATURES, HOUR, REFERENCE, START, WINDOW, drifted_rows

JSON_KEYS = ["monitor", "column", "role", "window_start", "window_end", "reference_start",
             "reference_end", "samples_current", "samples_reference", "missing_ratio", "kl", "psi",
             "js", "p_value", "q_value", "status", "segment"]


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
    assert lines[0].split() == ["monitor", "column", "role", "samples", "(ref", "/", "cur)", "KL", "PSI", "JS",
                                "p", "q", "status"]
    amount = next(line.split() for line in lines if line.startswith("fraud") and " amount " in line)
    assert amount[-1] == "critical" and amount[3:6] == ["2000", "/", "400"]
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
        assert record["p_value"] is None and record["q_value"] is None


def with_failing_monitor(config_file, tmp_path) -> str:
    config = yaml.safe_load(Path(config_file()).read_text())
    config["monitors"].append({"name": "gone", "features": [{"column": "x"}],
                               "source": {"kind": "events", "table": "no_such_table", "timestamp_column": "ts"}})
    path = tmp_path / "with-failure.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_run_once_exit_3_when_a_monitor_fails(config_file, tmp_path):
    result = driftmon("run-once", "--config", with_failing_monitor(config_file, tmp_path), "--at", AT.isoformat())
    assert result.returncode == 3
    assert "gone: FAILED: monitor 'gone', table 'no_such_table'" in result.stdout
    assert " amount " in result.stdout  # the other monitor's results are still shown


def test_run_once_json_names_each_failed_monitor(config_file, tmp_path):
    result = driftmon("run-once", "--config", with_failing_monitor(config_file, tmp_path), "--at", AT.isoformat(),
                      "--output", "json")
    assert result.returncode == 3
    records = json.loads(result.stdout)
    assert [r["monitor"] for r in records] == ["fraud"] * len(FEATURES) + ["gone"]  # failures after the results
    failed = records[-1]
    assert list(failed) == ["monitor", "column", "status", "error"]
    assert failed["column"] is None and failed["status"] == "failed"
    assert failed["error"].startswith("monitor 'gone', table 'no_such_table'")


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


def test_backfill_recount_recomputes_stored_windows(config_file, engine):
    path = config_file()
    args = ("backfill", "--config", path, "--start", (WINDOW.start - DAY).isoformat(),
            "--end", (WINDOW.start + 2 * HOUR).isoformat())
    assert driftmon(*args).returncode == 1
    recount = driftmon(*args, "--recount")
    assert recount.returncode == 1, recount.stderr
    assert "backfilled 26 window(s): 0 failed" in recount.stdout  # every window, stored or not
    with engine.connect() as connection:
        count = connection.execute(sa.text("SELECT count(*) FROM results")).scalar()
    assert count == 26 * len(FEATURES)  # replaced, never duplicated
    with engine.connect() as connection:
        triggers = dict(connection.execute(sa.text('SELECT "trigger", count(*) FROM runs GROUP BY "trigger"')).all())
    assert triggers == {"backfill": 26, "recount": 26}


def test_backfill_help_describes_recount():
    result = driftmon("backfill", "--help")
    assert "--recount" in result.stdout and "arrived later than" in " ".join(result.stdout.split())


# --- Ctrl-C and the progress bar -----------------------------------------------------


def week_backfill_args(path: str) -> tuple[str, ...]:
    """A week of hourly windows: long enough to interrupt."""
    return ("backfill", "--config", path, "--start", START.isoformat(), "--end", WINDOW.end.isoformat())


def stored_windows(engine) -> dict:
    with engine.connect() as connection:
        return dict(connection.execute(sa.text(
            'SELECT window_end, count(*) FROM results GROUP BY window_end')).all())


def test_ctrl_c_in_backfill_finishes_the_window_in_flight_and_exits_130(config_file, engine):
    path = config_file()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTMON_")}
    environ["DRIFTMON_LOG_LEVEL"] = "debug"  # a line per window (DEBUG in a backfill): one is done
    process = subprocess.Popen([sys.executable, "-m", "driftmon", *week_backfill_args(path)], cwd=ROOT,
                               env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in process.stderr:  # JSON log lines: stderr is not a terminal
            seen.append(line)
            if '"run.finished"' in line:
                process.send_signal(signal.SIGINT)  # what Ctrl-C sends
                break
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = "".join(seen) + stderr
    assert process.returncode == 130, stderr
    assert "to resume, run the same command again: windows already stored are skipped" in stderr
    assert "Traceback" not in stderr and "Aborted" not in stderr
    windows = stored_windows(engine)
    assert 0 < len(windows) < 7 * 24 and set(windows.values()) == {len(FEATURES)}  # nothing partial
    resumed = driftmon(*week_backfill_args(path))
    assert resumed.returncode == 1, resumed.stderr  # the drifted hour is critical
    after = stored_windows(engine)
    assert f"backfilled {len(after) - len(windows)} window(s): 0 failed" in resumed.stdout
    assert len(after) > 7 * 24 and set(after.values()) == {len(FEATURES)}


def run_in_terminal(args: tuple[str, ...], env: dict | None = None) -> tuple[int, str]:
    """driftmon with stdout and stderr on a pseudo-terminal (120 columns, no newline
    translation); returns its exit code and everything it wrote, as a terminal got it."""
    master, slave = os.openpty()
    tty.setraw(slave)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTMON_")}
    process = subprocess.Popen([sys.executable, "-m", "driftmon", *args], cwd=ROOT, env={**environ, **(env or {})},
                               stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return process.wait(timeout=120), b"".join(chunks).decode(errors="replace")


def terminal_lines(output: str) -> list[str]:
    """What each line shows on the terminal: the text after its last carriage return."""
    return [line.rsplit("\r", 1)[-1] for line in output.split("\n")]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the terminal, not the store, is tested
def test_backfill_log_lines_do_not_break_the_progress_bar(config_file):
    args = ("backfill", "--config", config_file(), "--start", (WINDOW.start - DAY).isoformat(),
            "--end", (WINDOW.start + 2 * HOUR).isoformat())
    code, output = run_in_terminal(args, env={"DRIFTMON_LOG_LEVEL": "debug"})  # a line per window
    assert code == 1, output
    assert re.search(r"100%\|[^\n]*\| 26/26", output), output  # the bar was shown
    runs = [line for line in terminal_lines(output) if "monitor run finished" in line]
    assert len(runs) == 26
    for line in runs:  # each on a line of its own, never glued to the bar
        assert re.match(r"\d\d:\d\d:\d\d DEBUG +monitor run finished", line), repr(line)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_backfill_json_logs_on_a_terminal_stay_json(config_file):
    args = ("backfill", "--config", config_file(), "--start", (WINDOW.start - DAY).isoformat(),
            "--end", (WINDOW.start + 2 * HOUR).isoformat())
    code, output = run_in_terminal(args, env={"DRIFTMON_LOG_FORMAT": "json", "DRIFTMON_LOG_LEVEL": "debug"})
    assert code == 1, output
    events = [json.loads(line) for line in terminal_lines(output) if line.startswith("{")]
    assert [e["event"] for e in events].count("run.finished") == 26
    assert all(e["monitor"] == "fraud" for e in events if e["event"] == "run.finished")
