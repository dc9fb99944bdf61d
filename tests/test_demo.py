"""`driftmon demo`: from nothing to a summary showing the injected drift, then serving."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from tests.cli_helpers import driftmon
from tests.live import ROOT, free_port, samples_named, scrape, stop, wait_for, wait_ready

DRIFTED = {"amount", "country", "tenure", "score"}
CONTROLS = {"age", "session_minutes"}  # session_minutes drifts in app=kiosk only: ok over all traffic
COLUMNS = DRIFTED | CONTROLS


def summary_tables(text: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The summary's rows by column: over all traffic, and per segment."""
    whole, segments, table = {}, {}, None
    for line in text.splitlines():
        if line.startswith("Over all traffic"):
            table = whole
        elif line.startswith("Per segment of "):
            table = segments
        elif not line.strip():
            table = None
        elif table is not None and line.split()[0] != "column":
            table[line.split()[0]] = line.split()
    return whole, segments


def drift_time(text: str) -> datetime:
    found = re.search(r"Injected drift at (\d{4}-\d\d-\d\d \d\d:\d\d) UTC", text)
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def whole_population(samples: dict[tuple, float]) -> dict[tuple, float]:
    """The series of the whole population (per-segment series carry a ``segment`` label)."""
    return {labels: value for labels, value in samples.items() if "segment" not in dict(labels)}


def test_demo_detects_the_injected_drift_and_serves(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "driftmon", "demo", "--dir", str(tmp_path / "demo"), "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        wait_ready(port, process, timeout=240)
        metrics = wait_for(lambda: (m := scrape(port)) and COLUMNS <= {
            dict(k)["feature"] for k in whole_population(samples_named(m, "driftmon_kl_divergence"))} and m,
            60, "every demo column on /metrics")
        status = {dict(k)["feature"]: dict(k)["status"]
                  for k, v in whole_population(samples_named(metrics, "driftmon_drift_status")).items() if v == 1}
        assert status["age"] == "ok" and status["session_minutes"] == "ok"
        assert status["country"] == "critical" and status["score"] == "critical"
    finally:
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        code = process.wait(timeout=60)
        output = process.stdout.read()
        process.stdout.close()
        stop(process)
    assert code == 0
    whole, _ = summary_tables(output)
    assert whole["age"][2] == "ok" and whole["age"][-1] == "never"
    for column in DRIFTED:
        assert whole[column][2] in ("warning", "critical"), output
    assert "0 failed" in output
    assert "Serving http://127.0.0.1:" in output
    config = tmp_path / "demo" / "config.yaml"
    assert driftmon("check-config", "--config", str(config)).returncode == 0


def test_demo_no_serve_exits_after_summary_showing_the_drift_of_one_segment(tmp_path):
    """The kiosk app (5 % of the traffic) drifts alone: ok over all traffic, critical in its segment."""
    result = driftmon("demo", "--dir", str(tmp_path / "d"), "--no-serve", "--port", str(free_port()))
    assert result.returncode == 0, result.stderr
    assert "Serving" not in result.stdout
    whole, segments = summary_tables(result.stdout)
    assert set(whole) == COLUMNS | {"segment"} and set(segments) == COLUMNS, result.stdout
    assert whole["session_minutes"][2] == "ok" and whole["session_minutes"][-1] == "never", result.stdout
    assert whole["segment"][2] == "ok", result.stdout  # the traffic mix over apps does not move
    # column, critical, warning, segment, share, %, KL, since (date, time, UTC)
    column, critical, _, segment, share, _, kl, *since = segments["session_minutes"]
    assert (critical, segment) == ("1", "app=kiosk"), result.stdout
    assert float(kl) >= 0.25
    drift_at = drift_time(result.stdout)
    alarmed = datetime.strptime(" ".join(since[:2]), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    assert drift_at < alarmed <= drift_at + timedelta(hours=1), result.stdout
    assert segments["age"][1] == "0", result.stdout  # the control is critical in no segment
    for drifted in DRIFTED:
        assert segments[drifted][1] == "6", result.stdout  # a drift of all traffic shows in every app
    assert (f"Only in a segment: session_minutes is ok over all traffic (KL {float(whole['session_minutes'][3]):.4f}),"
            f" critical in app=kiosk ({share} % of the traffic, KL {kl}) since") in result.stdout
    assert "Only in a segment: age" not in result.stdout
    check_against_the_data(tmp_path / "d", float(share))


def check_against_the_data(folder: Path, share: float) -> None:
    """The stored latest window says the same as the summary, and the kiosk's share is that of its rows."""
    with sqlite3.connect(folder / "driftmon.db") as results:
        stored = pd.read_sql("SELECT * FROM results WHERE \"column\" = 'session_minutes' AND window_end = "
                             "(SELECT MAX(window_end) FROM results)", results)
    with sqlite3.connect(folder / "inference_log.db") as source:
        log = pd.read_sql("SELECT ts, app FROM inference_log", source, parse_dates=["ts"])
    status = dict(zip(stored["segment_key"], stored["status"], strict=True))
    assert status[""] == "ok" and status["app=kiosk"] == "critical"
    assert [key for key, value in status.items() if value == "critical"] == ["app=kiosk"]
    end = pd.Timestamp(stored["window_end"].iloc[0])
    window = log[(log["ts"] >= end - pd.Timedelta(hours=1)) & (log["ts"] < end)]
    assert len(window) == stored.loc[stored["segment_key"] == "", "samples_current"].iloc[0]
    assert abs(share - 100 * (window["app"] == "kiosk").mean()) <= 0.05 + 1e-9  # printed to 0.1


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    """`--dir .` in a checkout once deleted the checkout: a folder without the demo's
    marker is the user's, and the demo writes nothing there."""
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "src").mkdir()
    result = driftmon("demo", "--dir", str(tmp_path), "--no-serve", "--port", str(free_port()))
    assert result.returncode == 2, result.stderr
    assert f"--dir: {tmp_path} is not empty and was not made by `driftmon demo`" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "src"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_demo_replaces_only_the_files_it_made(tmp_path):
    from driftmon.commands.demo import MARKER, demo_files, prepare_directory

    prepare_directory(tmp_path / "new")  # a new folder: made, and marked
    assert [p.name for p in (tmp_path / "new").iterdir()] == [MARKER]
    prepare_directory(tmp_path / "new")  # its own: fine again
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_directory(empty)
    assert (empty / MARKER).is_file()

    earlier = tmp_path / "earlier"
    prepare_directory(earlier)
    for path in demo_files(earlier)[1:]:
        path.write_text("from the earlier demo")
    (earlier / "my-notes.md").write_text("mine")  # the user's, added later
    prepare_directory(earlier)
    assert sorted(p.name for p in earlier.iterdir()) == sorted([MARKER, "my-notes.md"])
    assert (earlier / "my-notes.md").read_text() == "mine"


def test_demo_config_keeps_the_default_kl_direction(tmp_path):
    """The demo once set `kl_direction: current_reference` so that its injected shift topped
    `explain`; it shows what a user gets with the defaults instead (explain ranks by movement)."""
    from datetime import UTC, datetime

    from driftmon.commands.demo import Timeline, demo_config
    from driftmon.config_file import parse_config

    raw = demo_config(tmp_path, Timeline.around(datetime(2024, 3, 8, tzinfo=UTC)), "127.0.0.1", 9847)
    assert "kl_direction" not in raw["defaults"] and "kl_direction" not in raw["monitors"][0]
    monitor = parse_config(raw).resolved_monitors()[0]
    assert monitor.kl_direction == "reference_current"
    assert monitor.segments.by == ["app"] and monitor.segments.max == 50  # the defaults but for `by`


def test_a_copy_of_the_demo_config_works_from_anywhere(tmp_path, monkeypatch):
    """The README calls demo/config.yaml a real file to copy: its SQLite paths were relative to the
    working directory (`--dir demo` is), so a copy run from anywhere else found no source."""
    import shutil
    from datetime import UTC, datetime
    from pathlib import Path

    import numpy as np
    import yaml

    from driftmon.commands.demo import Timeline, seed

    monkeypatch.chdir(tmp_path)
    written = seed(Path("demo"), Timeline.around(datetime.now(UTC)), "127.0.0.1", 9847, np.random.default_rng(1))
    urls = yaml.safe_load(written.read_text())
    for url in (urls["database"]["url"], urls["monitors"][0]["source"]["url"]):
        assert Path(url.removeprefix("sqlite:///")).is_absolute(), url
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "somewhere-else").mkdir()
    copy = Path(shutil.copy(written, tmp_path / "elsewhere" / "config.yaml"))
    result = driftmon("run-once", "--config", str(copy), cwd=tmp_path / "somewhere-else")
    assert result.returncode == 1, result.stdout + result.stderr  # the injected drift is critical
    assert "demo_model" in result.stdout and "FAILED" not in result.stdout
    assert (tmp_path / "demo" / "driftmon.db").is_file()  # the results went where the config says
    assert list((tmp_path / "somewhere-else").iterdir()) == []


def column_result(column: str, window, status: str, kl: float, samples: float, segment: dict | None = None):
    from driftmon.outcomes import ColumnResult

    return ColumnResult(monitor="m", column=column, role="feature", window=window, reference=window,
                        samples_current=samples, samples_reference=1000, missing_current=0, missing_ratio=0,
                        kl=kl, psi=2 * kl, js=kl / 4, statistic="kl", threshold_warning=0.1,
                        threshold_critical=0.25, status=status, segment=segment)


def test_the_summary_dates_a_segment_drift_from_its_latest_unbroken_alarm():
    """A chance warning of a segment before the drift (the false discovery rate allows some) is not
    the start of the drift: the segment table dates it from the latest unbroken run of alarms."""
    from driftmon.commands.demo_summary import alarm_since, summary
    from driftmon.outcomes import RunOutcome
    from driftmon.windows import TimeRange

    start = datetime(2024, 3, 8, tzinfo=UTC)
    statuses = ["warning", "ok", "warning", "critical"]  # of session_minutes in app=kiosk, window by window
    runs = []
    for i, status in enumerate(statuses):
        window = TimeRange(start + i * timedelta(minutes=10), start + i * timedelta(minutes=10) + timedelta(hours=1))
        kiosk = column_result("session_minutes", window, status, 0.3 + i, 50, {"app": "kiosk"})
        web = column_result("session_minutes", window, "ok", 0.01, 950, {"app": "web"})
        runs.append(RunOutcome("m", window, "ok", [column_result("session_minutes", window, "ok", 0.002, 1000),
                                                   kiosk, web]))
    assert alarm_since(runs, "session_minutes", "app=kiosk") == runs[2].window.end
    assert alarm_since(runs, "session_minutes", "app=web") is None
    text = summary(runs, start)
    _, segments = summary_tables(text)
    assert segments["session_minutes"] == ["session_minutes", "1", "0", "app=kiosk", "5.0", "%", "3.3000",
                                           "2024-03-08", "01:20", "UTC"]
    assert ("Only in a segment: session_minutes is ok over all traffic (KL 0.0020), critical in app=kiosk "
            "(5.0 % of the traffic, KL 3.3000) since 2024-03-08 01:20 UTC.") in text
    pooled_alarm = [RunOutcome("m", r.window, "ok", [column_result("session_minutes", r.window, "critical", 0.3, 1000),
                                                     *r.results[1:]]) for r in runs]
    assert "Only in a segment" not in summary(pooled_alarm, start)
