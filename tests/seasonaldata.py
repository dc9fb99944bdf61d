"""A seasonal inference log: a daily cycle in values and volume, and NO drift (issue #24's simulation)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import sqlalchemy as sa

from driftmon.store.database import create_db_engine

START = datetime(2024, 3, 1, tzinfo=UTC)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
FEATURES = ("x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8")


def seasonal_rows(rng: np.random.Generator, start: datetime, hours: int, *, rate: float = 300.0,
                  cycle: float = 0.3, volume_cycle: float = 0.0, shift: dict[int, float] | None = None,
                  thin: dict[int, float] | None = None) -> dict[str, np.ndarray]:
    """Hourly blocks of rows: each feature N(cycle·sin(2π·hour/24), 1); ``volume_cycle`` makes the
    hourly rate swing by that share over the day. ``shift``: {hour index: sd added to x1 from then on};
    ``thin``: {hour index: share of that hour's rows kept}."""
    stamps, values = [], []
    for h in range(hours):
        moment = start + h * HOUR
        phase = 2 * np.pi * (moment.hour + 0.5) / 24
        n = int(rng.poisson(rate * (1 + volume_cycle * np.sin(phase))) * (thin or {}).get(h, 1.0))
        block = rng.normal(cycle * np.sin(phase), 1.0, (n, len(FEATURES)))
        block[:, 0] += sum(s for at, s in (shift or {}).items() if h >= at)
        seconds = np.sort(rng.uniform(0, 3600, n))
        stamps.append(np.datetime64(moment.replace(tzinfo=None), "us") + (seconds * 1e6).astype("timedelta64[us]"))
        values.append(block)
    return {"ts": np.concatenate(stamps), "values": np.concatenate(values)}


def write_log(url: str, data: dict[str, np.ndarray], table: str = "seasonal_log") -> None:
    engine = create_db_engine(url)
    try:
        log = sa.Table(table, sa.MetaData(), sa.Column("ts", sa.DateTime),
                       *(sa.Column(name, sa.Double) for name in FEATURES))
        sa.Index(f"ix_{table}_ts", log.c.ts)
        log.metadata.create_all(engine)
        rows = [{"ts": ts.astype(datetime), **dict(zip(FEATURES, map(float, row), strict=True))}
                for ts, row in zip(data["ts"], data["values"], strict=True)]
        with engine.begin() as connection:
            connection.execute(log.insert(), rows)
    finally:
        engine.dispose()


def seasonal_config(results_url: str, source_url: str, reference: dict, **monitor) -> dict:
    return {
        "database": {"url": results_url},
        "defaults": {"schedule": {"every": "1h"}, "window": {"size": "1h"}, "min_samples": 50,
                     "significance": 0.01},
        "monitors": [{
            "name": "seasonal", "reference": reference,
            "source": {"kind": "events", "url": source_url, "table": "seasonal_log", "timestamp_column": "ts"},
            "features": [{"column": name, "bins": 10} for name in FEATURES], **monitor,
        }],
    }


def run_window(config, window):
    """One window of the config's first monitor through the pipeline, as ``run-once`` runs it."""
    from driftmon import app as application

    app = application.open_app(config)
    try:
        return application.run_window(app, config.resolved_monitors()[0], window, trigger="run_once")
    finally:
        app.close()


def add_app_segment(url: str, table: str = "seasonal_log") -> None:
    """A segment column ``app``: 'web' for rows on an even second of the minute, 'ios' for the others."""
    engine = create_db_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN app TEXT"))
            connection.execute(sa.text(f"UPDATE {table} SET app = CASE WHEN CAST(strftime('%S', ts) AS INTEGER) "
                                       "% 2 = 0 THEN 'web' ELSE 'ios' END"))
    finally:
        engine.dispose()
