"""`driftmon demo`: from nothing to a summary showing the injected drift, then serving."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.cli_helpers import driftmon
from tests.live import ROOT, free_port, samples_named, scrape, stop, wait_for, wait_ready

DRIFTED = {"amount", "country", "tenure", "score"}


def summary_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = line.split()
        if cells and cells[0] in DRIFTED | {"age"}:
            rows[cells[0]] = cells
    return rows


def test_demo_detects_the_injected_drift_and_serves(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "driftmon", "demo", "--dir", str(tmp_path / "demo"), "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        wait_ready(port, process, timeout=240)
        metrics = wait_for(lambda: (m := scrape(port)) and len(samples_named(m, "driftmon_kl_divergence")) == 5
                           and m, 60, "every demo column on /metrics")
        status = {dict(k)["feature"]: dict(k)["status"]
                  for k, v in samples_named(metrics, "driftmon_drift_status").items() if v == 1}
        assert status["age"] == "ok"
        assert status["country"] == "critical" and status["score"] == "critical"
    finally:
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        code = process.wait(timeout=60)
        output = process.stdout.read()
        process.stdout.close()
        stop(process)
    assert code == 0
    rows = summary_rows(output)
    assert rows["age"][2] == "ok" and rows["age"][-1] == "never"
    for column in DRIFTED:
        assert rows[column][2] in ("warning", "critical"), output
    assert "0 failed" in output
    assert "Serving http://127.0.0.1:" in output
    config = tmp_path / "demo" / "config.yaml"
    assert driftmon("check-config", "--config", str(config)).returncode == 0


def test_demo_no_serve_exits_after_summary(tmp_path):
    result = driftmon("demo", "--dir", str(tmp_path / "d"), "--no-serve", "--port", str(free_port()))
    assert result.returncode == 0, result.stderr
    rows = summary_rows(result.stdout)
    assert set(rows) == DRIFTED | {"age"}
    assert "Serving" not in result.stdout


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
    assert parse_config(raw).resolved_monitors()[0].kl_direction == "reference_current"


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
