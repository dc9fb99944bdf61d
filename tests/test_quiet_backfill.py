"""What scrolls by in a backfill and the demo: no line per window at the default level (the bar,
progress lines off a terminal and the closing summary stand for them), failures always at ERROR,
each window's line at DEBUG; `serve`'s runs keep their INFO line. The summary a backfill ends with
is the demo's (driftmon/commands/demo_summary.py), one block per monitor."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from driftmon import app as application
from driftmon.commands.demo_summary import backfill_summary, monitor_summary
from driftmon.commands.runs import serving_banner
from driftmon.multivariate.result import MultivariateResult
from driftmon.outcomes import RunOutcome
from driftmon.stats.volume import VolumeCheck
from driftmon.windows import TimeRange
from tests.cli_helpers import driftmon
from tests.sourcedata import create_and_fill, events_table
from tests.test_pipeline import (
    DAY,
    FEATURES,
    HOUR,
    REFERENCE,
    START,
    WINDOW,
    drift_log,  # noqa: F401  (a fixture)
    drifted_rows,
    make_config,
)
from tests.test_run_commands import run_in_terminal, terminal_lines

COLUMNS = [f["column"] for f in FEATURES]
WINDOWS = 26  # hourly windows in [WINDOW.start - DAY, WINDOW.start + 2 h]
ALARMS = ("warning", "critical")
SQLITE = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


@pytest.fixture
def config_path(db_url, engine, tmp_path) -> str:
    """`fraud` (its drifted hour is WINDOW; a volume check and multivariate thresholds that alarm
    there) and `gone`, whose table does not exist: every one of its windows fails."""
    rng = np.random.default_rng(5)
    rows = drifted_rows(rng, 2000, START, 7 * DAY, False) + drifted_rows(rng, 400, WINDOW.start, HOUR, True)
    rows += drifted_rows(rng, 400, WINDOW.end, HOUR, False)  # the next hour is calm
    create_and_fill(engine, events_table(tenure=sa.Double, age=sa.Double), rows)
    config = {
        "database": {"url": db_url},
        "defaults": {"schedule": {"every": "1h"}, "min_samples": 50,
                     "reference": {"kind": "fixed", "start": REFERENCE.start.isoformat(),
                                   "end": REFERENCE.end.isoformat()}},
        "monitors": [
            {"name": "fraud", "features": FEATURES, "volume": {},
             "multivariate": {"thresholds": {"reconstruction_error": {"lower": 0.01, "upper": 1.0},
                                             "gaussian_kl": {"upper": 1.0}}},
             "source": {"kind": "events", "table": "inference_log", "timestamp_column": "ts"}},
            {"name": "gone", "features": [{"column": "x"}],
             "source": {"kind": "events", "table": "no_such_table", "timestamp_column": "ts"}},
        ],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def backfill_args(path: str) -> tuple[str, ...]:
    return ("backfill", "--config", path, "--start", (WINDOW.start - DAY).isoformat(),
            "--end", (WINDOW.start + 2 * HOUR).isoformat())


def json_events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def block(stdout: str, monitor: str) -> list[str]:
    """The summary's lines of one monitor: from its ``Monitor NAME:`` line to the next monitor's."""
    lines = stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(f"Monitor {monitor}:"))
    end = next((i for i in range(first + 1, len(lines))
                if lines[i].startswith(("Monitor ", "backfilled "))), len(lines))
    return lines[first:end]


def whole_rows(lines: list[str]) -> dict[str, list[str]]:
    """The ``Over all traffic`` table's rows by column."""
    start = lines.index("Over all traffic (latest window):") + 2  # past the header
    end = lines.index("", start)
    return {line.split()[0]: line.split() for line in lines[start:end]}


def when(moment) -> str:
    return "never" if moment is None or pd.isna(moment) else f"{pd.Timestamp(moment):%Y-%m-%d %H:%M} UTC"


def first_alarm(frame: pd.DataFrame):
    alarmed = frame[frame["status"].isin(ALARMS)]
    return alarmed["window_end"].min() if len(alarmed) else None


def stored(engine, query: str) -> pd.DataFrame:
    with engine.connect() as connection:
        return pd.read_sql(sa.text(query), connection, parse_dates=["window_end"])


@SQLITE
def test_backfill_logs_no_line_per_window_and_ends_with_the_summary(config_path, engine):
    result = driftmon(*backfill_args(config_path))
    assert result.returncode == 3, result.stdout + result.stderr  # `gone` failed
    events = json_events(result.stderr)  # JSON: stderr is not a terminal
    assert not [e for e in events if e["event"] == "run.finished"], result.stderr
    assert not [e for e in events if e["level"] in ("debug", "info") and "window_end" in e], result.stderr
    started = [e for e in events if e["event"] == "backfill.started"]
    assert [(e["level"], e["windows"]) for e in started] == [("info", 2 * WINDOWS)]
    # Failures stay visible: one ERROR line per failed window.
    failed = [e for e in events if e["event"] == "run.failed"]
    assert len(failed) == WINDOWS and {(e["level"], e["monitor"]) for e in failed} == {("error", "gone")}
    assert "table 'no_such_table' does not exist" in failed[0]["message"]

    lines = block(result.stdout, "fraud")
    assert lines[0] == (f"Monitor fraud: {WINDOWS} window(s), 0 failed; the latest computed ends "
                        f"{when(WINDOW.end + HOUR)}.")
    # Every column's status in the latest window and its first alarm, as the store has them.
    results = stored(engine, "SELECT \"column\", window_end, status FROM results "
                             "WHERE monitor = 'fraud' AND segment_key = ''")
    assert results["window_end"].nunique() == WINDOWS
    latest = results[results["window_end"] == results["window_end"].max()].set_index("column")["status"]
    rows = whole_rows(lines)
    assert list(rows) == COLUMNS
    for column, row in rows.items():
        alarm = row[-1] if row[-1] == "never" else " ".join(row[-3:])  # "never" or "2024-03-08 01:00 UTC"
        assert (row[2], alarm) == (latest[column], when(first_alarm(results[results["column"] == column]))), lines
    assert " ".join(rows["amount"][-3:]) == when(WINDOW.end)  # the drifted hour's alarm
    assert rows["age"][-1] == "never"  # the control never alarms
    # The volume and multivariate lines, each with its latest status and first alarm.
    health = stored(engine, "SELECT window_end, status FROM window_health WHERE monitor = 'fraud'")
    multivariate = stored(engine, "SELECT window_end, status FROM multivariate_results WHERE monitor = 'fraud'")
    last = health["window_end"].max()
    volume = next(line for line in lines if line.startswith("fraud: volume "))
    assert volume.startswith(f"fraud: volume {health.loc[health['window_end'] == last, 'status'].item()}: ")
    assert volume.endswith(f"; first alarm {when(first_alarm(health))}") and first_alarm(health) is not None
    line = next(line for line in lines if line.startswith("fraud: multivariate "))
    assert multivariate.sort_values("window_end")["status"].iloc[-2:].tolist() == ["critical", "ok"]
    assert line.startswith("fraud: multivariate ok: reconstruction error ")
    assert line.endswith(f"; first alarm {when(WINDOW.end)}")

    assert block(result.stdout, "gone")[0] == (f"Monitor gone: {WINDOWS} window(s), {WINDOWS} failed; "
                                               "no window computed (each failure is logged above).")
    assert result.stdout.splitlines()[-1].startswith(f"backfilled {2 * WINDOWS} window(s): {WINDOWS} failed")

    again = driftmon(*backfill_args(config_path), "--monitor", "fraud")  # every window stored: no summary
    assert again.returncode == 0 and again.stdout.splitlines() == ["backfilled 0 window(s): 0 failed, "
                                                                   "0 with critical drift"], again.stdout


@SQLITE
def test_debug_level_shows_a_line_per_window(config_path):
    result = driftmon(*backfill_args(config_path), env={"DRIFTMON_LOG_LEVEL": "debug"})
    assert result.returncode == 3, result.stderr
    events = json_events(result.stderr)
    finished = [e for e in events if e["event"] == "run.finished"]
    assert len(finished) == WINDOWS and {(e["level"], e["monitor"]) for e in finished} == {("debug", "fraud")}
    assert sorted(e["window_end"] for e in finished)[-1] == (WINDOW.end + HOUR).isoformat()
    assert sum(e["event"] == "run.failed" and e["level"] == "error" for e in events) == WINDOWS


@SQLITE
def test_on_a_terminal_the_bar_and_the_summary_stand_for_the_windows(config_path):
    code, output = run_in_terminal(backfill_args(config_path))
    assert code == 3, output
    assert re.search(rf"100%\|[^\n]*\| {2 * WINDOWS}/{2 * WINDOWS}", output), output  # the bar was shown
    shown = terminal_lines(output)
    assert not [line for line in shown if "monitor run finished" in line], output
    assert len([line for line in shown if re.match(r"\d\d:\d\d:\d\d ERROR +monitor run failed", line)]) == WINDOWS
    assert any(line.startswith("Monitor fraud: ") for line in shown) and "Over all traffic (latest window):" in shown
    assert not [line for line in shown if "backfill of" in line]  # the bar says it: no progress lines


def test_pipeline_logs_a_backfill_window_at_debug_and_a_scheduled_one_at_info(db_url, drift_log, caplog):  # noqa: F811
    """`serve` runs with the default trigger: its line per run stays INFO; failures are ERROR whatever
    asked for the run."""
    app = application.open_app(make_config(db_url, extra_monitors=[{
        "name": "gone", "features": [{"column": "x"}],
        "source": {"kind": "events", "table": "no_such_table", "timestamp_column": "ts"}}]))
    fraud, gone = app.config.resolved_monitors()
    earlier = TimeRange(WINDOW.start - HOUR, WINDOW.start)
    try:
        with caplog.at_level(logging.DEBUG, logger="driftmon.pipeline"):
            application.run_window(app, fraud, WINDOW, trigger="schedule")
            application.run_window(app, fraud, earlier, trigger="backfill")
            application.run_window(app, fraud, earlier, trigger="recount", recount=True)
            application.run_window(app, gone, WINDOW, trigger="backfill")
            app.pipeline.run(fraud, app.config.source_url(fraud.source), WINDOW)  # as the daemon calls it
    finally:
        app.close()
    levels = [(r.event, r.levelname) for r in caplog.records
              if getattr(r, "event", None) in ("run.finished", "run.failed")]
    assert levels == [("run.finished", "INFO"), ("run.finished", "DEBUG"), ("run.finished", "DEBUG"),
                      ("run.failed", "ERROR"), ("run.finished", "INFO")]


def test_progress_lines_stand_for_the_bar_off_a_terminal(db_url, drift_log, caplog, monkeypatch):  # noqa: F811
    monkeypatch.setattr(application, "PROGRESS_EVERY_SECONDS", 0.0)  # a line after every window
    app = application.open_app(make_config(db_url))
    try:
        with caplog.at_level(logging.DEBUG):
            done = application.backfill_with_progress(app, app.config.resolved_monitors(),
                                                      WINDOW.start - 3 * HOUR, WINDOW.end)
    finally:
        app.close()
    assert len(done.outcomes) == 4
    lines = [r for r in caplog.records if getattr(r, "event", "").startswith("backfill.")]
    assert [(r.event, r.levelname, getattr(r, "done", None)) for r in lines] == [
        ("backfill.started", "INFO", None), *(("backfill.progress", "INFO", n) for n in range(1, 5))]
    assert [r.getMessage() for r in lines][::4] == ["backfill of 4 window(s) started",
                                                    "backfill: 4 of 4 window(s) done"]


# --- the summary itself ---------------------------------------------------------------


def _volume(status: str) -> VolumeCheck:
    return VolumeCheck(rows=100, reference_rows=700, share=1 / 7, expected=100.0, change=0.0, p_value=1.0,
                       status=status)


def _multivariate(window: TimeRange, status: str) -> MultivariateResult:
    return MultivariateResult(monitor="m", window=window, reference=window, rows=100, reconstruction_error=0.8,
                              sampling_error=0.01, threshold_lower=0.7, threshold_upper=0.9, gaussian_kl=0.1,
                              gaussian_kl_threshold=0.5, status=status, fit_key="f", fingerprint="p",
                              contributions={"residuals": [["amount", 0.3, 0.1]]})


def test_the_summary_names_the_latest_volume_and_multivariate_status_and_their_first_alarm():
    from tests.test_demo import column_result

    start = datetime(2024, 3, 8, tzinfo=UTC)
    runs = []
    for i, (volume, multivariate) in enumerate([("ok", "ok"), ("warning", "ok"), ("ok", "critical"),
                                                ("ok", "insufficient_data")]):
        window = TimeRange(start + i * HOUR, start + (i + 1) * HOUR)
        runs.append(RunOutcome("m", window, "ok", [column_result("amount", window, "ok", 0.01, 100)],
                               volume=_volume(volume), multivariate=_multivariate(window, multivariate)))
    failed = RunOutcome("m", TimeRange(start + 4 * HOUR, start + 5 * HOUR), "failed", error="monitor 'm': gone")
    lines = monitor_summary([*reversed(runs), failed])  # in any order; a failed window is left out
    assert lines[lines.index("") + 1:] == [
        "m: volume ok: 100 rows, expected 100 (+0.0 %), p 1, newest row at -; first alarm 2024-03-08 02:00 UTC",
        "m: multivariate insufficient_data: reconstruction error 0.8000 ± 0.0100, band (0.7000, 0.9000); "
        "Gaussian KL 0.1000 (threshold 0.5000); residuals moved most in amount; first alarm 2024-03-08 03:00 UTC"]
    text = backfill_summary([*runs, failed])
    assert text.splitlines()[0] == "Monitor m: 5 window(s), 1 failed; the latest computed ends 2024-03-08 04:00 UTC."
    assert backfill_summary([]) == ""
    # Without a volume check or multivariate drift, the table is all there is.
    plain = [RunOutcome("m", r.window, "ok", r.results) for r in runs]
    assert "" not in monitor_summary(plain) and len(monitor_summary(plain)) == 3


def test_the_summary_shows_text_from_the_data_escaped():
    from tests.test_demo import column_result

    window = TimeRange(datetime(2024, 3, 8, tzinfo=UTC), datetime(2024, 3, 8, 1, tzinfo=UTC))
    text = backfill_summary([RunOutcome("m\x1b[2J", window, "ok", [column_result("a\r\nb", window, "ok", 0.1, 9)])])
    assert "\x1b" not in text and "\r" not in text and "a\\x0d\\x0ab" in text and "m\\x1b[2J" in text


def test_the_demo_banner_names_the_report_and_the_index():
    banner = serving_banner("127.0.0.1", 9847, Path("demo/config.yaml"))
    assert "Serving http://127.0.0.1:9847/ (config: demo/config.yaml); Ctrl-C stops." in banner
    urls = re.findall(r"^  (http://\S+)", banner, re.MULTILINE)
    assert urls == ["http://127.0.0.1:9847/report/demo_model", "http://127.0.0.1:9847/report",
                    "http://127.0.0.1:9847/metrics", "http://127.0.0.1:9847/"]
    assert "http://[::1]:9847/report" in serving_banner("::1", 9847, "c.yaml")
