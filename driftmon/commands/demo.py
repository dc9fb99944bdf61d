"""`driftmon demo`: a synthetic inference log with a known drift, monitored end to end.

It seeds an embedded SQLite source with a week of traffic in which, from a
known hour on, ``amount`` grows by 70 %, a new country appears, ``tenure``
goes missing far more often and the prediction ``score`` moves, while ``age``
(the control) stays as it was. The monitor is segmented by the client ``app``:
in the ``kiosk`` app alone (5 % of the traffic) ``session_minutes`` doubles,
a drift the whole population hides (README, "Segments"). It writes a config file the user can copy (default
settings, absolute database paths: it works from any folder), backfills the
monitor over the last two days, prints which columns drifted and since when,
over all traffic and per segment (driftmon/commands/demo_summary.py), then
serves metrics and keeps the traffic flowing.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa
import yaml

from driftmon.errors import ConfigError
from driftmon.store.database import create_db_engine
from driftmon.windows import align_down

log = logging.getLogger(__name__)

MONITOR = "demo_model"
# A 5 % segment must reach min_samples (100) in each 1-hour window: 150 rows on average, and
# fewer than 100 about once in 50,000 windows (Poisson).
ROWS_PER_HOUR = 3000
HISTORY = timedelta(days=7)
BACKFILL = timedelta(days=2)
DRIFT_BEFORE_NOW = timedelta(hours=24)
TRAFFIC_EVERY_SECONDS = 10.0
COUNTRIES = ["DE", "FR", "US", "GB", "NL"]
COUNTRY_SHARES = [.35, .25, .2, .1, .1]
# The segments: client apps and their shares of the traffic (unchanged by the drift).
APPS = ["android", "ios", "web", "partner_api", "kiosk", "smart_tv"]
APP_SHARES = [.34, .28, .2, .08, .05, .05]
DRIFTED_APP = "kiosk"
# log 2 is 1.4 standard deviations of log(session_minutes): the kiosk's KL lies near 0.9 in the
# 150 rows of a window (critical from 0.25), the whole population's near 0.004 (warning from 0.1).
SESSION_GROWTH = 2.0
# Written first into every demo folder: a folder with it is one the demo made, whose
# files it may replace; any other non-empty folder is the user's, and left alone.
MARKER = ".driftmon-demo"
DATABASES = ("inference_log.db", "driftmon.db")
# SQLite's side files, and serve's one-daemon-per-file lock.
DATABASE_SIDE_FILES = ("-journal", "-wal", "-shm", ".lock")

INFERENCE_LOG = sa.Table(
    "inference_log", sa.MetaData(),
    sa.Column("ts", sa.DateTime, index=True),
    sa.Column("model_version", sa.String(10)),
    sa.Column("amount", sa.Double),
    sa.Column("country", sa.String(10)),
    sa.Column("tenure", sa.Double),
    sa.Column("age", sa.Double),
    sa.Column("score", sa.Double),
    sa.Column("app", sa.String(20)),
    sa.Column("session_minutes", sa.Double),
)


@dataclass(frozen=True)
class Timeline:
    """The demo's fixed points in time, all derived from when it was seeded."""

    start: datetime
    reference_end: datetime
    drift_at: datetime
    now: datetime

    @classmethod
    def around(cls, now: datetime) -> Timeline:
        hour = align_down(now, timedelta(hours=1))
        return cls(start=hour - HISTORY, reference_end=hour - timedelta(days=3),
                   drift_at=hour - DRIFT_BEFORE_NOW, now=now)


def traffic(rng: np.random.Generator, start: datetime, end: datetime, drift_at: datetime) -> list[dict]:
    """Synthetic inference-log rows in [start, end), drifted from ``drift_at`` on."""
    seconds = (end - start).total_seconds()
    n = rng.poisson(ROWS_PER_HOUR * seconds / 3600)
    offsets = np.sort(rng.uniform(0, seconds, n))
    drifted = offsets >= (drift_at - start).total_seconds()
    country = np.array(COUNTRIES, dtype=object)[rng.choice(len(COUNTRIES), n, p=COUNTRY_SHARES)]
    country[drifted & (rng.random(n) < 0.35)] = "BR"
    amount = rng.lognormal(4.0, 0.5, n) * np.where(drifted, 1.7, 1.0)
    tenure = rng.exponential(4.0, n)
    tenure_missing = rng.random(n) < np.where(drifted, 0.35, 0.02)
    age = rng.normal(40, 10, n)
    score = np.where(drifted, rng.beta(4, 3, n), rng.beta(2, 5, n))
    app = np.array(APPS, dtype=object)[rng.choice(len(APPS), n, p=APP_SHARES)]
    session = rng.lognormal(1.2, 0.5, n) * np.where(drifted & (app == DRIFTED_APP), SESSION_GROWTH, 1.0)
    first = start.astimezone(UTC).replace(tzinfo=None)  # naive timestamps are UTC
    return [{"ts": first + timedelta(seconds=float(offsets[i])), "model_version": "v3",
             "amount": float(amount[i]), "country": country[i],
             "tenure": None if tenure_missing[i] else float(tenure[i]), "age": float(age[i]),
             "score": float(score[i]), "app": app[i], "session_minutes": float(session[i])}
            for i in range(n)]


def demo_config(directory: Path, timeline: Timeline, host: str, port: int) -> dict:
    """The demo's config: driftmon's defaults where it can, so the demo shows what a user gets, and
    absolute SQLite paths, since a relative one resolves against the working directory and breaks
    once the file is copied."""
    directory = directory.resolve()
    return {
        "database": {"url": f"sqlite:///{directory / 'driftmon.db'}"},
        "compute": {"device": "auto", "dtype": "float64", "threads": 1},
        "server": {"host": host, "port": port, "shutdown_grace": "10s"},
        "defaults": {
            "schedule": {"every": "10m"},
            "window": {"size": "1h"},
            "reference": {"kind": "fixed", "start": timeline.start.isoformat(),
                          "end": timeline.reference_end.isoformat()},
            "smoothing": {"method": "pseudocount", "alpha": 0.5},
            "thresholds": {"statistic": "kl", "warning": 0.1, "critical": 0.25},
            "min_samples": 100,
        },
        "monitors": [{
            "name": MONITOR,
            "source": {"kind": "events", "url": f"sqlite:///{directory / 'inference_log.db'}",
                       "table": "inference_log", "timestamp_column": "ts",
                       "where": {"model_version": "v3"}},
            "features": [
                {"column": "amount", "type": "numeric", "bins": 10, "binning": "quantile"},
                {"column": "country", "type": "categorical", "top_k": 10},
                {"column": "tenure", "type": "numeric", "bins": 8},
                {"column": "age", "type": "numeric", "bins": 10},
                {"column": "score", "type": "numeric", "role": "prediction", "binning": "uniform",
                 "range": [0, 1], "bins": 10},
                {"column": "session_minutes", "type": "numeric", "bins": 10, "binning": "quantile"},
            ],
            "segments": {"by": ["app"]},
        }],
    }


def demo_files(directory: Path) -> list[Path]:
    """Every file a demo writes into ``directory`` (its marker included)."""
    databases = [directory / f"{name}{side}" for name in DATABASES for side in ("", *DATABASE_SIDE_FILES)]
    return [directory / MARKER, directory / "config.yaml", *databases]


def prepare_directory(directory: Path) -> None:
    """A new or empty folder, or one an earlier demo made, emptied of that demo's files
    only; any other non-empty folder is refused (a usage error: exit 2)."""
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).is_file():
            raise ConfigError(
                f"--dir: {directory} is not empty and was not made by `driftmon demo`; the demo "
                "writes only into a new or empty folder (or one it made before), so choose another")
        for path in demo_files(directory):
            path.unlink(missing_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text(
        "This folder was made by `driftmon demo`, which replaces its own files here on each run.\n")


def seed(directory: Path, timeline: Timeline, host: str, port: int, rng: np.random.Generator) -> Path:
    """A fresh demo folder: the source database and the config file; returns its path."""
    prepare_directory(directory)
    engine = create_db_engine(f"sqlite:///{directory / 'inference_log.db'}")
    try:
        INFERENCE_LOG.create(engine)
        with engine.begin() as connection:
            connection.execute(INFERENCE_LOG.insert(), traffic(rng, timeline.start, timeline.now,
                                                               timeline.drift_at))
    finally:
        engine.dispose()
    path = directory / "config.yaml"
    header = ("# driftmon demo configuration, written by `driftmon demo`.\n"
              f"# Drift was injected at {timeline.drift_at.isoformat()} into amount, country,\n"
              f"# tenure and score, and into session_minutes (doubled) in app={DRIFTED_APP} only (5 % of the\n"
              "# traffic); age is the unchanged control. Copy and adapt freely.\n")
    path.write_text(header + yaml.safe_dump(demo_config(directory, timeline, host, port), sort_keys=False))
    return path


class TrafficFeed:
    """Appends fresh drifted traffic while the daemon serves, so live windows have data."""

    def __init__(self, directory: Path, drift_at: datetime, since: datetime, rng: np.random.Generator):
        self.engine = create_db_engine(f"sqlite:///{directory / 'inference_log.db'}")
        self.drift_at, self.since, self.rng = drift_at, since, rng
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="demo-traffic", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)
        self.engine.dispose()

    def _loop(self) -> None:
        while not self.stop_event.wait(TRAFFIC_EVERY_SECONDS):
            now = datetime.now(UTC)
            rows = traffic(self.rng, self.since, now, self.drift_at)
            with self.engine.begin() as connection:
                if rows:
                    connection.execute(INFERENCE_LOG.insert(), rows)
            self.since = now
