"""check-config's checks: offline ones (device, URLs, slice grid, fixed references) and --connect
(results database, tables, columns, types, rows of the reference range and the latest window)."""

from __future__ import annotations

import importlib.util
from datetime import timedelta

import numpy as np
import pytest
import sqlalchemy as sa
import torch

from driftmon.commands.setup_checks import connect_checks, offline_checks
from driftmon.config_file import parse_config
from tests.sourcedata import START, create_and_fill, events_table, random_events

# The latest window is [NOW - 1h, NOW); the default rolling reference is [START, START + 7d).
NOW = START + timedelta(days=8)
WINDOW_START = NOW - timedelta(hours=1)


def config_for(url, features=None, **extra):
    raw = {"database": {"url": url}, **extra.pop("top", {}),
           "monitors": [{"name": "m", "source": {"kind": "events", "table": "inference_log",
                                                 "timestamp_column": "ts", **extra.pop("source", {})},
                         "features": features or [{"column": "amount"}, {"column": "country", "type": "categorical"}],
                         **extra}]}
    return parse_config(raw, {})


def rows(reference: int = 200, window: int = 150, seed: int = 0) -> list[dict]:
    """``reference`` rows over the reference range, ``window`` rows inside the latest window."""
    rng = np.random.default_rng(seed)
    return (random_events(rng, reference, START, timedelta(days=7))
            + random_events(rng, window, WINDOW_START, timedelta(minutes=59)))


def fill(engine, data=None, table=None):
    create_and_fill(engine, table if table is not None else events_table(), rows() if data is None else data)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_problem_offline():
    report = offline_checks(config_for("sqlite://", top={"compute": {"device": "cuda"}}))
    assert any(p.startswith("compute.device:") for p in report.problems), report.problems


def test_slice_grid_is_reported():
    assert offline_checks(config_for("sqlite://")).notes == [
        "m: slices of 0:05:00, late rows counted for 0:05:00",
        "m: rolling reference: moves every 1 day, 0:00:00, summed from stored slices (no source read); bins re-cut "
        "every 7 days, 0:00:00, 1 day, 1:53:00 into each period",
        "m: volume check: warning at 15%, critical at 30% more or fewer rows than expected (rate test at 0.001)"]
    odd_offset = offline_checks(config_for("sqlite://", reference={"kind": "rolling", "offset": "7m"}))
    assert "counted from the source (its refresh, size or offset is not whole slices)" in odd_offset.notes[1]
    bad = offline_checks(config_for("sqlite://", slice="7m"))
    assert bad.problems == ["monitors[0].slice: slice 0:07:00 does not divide the window size (1:00:00) "
                            "and the schedule's grid (0:05:00)"]
    odd = offline_checks(config_for("sqlite://", schedule={"every": "1500ms"}))
    assert odd.problems == [] and "each cycle counts its whole window" in odd.notes[0]


def test_seasonal_reference_and_volume_are_reported():
    seasonal = offline_checks(config_for("sqlite://", reference={
        "kind": "seasonal", "period": "1d", "lags": 7, "exclude": [{"cron": "0 0 * * 6", "duration": "2d"}]},
        volume=None))
    assert seasonal.problems == [] and seasonal.notes[1:] == [
        "m: seasonal reference: the same window of each of the last 7 period(s) of 1 day, 0:00:00, "
        "bins re-cut every 1 day, 0:00:00, 1 exclusion(s)", "m: volume check off"]
    unsliced = offline_checks(config_for("sqlite://", reference={"kind": "seasonal", "period": "1d"}, slice="off"))
    assert unsliced.problems == ["monitors[0].reference: a seasonal reference is summed from slices, "
                                 "but slices are off (slice: off)"]


def test_connect_checks_tables_columns_and_types(engine, db_url):
    assert connect_checks(config_for(db_url), NOW).problems == [
        "monitors[0].source: monitor 'm', table 'inference_log', check-config --connect: "
        "table 'inference_log' does not exist"]
    fill(engine)
    assert connect_checks(config_for(db_url), NOW).problems == []
    missing = connect_checks(config_for(db_url, [{"column": "amount"}, {"column": "tenure"}]), NOW).problems
    assert len(missing) == 1 and missing[0].startswith("monitors[0].features[1].column: table 'inference_log' "
                                                       "has no column 'tenure' (its columns: 'ts', ")
    text = connect_checks(config_for(db_url, [{"column": "country"}]), NOW).problems
    assert len(text) == 1 and text[0].startswith(
        "monitors[0].features[0].type: column 'country' is declared numeric but its type is VARCHAR")


def test_a_typo_in_a_feature_column_is_reported_at_its_key_with_the_closest_column(engine, db_url):
    fill(engine)
    problems = connect_checks(config_for(db_url, [{"column": "amount"}, {"column": "contry", "type": "categorical"}]),
                              NOW).problems
    assert problems == ["monitors[0].features[1].column: table 'inference_log' has no column 'contry'; "
                        "did you mean 'country'?"]
    where = connect_checks(config_for(db_url, source={"where": {"model_versoin": "v3"}}), NOW).problems
    assert where == ["monitors[0].source.where.model_versoin: table 'inference_log' has no column 'model_versoin'; "
                     "did you mean 'model_version'?"]


def test_connect_names_an_unopenable_url():
    config = parse_config({"database": {"url": "sqlite://"}, "monitors": [
        {"name": "m", "features": [{"column": "x"}],
         "source": {"kind": "events", "table": "t", "timestamp_column": "ts", "url": "postgresql+nodriver://u@h/db"}}]},
        {})
    problems = connect_checks(config, NOW).problems
    assert len(problems) == 1 and problems[0].startswith("monitors[0].source.url: cannot open it:")


def test_sqlite_engine_for_connect_is_disposed(tmp_path):
    url = f"sqlite:///{tmp_path / 'src.db'}"
    engine = sa.create_engine(url)
    fill(engine)
    engine.dispose()
    assert connect_checks(config_for(url), NOW).problems == []


def test_bad_urls_are_problems_offline_with_their_key_paths():
    config = parse_config({"database": {"url": "postgresql://u:pw@db:abc/x"}, "monitors": [
        {"name": "m", "features": [{"column": "x"}],
         "source": {"kind": "events", "table": "t", "timestamp_column": "ts",
                    "url": "postgresql+nodriver://u@h/d"}}]}, {})
    problems = offline_checks(config).problems
    assert problems[0].startswith("database.url: not a valid database URL (bad port)") and "pw" not in problems[0]
    assert problems[1].startswith("monitors[0].source.url: no SQLAlchemy dialect or driver 'postgresql+nodriver'")


def test_a_missing_driver_and_postgres_scheme_are_problems_offline_naming_the_fix():
    config = parse_config({"database": {"url": "postgres://u:hunter2@db/x"}, "monitors": [
        {"name": "m", "features": [{"column": "x"}],
         "source": {"kind": "events", "table": "t", "timestamp_column": "ts",
                    "url": "mssql+pyodbc://u:hunter2@h/d"}}]}, {})
    problems = offline_checks(config).problems
    assert problems[0] == "database.url: SQLAlchemy has no postgres:// scheme; did you mean postgresql://?"
    if importlib.util.find_spec("pyodbc") is None:
        assert problems[1] == ("monitors[0].source.url: the driver of 'mssql+pyodbc' is not installed "
                               "(no module 'pyodbc'): pip install pyodbc")
    assert not [p for p in problems if "hunter2" in p]


# --- the timestamp column's type ----------------------------------------------------------


def log_table(timestamp_type) -> sa.Table:
    """events_table() with another type of timestamp column."""
    return sa.Table("inference_log", sa.MetaData(), sa.Column("ts", timestamp_type),
                    *(sa.Column(c.name, c.type) for c in events_table().columns if c.name != "ts"))


def test_a_text_timestamp_column_is_named_with_its_fix(engine, db_url, backend):
    """PostgreSQL: every run failed with `operator does not exist: text >= timestamp with time zone`.
    SQLite stores time as text anyway, and driftmon reads it there (strftime)."""
    fill(engine, [{**row, "ts": row["ts"].strftime("%Y-%m-%d %H:%M:%S")} for row in rows()], log_table(sa.Text))
    problems = connect_checks(config_for(db_url), NOW).problems
    if backend == "sqlite":
        assert problems == []
        return
    assert problems == [
        "monitors[0].source.timestamp_column: column 'ts' of table 'inference_log' is TEXT, not a date/time type "
        "or a number (time since the epoch, with source.timestamp_unit): driftmon compares it with UTC time "
        "bounds; convert it (SET TimeZone = 'UTC'; ALTER TABLE inference_log ALTER COLUMN ts TYPE timestamptz "
        "USING ts::timestamptz) or point source.table at a view that casts it"]


def test_a_boolean_timestamp_column_is_a_problem_on_every_engine(engine, db_url):
    fill(engine, [{**row, "ts": True} for row in rows()], log_table(sa.Boolean))
    problems = connect_checks(config_for(db_url), NOW).problems
    assert len(problems) == 1 and problems[0].startswith(
        "monitors[0].source.timestamp_column: column 'ts' of table 'inference_log' is BOOLEAN, not a date/time type")


def test_a_run_on_a_text_timestamp_names_the_column(backend, engine, db_url):
    """The run's own reader says it too, instead of the engine's operator error."""
    from driftmon.errors import SourceError
    from driftmon.sources import open_source
    from driftmon.windows import TimeRange

    if backend == "sqlite":
        pytest.skip("SQLite reads text timestamps")
    fill(engine, [{**row, "ts": row["ts"].strftime("%Y-%m-%d %H:%M:%S")} for row in rows()], log_table(sa.Text))
    source = open_source(config_for(db_url).resolved_monitors()[0], engine)
    with pytest.raises(SourceError, match="column 'ts' of table 'inference_log' is TEXT, not a date/time type"):
        source.profile(TimeRange(START, NOW))


# --- rows of the reference range and the latest window ------------------------------------


def test_an_empty_reference_is_a_problem(engine, db_url):
    fill(engine, rows(reference=0))
    report = connect_checks(config_for(db_url), NOW)
    assert report.problems == [
        "monitors[0].reference: no rows of table 'inference_log' in the reference range "
        "[2024-03-01T00:00:00+00:00, 2024-03-08T00:00:00+00:00): every run would end insufficient_data; "
        f"the newest row is at {report_newest(report)}"]


def report_newest(report) -> str:
    return report.problems[0].rsplit("the newest row is at ", 1)[1]


def test_an_empty_table_is_a_problem_saying_so(engine, db_url):
    fill(engine, [])
    report = connect_checks(config_for(db_url, source={"where": {"model_version": "v3"}}), NOW)
    assert report.problems == [
        "monitors[0].reference: no rows of table 'inference_log' matching source.where in the reference range "
        "[2024-03-01T00:00:00+00:00, 2024-03-08T00:00:00+00:00): every run would end insufficient_data; "
        "the table has no rows at all"]
    assert report.warnings[0].startswith("monitors[0].window: no rows matching source.where in the latest window")


def test_the_where_filter_counts_as_in_runs(engine, db_url):
    fill(engine)
    report = connect_checks(config_for(db_url, source={"where": {"model_version": "v2"}}), NOW)
    assert report.problems and report.problems[0].startswith("monitors[0].reference: no rows of table "
                                                             "'inference_log' matching source.where")


def test_epoch_milliseconds_read_as_seconds(engine, db_url):
    """Year 56,155: the reference is empty, and the fix is named."""
    fill(engine, [{**row, "ts": int(row["ts"].timestamp() * 1000)} for row in rows()], log_table(sa.BigInteger))
    problems = connect_checks(config_for(db_url), NOW).problems
    assert len(problems) == 1 and problems[0].startswith("monitors[0].reference: no rows of table 'inference_log'")
    assert "the newest row is at the year 56,1" in problems[0], problems
    assert "in the future; read as ms it would be 2024-03-08T23:5" in problems[0], problems
    assert problems[0].endswith(": set source.timestamp_unit: ms"), problems
    fixed = connect_checks(config_for(db_url, source={"timestamp_unit": "ms"}), NOW)
    assert fixed.problems == [] and fixed.warnings == []


def test_an_empty_latest_window_is_a_warning_saying_how_old_the_newest_row_is(engine, db_url):
    fill(engine, rows(window=0))
    report = connect_checks(config_for(db_url), NOW)
    assert report.problems == []
    assert len(report.warnings) == 1 and report.warnings[0].startswith(
        "monitors[0].window: no rows in the latest window [2024-03-08T23:00:00+00:00, 2024-03-09T00:00:00+00:00): "
        "its run would end insufficient_data; the newest row is at 2024-03-07T2")
    assert report.warnings[0].endswith(" ago")
    assert report.notes[-1].startswith("m: 200 row(s) in the reference [2024-03-01T00:00:00+00:00, "
                                       "2024-03-08T00:00:00+00:00), 0 in the latest window")


def test_a_newest_row_in_the_future_is_a_warning(engine, db_url):
    """Naive local times (UTC+2 here) are read as UTC: the newest row lies 2 h ahead."""
    future = rows() + [{**rows(1, 0)[0], "ts": NOW + timedelta(hours=2)}]
    fill(engine, future)
    report = connect_checks(config_for(db_url), NOW)
    assert report.problems == []
    assert report.warnings == ["monitors[0].source.timestamp_column: the newest row is at 2024-03-09T02:00:00+00:00, "
                               "2:00:00 in the future; naive timestamps are read as UTC: are they local time?"]


def test_fewer_rows_than_min_samples_is_a_warning(engine, db_url):
    fill(engine, rows(reference=50, window=10))
    warnings = connect_checks(config_for(db_url, min_samples=60), NOW).warnings
    assert warnings == [
        "monitors[0].min_samples: the reference range has 50 row(s), fewer than min_samples (60): every column "
        "would be insufficient_data",
        "monitors[0].min_samples: the latest window has 10 row(s), fewer than min_samples (60): every column "
        "would be insufficient_data"]


# --- the results database -----------------------------------------------------------------


def test_connect_reads_the_results_database_revision(db_url):
    notes = connect_checks(parse_config({"database": {"url": db_url}}, {}), NOW).notes
    assert len(notes) == 1 and notes[0].startswith("results database ") and notes[0].endswith(" (head)"), notes


def test_a_missing_sqlite_results_file_is_not_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = connect_checks(parse_config({"database": {"url": "sqlite:///results.db"}}, {}), NOW)
    assert report.problems == [] and report.notes == [
        "results database results.db does not exist yet: `driftmon db upgrade` or the first run creates it"]
    missing_folder = connect_checks(parse_config({"database": {"url": "sqlite:///absent/results.db"}}, {}), NOW)
    assert missing_folder.problems == [f"database.url: folder {tmp_path / 'absent'} does not exist "
                                       f"(for absent/results.db)"]
    source = connect_checks(config_for("sqlite:///results.db"), NOW)
    assert source.problems == ["monitors[0].source: table 'inference_log' does not exist: its SQLite file "
                               "results.db does not exist (database.url, as source.url is unset)"]
    assert list(tmp_path.iterdir()) == []


def test_a_missing_postgresql_results_database_is_one_clear_problem(postgres_server):
    url = postgres_server.url.set(database="driftmon_no_such_database").render_as_string(hide_password=False)
    problems = connect_checks(parse_config({"database": {"url": url}}, {}), NOW).problems
    assert len(problems) == 1 and problems[0].startswith("database.url: cannot open postgresql")
    assert problems[0].endswith('database "driftmon_no_such_database" does not exist'), problems
    assert problems[0].count("does not exist") == 1


# --- offline: monitors and fixed references ------------------------------------------------


def test_no_monitors_is_a_warning_and_an_empty_list_an_error():
    from driftmon.config import Config
    from driftmon.errors import ConfigError

    assert Config().monitors == []  # configs built in code need none
    assert offline_checks(parse_config({}, {})).warnings == [
        "monitors: none configured: `serve` and `run-once` would monitor nothing"]
    with pytest.raises(ConfigError) as info:
        parse_config({"monitors": []}, {})
    assert info.value.problems == ['monitors: the list is empty: there is nothing to monitor; add at least one '
                                   'monitor (README, "Configuration")']


@pytest.mark.parametrize("end, says", [
    (NOW + timedelta(days=1), "ends in the future"),
    (NOW - timedelta(minutes=30), "overlaps the current window [2024-03-08T23:00:00+00:00, 2024-03-09T00:00:00+00:00)"),
])
def test_a_fixed_reference_overlapping_the_current_window_is_a_warning(end, says):
    reference = {"kind": "fixed", "start": START.isoformat(), "end": end.isoformat()}
    report = offline_checks(config_for("sqlite://", reference=reference), NOW)
    assert report.problems == [] and len(report.warnings) == 1
    assert report.warnings[0].startswith(f"monitors[0].reference: the fixed reference [2024-03-01T00:00:00+00:00, "
                                         f"{end.isoformat()}) {says}")
    assert report.warnings[0].endswith("end it at or before 2024-03-08T23:00:00+00:00, the start of the current window")
    before = {"kind": "fixed", "start": START.isoformat(), "end": WINDOW_START.isoformat()}
    assert offline_checks(config_for("sqlite://", reference=before), NOW).warnings == []
