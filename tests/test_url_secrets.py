"""A URL's password never shows: not typed without its scheme, nor quoted in a driver's error.

Masking once worked only after ``://``: ``alice:PW@host/db`` (the scheme forgotten)
was printed whole by every command, and a source whose connect failed with a
message quoting ``user:pw@host`` had it stored in ``runs.error`` and logged.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from driftmon.cli import main
from driftmon.store import database
from tests.cli_helpers import COMMANDS, ROOT

PASSWORD = "Pw-4f9e2c-secret"
SCHEMELESS = f"alice:{PASSWORD}@db.internal:5432/results"



def write_config(folder: Path, database_url: str, source_url: str | None = None) -> Path:
    source = {"kind": "events", "table": "t", "timestamp_column": "ts"}
    if source_url is not None:
        source["url"] = source_url
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({
        "database": {"url": database_url}, "compute": {"device": "cpu"},
        "monitors": [{"name": "m", "source": source, "features": [{"column": "x"}]}]}))
    return path


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Commands run in a folder of their own: a relative SQLite file lands there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def no_daemon(monkeypatch):
    """`serve` in-process must stop at the config; a daemon that starts fails the test, not hangs it."""
    from driftmon.serving.daemon import Daemon

    monkeypatch.setattr(Daemon, "serve", lambda self: 99)


@pytest.mark.parametrize("where", ["database.url", "monitors[0].source.url"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_url_without_scheme_is_refused_by_every_command_without_its_password(in_tmp, no_daemon, where, command):
    if where == "database.url":
        config = write_config(in_tmp, SCHEMELESS)
    else:
        config = write_config(in_tmp, f"sqlite:///{in_tmp / 'results.db'}", SCHEMELESS)
    result = CliRunner().invoke(main, [*COMMANDS[command], "--config", str(config)])
    shown = result.output + result.stderr
    assert result.exit_code == 2, shown
    assert PASSWORD not in shown
    assert f"  {where}: is not a database URL: it has no scheme" in result.stderr, shown
    assert "Traceback" not in shown


def test_a_url_without_scheme_from_the_environment_is_refused_without_its_password(in_tmp):
    config = write_config(in_tmp, "sqlite:///results.db")
    result = CliRunner().invoke(main, ["run-once", "--config", str(config)],
                                env={"DRIFTMON_DATABASE_URL": SCHEMELESS})
    assert result.exit_code == 2, result.output
    assert PASSWORD not in result.output + result.stderr
    assert "database.url: is not a database URL" in result.stderr


def test_serve_refuses_a_url_without_scheme_and_exits_2(tmp_path):
    """The real process: it exits on its own; SIGTERM (then SIGKILL) only bounds a failure."""
    config = write_config(tmp_path, SCHEMELESS)
    process = subprocess.Popen([sys.executable, "-m", "driftmon", "serve", "--config", str(config)],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        try:
            out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        pytest.fail(f"serve did not exit on its own (then {process.returncode}): {out}{err}")
    assert process.returncode == 2, out + err
    assert PASSWORD not in out + err
    assert "database.url: is not a database URL" in err


# --- a driver's error that quotes the URL ---------------------------------------------


def failing_sources(monkeypatch, error: Exception) -> None:
    """Every engine of the host source.invalid fails to connect with ``error``."""
    real = database.create_db_engine

    def create(url, key="database URL", pool_size=None):
        if "source.invalid" not in str(url):
            return real(url, key, pool_size)

        def connect():
            raise error

        return sa.create_engine("sqlite://", creator=connect)

    monkeypatch.setattr(database, "create_db_engine", create)


@pytest.mark.parametrize("log_format", ["json", "text"])
@pytest.mark.parametrize("error", [
    sqlite3.OperationalError(f"could not connect to alice:{PASSWORD}@source.invalid:5432"),  # a DB-API error
    ConnectionRefusedError(f"connecting to 'alice:{PASSWORD}@source.invalid' refused"),  # a driver's own
], ids=["dbapi", "other"])
def test_a_source_error_quoting_its_url_is_stored_and_logged_masked(in_tmp, monkeypatch, error, log_format):
    failing_sources(monkeypatch, error)
    results = in_tmp / "results.db"
    config = write_config(in_tmp, f"sqlite:///{results}",
                          f"postgresql+psycopg://alice:{PASSWORD}@source.invalid/src")
    result = CliRunner().invoke(main, ["run-once", "--config", str(config)],
                                env={"DRIFTMON_LOG_FORMAT": log_format})
    assert result.exit_code == 3, result.output
    assert "source.invalid" in result.stderr  # the failure is logged ...
    assert PASSWORD not in result.output + result.stderr  # ... without the password
    engine = sa.create_engine(f"sqlite:///{results}")
    with engine.connect() as connection:
        errors = [row.error for row in connection.execute(sa.text("SELECT error FROM runs"))]
    engine.dispose()
    assert errors and all("alice:***@source.invalid" in e for e in errors), errors
    assert not [e for e in errors if PASSWORD in e]
