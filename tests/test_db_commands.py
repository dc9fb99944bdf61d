"""`driftmon db status | delete-windows | reset-reference`, and windows in the future refused,
through the real CLI on SQLite and PostgreSQL results databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from driftmon.store.models import ReferenceProfile, Result, Run, SliceCounts
from tests.cli_helpers import driftmon
from tests.test_pipeline import AT, HOUR, WINDOW
from tests.test_run_commands import config_file  # noqa: F401  (a fixture)

SPAN = ["--start", (WINDOW.start - HOUR).isoformat(), "--end", (WINDOW.end + 2 * HOUR).isoformat()]


def _rows(engine, table) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(table.__table__)).scalar_one()


@pytest.fixture
def backfilled(config_file, engine):  # noqa: F811
    path = config_file()
    assert driftmon("backfill", "--config", path, *SPAN).returncode in (0, 1)
    assert _rows(engine, Result) == 4 * 5 and _rows(engine, ReferenceProfile) == 5
    return path


@pytest.mark.parametrize("args", [
    ["backfill", "--start", "2027-01-01", "--end", "2099-01-02"],
    ["run-once", "--at", "2099-01-01T00:00:00Z"],
])
def test_windows_that_end_after_now_are_refused_naming_the_option(config_file, engine, args):  # noqa: F811
    result = driftmon(*args, "--config", config_file())
    assert result.returncode == 2, result.stdout + result.stderr
    option = "--end" if args[0] == "backfill" else "--at"
    assert f"'{option}'" in result.stderr and "in the future" in result.stderr
    assert _rows(engine, Result) == 0


def test_status_lists_profiles_slices_and_windows_with_their_verdict(backfilled):
    result = driftmon("db", "status", "--config", backfilled)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "monitor fraud" in text and "5 column(s)" in text and "complete" in text
    assert "4 window(s), 20 row(s)" in text
    assert text.count("matches the config") == 3 and "STALE" not in text  # profile, slices, windows


def test_status_says_what_a_changed_setting_made_stale(backfilled, tmp_path):
    config = yaml.safe_load(Path(backfilled).read_text())
    config["monitors"][0]["features"][0]["bins"] = 7
    config["defaults"]["smoothing"] = {"method": "epsilon"}
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    result = driftmon("db", "status", "--config", str(changed))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("1 column(s)" in line and "STALE" in line for line in lines)  # amount's bins changed
    assert any("4 column(s)" in line and "matches the config" in line for line in lines)
    assert any("4 window(s)" in line and "STALE" in line for line in lines)


def test_delete_windows_names_what_it_deletes_and_needs_yes(backfilled, engine):
    after = WINDOW.end.isoformat()
    dry = driftmon("db", "delete-windows", "--config", backfilled, "--monitor", "fraud", "--after", after)
    assert dry.returncode == 2 and "--yes" in dry.stderr
    assert "2 window(s)" in dry.stdout and "10 result row(s)" in dry.stdout
    assert _rows(engine, Result) == 20
    done = driftmon("db", "delete-windows", "--config", backfilled, "--monitor", "fraud", "--after", after, "--yes")
    assert done.returncode == 0, done.stderr
    assert "deleted 10 result row(s)" in done.stdout
    with engine.connect() as connection:
        ends = connection.execute(sa.select(Result.window_end).distinct()).scalars().all()
        runs = connection.execute(sa.select(Run.window_end)).scalars().all()
    assert sorted(e.replace(tzinfo=UTC) if e.tzinfo is None else e for e in ends) == [
        WINDOW.end - HOUR, WINDOW.end]
    assert all((r.replace(tzinfo=UTC) if r.tzinfo is None else r) <= WINDOW.end for r in runs)
    again = driftmon("backfill", "--config", backfilled, *SPAN)
    assert "backfilled 2 window(s)" in again.stdout


def test_reset_reference_drops_profiles_and_slices_only(backfilled, engine):
    slices = _rows(engine, SliceCounts)
    assert slices > 0
    dry = driftmon("db", "reset-reference", "--config", backfilled, "--monitor", "fraud")
    assert dry.returncode == 2 and f"{slices} slice(s)" in dry.stdout and "5 column profile(s)" in dry.stdout
    assert _rows(engine, ReferenceProfile) == 5
    done = driftmon("db", "reset-reference", "--config", backfilled, "--monitor", "fraud", "--yes")
    assert done.returncode == 0, done.stderr
    assert _rows(engine, ReferenceProfile) == 0 and _rows(engine, SliceCounts) == 0 and _rows(engine, Result) == 20
    recount = driftmon("run-once", "--config", backfilled, "--at", AT.isoformat())
    assert recount.returncode in (0, 1) and _rows(engine, ReferenceProfile) == 5


def test_db_commands_refuse_a_results_database_that_is_not_there(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"database": {"url": f"sqlite:///{tmp_path / 'none.db'}"}}))
    result = driftmon("db", "status", "--config", str(path))
    assert result.returncode == 2 and "does not exist yet" in result.stderr
    assert not (tmp_path / "none.db").exists()


def test_status_flags_windows_in_the_future(backfilled, engine):
    future = datetime.now(UTC) + timedelta(days=30)
    with engine.begin() as connection:
        row = dict(connection.execute(sa.select(Result.__table__).limit(1)).mappings().one())
        row.update(id=None, window_end=future, window_start=future - HOUR, run_id=None)
        connection.execute(Result.__table__.insert(), {k: v for k, v in row.items() if k != "id"})
    result = driftmon("db", "status", "--config", backfilled)
    assert "1 window(s) end in the future" in result.stdout
