"""Driver errors that escape SQLAlchemy's wrapping fail the run as source errors; defects stay defects."""

from __future__ import annotations

import socket

import pytest
import sqlalchemy as sa

from driftmon import app as application
from driftmon.errors import ConfigError, SourceError
from driftmon.sources.sql import source_errors
from driftmon.store.database import EngineRegistry, create_db_engine
from tests.test_pipeline import AT, app_for, drift_log, make_config, runs_table  # noqa: F401  (fixtures)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_source_failure(outcome, engine, caplog, monitor: str, table: str) -> None:
    assert (outcome.status, outcome.reason) == ("failed", "source"), outcome.error
    assert f"monitor {monitor!r}, table {table!r}" in outcome.error
    assert "unexpected" not in outcome.error
    failed = runs_table(engine).query("status == 'failed'")
    assert len(failed) == 1 and f"monitor {monitor!r}, table {table!r}" in failed.iloc[0]["error"]
    assert not [r for r in caplog.records if getattr(r, "event", None) == "run.unexpected_error"]


def test_an_unreachable_spark_thrift_server_is_a_source_failure(engine, db_url, drift_log, app_for, caplog):  # noqa: F811
    pytest.importorskip("pyhive")
    down = {"name": "spark_down", "features": [{"column": "amount"}],
            "source": {"kind": "events", "url": f"hive://127.0.0.1:{free_port()}/default",
                       "table": "events", "timestamp_column": "ts"}}
    config = make_config(db_url, extra_monitors=[down])
    with caplog.at_level("ERROR", logger="driftmon.pipeline"):
        outcomes = application.run_latest(app_for(config), config.resolved_monitors(), AT)
    assert [o.status for o in outcomes] == ["ok", "failed"]  # the other monitor still runs
    assert_source_failure(outcomes[1], engine, caplog, "spark_down", "events")
    assert isinstance(outcomes[1].error, str) and "Could not connect" in outcomes[1].error


def test_an_os_error_from_the_driver_is_a_source_failure(engine, db_url, drift_log, app_for, caplog, tmp_path):  # noqa: F811
    url = f"sqlite:///{tmp_path / 'source.db'}"
    flaky = {"name": "flaky", "features": [{"column": "amount"}],
             "source": {"kind": "events", "url": url, "table": "events", "timestamp_column": "ts"}}
    config = make_config(db_url, extra_monitors=[flaky])
    app = app_for(config)

    def refused(*args, **kwargs):  # raised by the driver's connect, outside SQLAlchemy's DBAPI wrapping
        raise ConnectionRefusedError(111, "Connection refused")

    sa.event.listen(app.engines.get(url), "do_connect", refused)
    with caplog.at_level("ERROR", logger="driftmon.pipeline"):
        outcomes = application.run_latest(app, config.resolved_monitors(), AT)
    assert [o.status for o in outcomes] == ["ok", "failed"]
    assert_source_failure(outcomes[1], engine, caplog, "flaky", "events")
    assert "Connection refused" in outcomes[1].error


@pytest.mark.parametrize("raised", [OSError(5, "Input/output error"), TimeoutError("timed out"),
                                    ConnectionResetError(104, "Connection reset by peer")])
def test_io_errors_become_source_errors_chained(raised):
    with pytest.raises(SourceError, match="^monitor 'm', table 't': ") as caught, \
            source_errors("monitor 'm', table 't'"):
        raise raised
    assert caught.value.__cause__ is raised


def test_dbapi_errors_that_escape_sqlalchemy_become_source_errors():
    import sqlite3

    raised = sqlite3.OperationalError("disk I/O error")
    with pytest.raises(SourceError, match="disk I/O error") as caught, source_errors("monitor 'm', table 't'"):
        raise raised
    assert caught.value.__cause__ is raised


def test_a_thrift_transport_error_becomes_a_source_error():
    transport = pytest.importorskip("thrift.transport.TTransport")
    raised = transport.TTransportException(transport.TTransportException.NOT_OPEN, "Could not connect")
    with pytest.raises(SourceError, match="Could not connect") as caught, source_errors("monitor 'm', table 't'"):
        raise raised
    assert caught.value.__cause__ is raised


@pytest.mark.parametrize("raised", [TypeError("bad operand"), KeyError("column"), AttributeError("no attr"),
                                    ValueError("defect")])
def test_programming_errors_are_not_translated(raised):
    with pytest.raises(type(raised)), source_errors("monitor 'm', table 't'"):
        raise raised


def test_engine_errors_name_the_config_key(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_psycopg2(name, *args, **kwargs):
        if name.split(".")[0] == "psycopg2":
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_psycopg2)
    with pytest.raises(ConfigError, match=r"^monitors\[0\]\.source\.url: the driver .*pip install psycopg2-binary"):
        create_db_engine("postgresql+psycopg2://u@h/db", key="monitors[0].source.url")
    with pytest.raises(ConfigError, match=r"^database\.url: the driver .*pip install psycopg2-binary"):
        EngineRegistry().get("postgresql+psycopg2://u@h/db", key="database.url")
    with pytest.raises(ConfigError, match=r"^monitors\[1\]\.source\.url: not a valid database URL"):
        EngineRegistry().get("postgresql://u@h:notaport/db", key="monitors[1].source.url")
    with pytest.raises(ConfigError, match=r"^database URL: not a valid database URL"):  # the default, unchanged
        create_db_engine("postgresql://u@h:notaport/db")


@pytest.mark.parametrize("command", [["run-once"], ["explain", "--monitor", "m"], ["db", "status"]])
def test_commands_name_the_key_of_a_url_whose_driver_is_missing(tmp_path, command):
    import importlib.util

    from click.testing import CliRunner

    if importlib.util.find_spec("psycopg2") is not None:
        pytest.skip("psycopg2 is installed here: no missing driver to report")

    from driftmon.cli import main

    path = tmp_path / "config.yaml"
    path.write_text('database: {url: "postgresql+psycopg2://u@127.0.0.1/x"}\nmonitors:\n  - name: m\n'
                    "    source: {kind: events, table: t, timestamp_column: ts}\n    features: [{column: a}]\n")
    result = CliRunner().invoke(main, [*command, "--config", str(path)])
    assert result.exit_code == 2
    assert "database.url: the driver of 'postgresql+psycopg2' is not installed" in result.output
