"""Bad input ends every command with exit 2 and a message naming the key, never a traceback.

Settings that passed check-config and then crashed with exit 1 (the code for
critical drift, so a CI gate read a crash as drift): ``window.size: 9999999w``
(OverflowError), a 5,000-digit integer (Python's int-str conversion limit),
YAML nested 5,000 deep (RecursionError), ``hive://`` with explain, report and
check-config --connect (a traceback), and more. Every command meets every config
of the corpus here, in-process (CliRunner); a few run as real processes too.
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from driftmon.cli import main
from tests.cli_helpers import COMMANDS, ROOT

BASE = {
    "database": {"url": "sqlite:///results.db"},
    "compute": {"device": "cpu"},
    "monitors": [{"name": "m", "source": {"kind": "events", "table": "t", "timestamp_column": "ts"},
                  "features": [{"column": "x"}]}],
}


def config(**changes) -> str:
    """BASE as YAML with ``changes``: ``monitor__window={...}`` sets monitors[0].window, else a top-level key."""
    document = copy.deepcopy(BASE)
    for key, value in changes.items():
        if key.startswith("monitor__"):
            document["monitors"][0][key.removeprefix("monitor__")] = value
        elif key.startswith("source__"):
            document["monitors"][0]["source"][key.removeprefix("source__")] = value
        else:
            document[key] = value
    return yaml.safe_dump(document)


def base_with(line: str) -> str:
    """BASE's YAML with ``line`` added under the first monitor (for what safe_dump cannot write)."""
    return config().replace("- features:", f"- {line}\n  features:", 1)


# name: (the file's text or bytes, the key path the message names, {command: exit code} where not 2;
# None: the command is not run, as it would do real work on a valid config).
CORPUS: dict[str, tuple[str | bytes, str, dict[str, int | None]]] = {
    # durations that overflowed datetime arithmetic, or were not numbers
    "window 9999999w": (config(monitor__window={"size": "9999999w"}), "monitors[0].window.size", {}),
    "rolling reference 9999999w": (config(monitor__reference={"kind": "rolling", "size": "9999999w"}),
                                   "monitors[0].reference.size", {}),
    "every 99999999999999w": (config(monitor__schedule={"every": "99999999999999w"}),
                              "monitors[0].schedule.every", {}),
    "a duration of 1e300 seconds": (config(monitor__window={"size": 1e300}), "monitors[0].window.size", {}),
    "an infinite duration": (base_with("window: {size: .inf}"), "monitors[0].window.size", {}),
    "a NaN duration": (base_with("window: {size: .nan}"), "monitors[0].window.size", {}),
    "a sexagesimal duration": (base_with("window: {size: 99999999999999999999:00}"), "monitors[0].window.size", {}),
    "a negative duration": (config(monitor__window={"size": "-5m"}), "monitors[0].window.size", {}),
    "a negative number of seconds": (config(monitor__lateness=-60), "monitors[0].lateness", {}),
    "a duration of 5,000 digits": (config(monitor__window={"size": "9" * 5000 + "s"}), "monitors[0].window.size", {}),
    "catch_up reaching back 1M years": (config(monitor__schedule={"every": "5200w"}, monitor__catch_up=10000),
                                        "monitors[0].catch_up", {}),
    "yearly cron, catch_up 10000": (config(monitor__schedule={"cron": "0 0 1 1 *"}, monitor__catch_up=10000),
                                    "monitors[0].catch_up", {}),
    "a source timeout beyond 32-bit ms": (config(source__timeout="5000w"), "monitors[0].source.timeout", {}),
    "a fixed reference from year 1": (config(monitor__reference={"kind": "fixed", "start": "0001-01-01T00:00:00",
                                                                 "end": "2024-01-01T00:00:00"}),
                                      "monitors[0].reference.start", {}),
    # numbers
    "an integer of 5,000 digits": ("compute:\n  threads: " + "9" * 5000 + "\n", "compute.threads", {}),
    "a 5,000-digit key": ("? " + "9" * 5000 + "\n: 1\n", "(top level)", {}),
    "a huge port": (config(server={"port": 10**30}), "server.port", {}),
    "a huge thread count": (config(compute={"threads": 10**30}), "compute.threads", {}),
    "a huge bin count": (config(monitor__features=[{"column": "x", "bins": 10**30}]), "monitors[0].features[0].bins",
                         {}),
    "a huge min_samples": (config(monitor__min_samples=10**30), "monitors[0].min_samples", {}),
    "a NaN threshold": (config(monitor__thresholds={"warning": math.nan}), "monitors[0].thresholds.warning", {}),
    "an infinite uniform range": (config(monitor__features=[{"column": "x", "binning": "uniform",
                                                             "range": [-math.inf, math.inf]}]),
                                  "monitors[0].features[0]", {}),
    "a filter integer beyond 64 bits": (config(source__where={"x": 10**30}), "monitors[0].source.where.x", {}),
    "a NaN filter": (config(source__where={"x": math.nan}), "monitors[0].source.where.x", {}),
    "cuda:99999999999999999999": (config(compute={"device": "cuda:99999999999999999999"}), "compute.device", {}),
    # types and shapes
    "a non-string table name": (config(source__table=123), "monitors[0].source.table", {}),
    "a list for a map": (config(database=["sqlite:///x.db"]), "database", {}),
    "a map for a list": (config(monitors={"m": {}}), "monitors", {}),
    "a string for the features": (config(monitor__features="x"), "monitors[0].features", {}),
    "a top-level scalar": ("42\n", "(top level)", {}),
    "a top-level list": ("- a\n- b\n", "(top level)", {}),
    "an unhashable key": ("? [1, 2]\n: 3\n", "not valid YAML", {}),
    "a duplicate key": ("compute: {}\ncompute: {}\n", "compute: duplicate key", {}),
    "an unset variable": (config(source__table="${DRIFTMON_TEST_NOT_SET}"), "monitors[0].source.table", {}),
    "both every and cron": (config(monitor__schedule={"every": "5m", "cron": "* * * * *"}), "monitors[0].schedule",
                            {}),
    # the file itself
    "binary garbage": (b"\x00\x01\xff\xfe\x80garbage", "is not UTF-8 text", {}),
    "a NUL byte": ("database: {url: \x00}\n", "not valid YAML", {}),
    "nesting 5,000 deep": ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 32 deep", {}),
    "nesting by aliases": ("".join(f"x{i}: &x{i} [{f'*x{i - 1}' if i else ''}]\n" for i in range(100)),
                           "nested more than 32 deep", {}),
    "an alias bomb": ("a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(7)),
        "a YAML alias bomb", {}),
    # URLs
    "hive:// results database": (config(database={"url": "hive://u@h:10000/default"}), "database.url", {}),
    "mysql results database": (config(database={"url": "mysql+pymysql://u@h/d"}), "database.url", {}),
    # serve checks the driver once the daemon starts: as a real process below
    "psycopg2 not installed": (config(database={"url": "postgresql+psycopg2://u:pw@127.0.0.1:1/d"}), "database",
                               {"serve": None}),
    "a hive source that is down": (config(source__url="hive://u@127.0.0.1:1/default"), "monitors[0].source",
                                   {"check-config": None, "run-once": None, "backfill": None, "serve": None,
                                    "explain": None, "report": None, "db upgrade": None, "db status": None}),
    # valid for some commands: a file without monitors
    "an empty file": ("", "", {"check-config": 0, "check-config --connect": 0, "run-once": 0, "backfill": 0,
                               "serve": None, "db upgrade": 0, "db status": 0}),
}


@pytest.fixture
def no_daemon(monkeypatch):
    """`serve` in-process must stop at the config; a daemon that starts fails the test, not hangs it."""
    from driftmon.serving.daemon import Daemon

    monkeypatch.setattr(Daemon, "serve", lambda self: 99)


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def without_other_libraries_logs(output: str) -> str:
    """The output less the log lines of other libraries' loggers.

    PyHive's thrift transport logs its failed connect with a traceback of its own
    (logger thrift.transport.TSocket) before raising; driftmon's message follows it.
    """
    lines = []
    for line in output.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or str(record.get("logger", "driftmon")).startswith("driftmon"):
            lines.append(line)
    return "\n".join(lines)


@pytest.mark.parametrize("case", list(CORPUS))
def test_every_command_refuses_bad_input_with_exit_2_and_no_traceback(case, tmp_path, monkeypatch, no_daemon):
    text, key, codes = CORPUS[case]
    if case == "psycopg2 not installed" and _installed("psycopg2"):
        pytest.skip("psycopg2 is installed here")
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    failures = []
    for command, args in COMMANDS.items():  # in this order: db upgrade creates what db status reads
        expected = codes.get(command, 2)
        if expected is None:
            continue
        result = CliRunner().invoke(main, [*args, "--config", str(path)], env={"DRIFTMON_LOG_FORMAT": "json"})
        shown = without_other_libraries_logs(result.output + result.stderr)
        crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
        if result.exit_code != expected or crashed or "Traceback" in shown or (expected == 2 and key not in shown):
            failures.append(f"{command}: exit {result.exit_code} (expected {expected}), "
                            f"{type(result.exception).__name__}: {shown[-600:]}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("case, command", [
    ("window 9999999w", "run-once"),
    ("an integer of 5,000 digits", "check-config"),
    ("nesting 5,000 deep", "check-config"),
    ("hive:// results database", "explain"),
    ("psycopg2 not installed", "serve"),
])
def test_bad_input_as_a_real_process(case, command, tmp_path):
    if case == "psycopg2 not installed" and _installed("psycopg2"):
        pytest.skip("psycopg2 is installed here")
    text, key, _ = CORPUS[case]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    result = subprocess.run([sys.executable, "-m", "driftmon", *COMMANDS[command], "--config", str(path)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2, result.stderr
    assert key in result.stderr and "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("option", [
    ["backfill", "--start", "0001-01-01T00:00:00+14:00", "--end", "2024-01-01"],
    ["backfill", "--start", "1800-01-01", "--end", "2024-01-01"],
    ["explain", "--monitor", "m", "--at", "9999-12-31T23:59:59-05:00"],
    ["report", "--monitor", "m", "--end", "0001-01-01T00:00:00+05:00", "--out", "r.html"],
])
def test_times_out_of_range_are_usage_errors(option, tmp_path, monkeypatch):
    """0001-01-01T00:00+14:00 is before the first datetime once in UTC: OverflowError, exit 1."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(config())
    result = CliRunner().invoke(main, [*option, "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert "is outside the times driftmon handles: from 1900-01-01 to before 2200-01-01" in result.stderr


def test_an_unexpected_error_is_exit_3_in_one_line_and_a_traceback_with_debug(tmp_path, monkeypatch):
    """The backstop: a defect is exit 3 (failed), never Python's exit 1 (critical drift)."""
    from driftmon.commands import setup_checks as checks

    def broken(config, now=None):
        raise KeyError("a defect")

    monkeypatch.setattr(checks, "offline_checks", broken)
    path = tmp_path / "config.yaml"
    path.write_text(config())
    result = CliRunner().invoke(main, ["check-config", "--config", str(path)])
    assert result.exit_code == 3, result.output
    assert result.stderr.strip().splitlines() == [
        "driftmon: unexpected error (a defect in driftmon, please report it; DRIFTMON_DEBUG=1 shows the "
        "traceback): KeyError: 'a defect'"]
    debug = CliRunner().invoke(main, ["check-config", "--config", str(path)], env={"DRIFTMON_DEBUG": "1"})
    assert isinstance(debug.exception, KeyError)
