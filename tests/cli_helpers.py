"""Run the real ``driftmon`` command line as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Every command that reads a config, with the arguments it needs, for tests that run them all
# (monitor "m", times in 2024).
COMMANDS = {
    "check-config": ["check-config"],
    "check-config --connect": ["check-config", "--connect"],
    "run-once": ["run-once"],
    "backfill": ["backfill", "--start", "2024-01-01T00:00:00", "--end", "2024-01-01T02:00:00"],
    "serve": ["serve"],
    "explain": ["explain", "--monitor", "m"],
    "report": ["report", "--monitor", "m", "--out", "report.html"],
    "db upgrade": ["db", "upgrade"],
    "db status": ["db", "status"],
}


def driftmon(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTMON_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "driftmon", *args],
        cwd=cwd or ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
