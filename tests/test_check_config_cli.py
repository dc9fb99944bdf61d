"""`driftmon check-config [--connect]` as a subprocess: wrong setups that used to pass it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from tests.cli_helpers import driftmon
from tests.sourcedata import create_and_fill, events_table, random_events

FEATURES = [{"column": "amount"}, {"column": "country", "type": "categorical"}]


def write_config(folder: Path, database_url: str, monitors: list | None = None, **monitor) -> Path:
    if monitors is None:
        monitors = [{"name": "m", "features": FEATURES, **monitor,
                     "source": {"kind": "events", "table": "inference_log", "timestamp_column": "ts",
                                **monitor.pop("source", {})}}]
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({"database": {"url": database_url}, "compute": {"device": "cpu"},
                                    "monitors": monitors}))
    return path


def fresh_source(path: Path) -> str:
    """A SQLite source with rows in the last week and in the latest window (as of the real now)."""
    now, rng = datetime.now(UTC), np.random.default_rng(1)
    rows = (random_events(rng, 300, now - timedelta(days=8), timedelta(days=7))
            + random_events(rng, 150, now - timedelta(minutes=50), timedelta(minutes=40)))
    engine = sa.create_engine(f"sqlite:///{path}")
    create_and_fill(engine, events_table(), rows)
    engine.dispose()
    return f"sqlite:///{path}"


def test_check_config_creates_no_file(tmp_path):
    """The shipped config (sqlite:///driftmon.db) left an empty driftmon.db behind."""
    source = fresh_source(tmp_path / "source.db")
    config = write_config(tmp_path, "sqlite:///results.db", source={"url": source})
    before = sorted(tmp_path.iterdir())
    offline = driftmon("check-config", "--config", str(config), cwd=tmp_path)
    assert offline.returncode == 0, offline.stderr
    connected = driftmon("check-config", "--connect", "--config", str(config), cwd=tmp_path)
    assert connected.returncode == 0, connected.stderr
    assert ("results database results.db does not exist yet: `driftmon db upgrade` or the first run creates it"
            in connected.stdout)
    assert "150 in the latest window" in connected.stdout
    assert sorted(tmp_path.iterdir()) == before


def test_the_shipped_config_with_connect_creates_no_file(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    result = driftmon("check-config", "--connect", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert ("monitors[0].source: table 'inference_log' does not exist: its SQLite file driftmon.db does not exist "
            "(database.url, as source.url is unset)") in result.stderr
    assert sorted(tmp_path.iterdir()) == [config]


@pytest.mark.parametrize("command", [["check-config"], ["run-once"], ["serve"]])
def test_an_empty_monitors_list_is_refused(tmp_path, command):
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'results.db'}", monitors=[])
    result = driftmon(*command, "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "  monitors: the list is empty: there is nothing to monitor" in result.stderr


def test_an_empty_reference_exits_2_and_warnings_go_to_stderr(tmp_path):
    source = tmp_path / "source.db"
    engine = sa.create_engine(f"sqlite:///{source}")
    create_and_fill(engine, events_table(), [])
    engine.dispose()
    config = write_config(tmp_path, "sqlite:///results.db", source={"url": f"sqlite:///{source}"})
    result = driftmon("check-config", "--connect", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "  monitors[0].reference: no rows of table 'inference_log' in the reference range" in result.stderr
    assert "driftmon: warning: monitors[0].window: no rows in the latest window" in result.stderr


def test_a_fixed_reference_overlapping_the_current_window_is_a_warning(tmp_path):
    now = datetime.now(UTC)
    reference = {"kind": "fixed", "start": (now - timedelta(days=7)).isoformat(),
                 "end": (now + timedelta(days=1)).isoformat()}
    config = write_config(tmp_path, "sqlite:///results.db", reference=reference)
    result = driftmon("check-config", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "driftmon: warning: monitors[0].reference: the fixed reference" in result.stderr
    assert "ends in the future" in result.stderr


def test_cause_chain_does_not_repeat_a_driver_message():
    """`db upgrade` on a missing PostgreSQL database said the driver's message twice."""
    from sqlalchemy.exc import OperationalError

    from driftmon.commands.options import _cause_chain
    from driftmon.errors import StoreError

    said = 'connection failed: FATAL:  database "x" does not exist'
    cause = OperationalError(None, None, Exception(said))
    try:
        raise StoreError(f"migrating postgresql://u@h/x failed: {cause.orig}") from cause
    except StoreError as exc:
        assert _cause_chain(exc) == f"migrating postgresql://u@h/x failed: {said}"


def test_a_missing_postgresql_results_database(tmp_path, postgres_server):
    url = postgres_server.url.set(database="driftmon_no_such_database").render_as_string(hide_password=False)
    config = write_config(tmp_path, url, source={"url": fresh_source(tmp_path / "source.db")})
    checked = driftmon("check-config", "--connect", "--config", str(config), cwd=tmp_path)
    assert checked.returncode == 2
    assert "  database.url: cannot open postgresql" in checked.stderr
    assert checked.stderr.count('database "driftmon_no_such_database" does not exist') == 1
    upgraded = driftmon("db", "upgrade", "--config", str(config), cwd=tmp_path)
    assert upgraded.returncode == 3
    assert upgraded.stderr.count('database "driftmon_no_such_database" does not exist') == 1, upgraded.stderr
