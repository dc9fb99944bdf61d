"""``driftmon.results``/``runs`` and ``driftmon.Monitor``: the stored history, and the daemon agreeing with compare().

The same rows as DataFrames (``compare``) and as a source table (``driftmon
backfill``, then ``results``) give the same statistics to 1e-12; ``results``
returns what ``run-once`` stored and printed, with its documented dtypes.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

import driftmon
from driftmon.api.history import RESULT_HISTORY_COLUMNS, RUN_COLUMNS
from tests.apidata import FEATURES, edge_frames
from tests.cli_helpers import driftmon as run_cli

REFERENCE_START, REFERENCE_END = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 8, tzinfo=UTC)
WINDOW_END = datetime(2024, 3, 8, 12, tzinfo=UTC)
STATISTICS = ("kl", "psi", "js", "p_value", "q_value")


def _python(value):
    """A frame's cell as the database driver takes it: NA and NaN as NULL, numpy scalars as Python's."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def write_source(path: Path, reference: pd.DataFrame, current: pd.DataFrame, seed: int = 5) -> str:
    """The frames as an inference log: the reference's rows over its week, the current's in the window."""
    rng = np.random.default_rng(seed)
    url = f"sqlite:///{path}"
    table = sa.Table("orders", sa.MetaData(), sa.Column("ts", sa.DateTime), sa.Column("amount", sa.Double),
                     sa.Column("country", sa.String), sa.Column("tier", sa.Integer), sa.Column("score", sa.Double),
                     sa.Column("plan", sa.String), sa.Column("device", sa.String),
                     sa.Column("loyal", sa.Boolean), sa.Column("clicks", sa.Integer))
    engine = sa.create_engine(url)
    table.metadata.create_all(engine)
    rows = []
    for frame, start, span in ((reference, REFERENCE_START, REFERENCE_END - REFERENCE_START),
                               (current, WINDOW_END - timedelta(hours=1), timedelta(hours=1))):
        seconds = rng.uniform(0, span.total_seconds() - 1, len(frame))
        for offset, record in zip(seconds, frame.astype(object).to_dict("records"), strict=True):
            moment = (start + timedelta(seconds=float(offset))).replace(tzinfo=None)
            rows.append({"ts": moment, **{k: _python(v) for k, v in record.items()}})
    with engine.begin() as connection:
        connection.execute(table.insert(), rows)
    engine.dispose()
    return url


def write_config(path: Path, results_url: str, source_url: str, features=FEATURES, **settings) -> Path:
    config = {
        "database": {"url": results_url},
        "compute": {"device": "cpu"},
        "monitors": [{
            "name": "shop",
            "source": {"kind": "events", "url": source_url, "table": "orders", "timestamp_column": "ts"},
            "features": features,
            "schedule": {"every": "1h"}, "window": {"size": "1h"},
            "reference": {"kind": "fixed", "start": REFERENCE_START.isoformat(), "end": REFERENCE_END.isoformat()},
            **settings,
        }],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    reference, current = edge_frames(seed=8, n=2_000)
    return reference, current.head(700)


@pytest.fixture
def shop(tmp_path, frames, db_url) -> Path:
    source = write_source(tmp_path / "source.db", *frames)
    return write_config(tmp_path / "config.yaml", db_url, source)


def test_backfill_then_results_equals_compare(shop, frames):
    done = run_cli("backfill", "--config", str(shop), "--start", "2024-03-08T11:00:00", "--end", "2024-03-08T12:00:00")
    assert done.returncode in (0, 1), done.stderr
    stored = driftmon.results(shop, "shop")
    computed = driftmon.compare(*frames, FEATURES).to_df()
    assert list(stored.feature) == list(computed.feature)
    for (_, row), (_, want) in zip(stored.iterrows(), computed.iterrows(), strict=True):
        for name in STATISTICS:
            assert abs(row[name] - want[name]) <= 1e-12 * max(1.0, abs(want[name])), (row.feature, name)
        assert (row.status, row.samples_reference, row.samples_current, row.missing_ratio) == \
               (want.status, want.samples_reference, want.samples_current, want.missing_ratio)


def test_results_round_trip_run_once(shop):
    done = run_cli("run-once", "--config", str(shop), "--at", "2024-03-08T12:00:00Z", "--output", "json")
    assert done.returncode in (0, 1), done.stderr
    printed = [o for o in json.loads(done.stdout) if o["column"] not in (None, "__volume__")]
    stored = driftmon.results(shop, "shop")
    assert dict(stored.dtypes.astype(str)) == RESULT_HISTORY_COLUMNS
    assert len(stored) == len(printed) == len(FEATURES)
    for (_, row), shown in zip(stored.iterrows(), printed, strict=True):
        assert row.feature == shown["column"] and row.role == shown["role"] and row.status == shown["status"]
        assert row.window_end == pd.Timestamp(shown["window_end"]) == pd.Timestamp(WINDOW_END)
        assert row.reference_start == pd.Timestamp(REFERENCE_START)
        for name in ("kl", "psi", "js", "p_value", "q_value", "samples_current", "samples_reference",
                     "missing_ratio"):
            assert row[name] == shown[name], name
        assert pd.isna(row.segment)
    history = driftmon.runs(shop, "shop")
    assert dict(history.dtypes.astype(str)) == RUN_COLUMNS
    assert list(history.status) == ["ok"] and list(history.trigger) == ["run_once"]
    assert history.run_id[0] == stored.run_id[0]


def test_results_bounds_are_window_ends_and_naive_is_utc(shop):
    assert run_cli("backfill", "--config", str(shop), "--start", "2024-03-08T09:00:00",
                   "--end", "2024-03-08T12:00:00").returncode in (0, 1)
    every = driftmon.results(shop, "shop")
    assert sorted(set(every.window_end)) == [pd.Timestamp(WINDOW_END - timedelta(hours=h)) for h in (2, 1, 0)]
    later = driftmon.results(shop, "shop", start="2024-03-08T10:00:00", end=datetime(2024, 3, 8, 12))
    assert sorted(set(later.window_end)) == [pd.Timestamp(WINDOW_END - timedelta(hours=1)), pd.Timestamp(WINDOW_END)]
    assert driftmon.results(shop, "shop", end="2024-03-08T09:59:59+00:00").empty
    assert list(driftmon.results(shop, "shop", end="2024-03-08T09:59:59+00:00").columns) == \
           list(RESULT_HISTORY_COLUMNS)


def test_monitor_run_is_run_once(shop):
    monitor = driftmon.Monitor.from_config(shop, "shop")
    comparison = monitor.run(at="2024-03-08T12:30:00")  # naive: UTC
    assert comparison.window.end == WINDOW_END
    stored = driftmon.results(shop, "shop")
    frame = comparison.to_df()
    for name in STATISTICS:
        assert stored[name].equals(frame[name]), name
    assert list(driftmon.runs(shop, "shop").trigger) == ["run_once"]
    assert comparison.explain("amount").psi_term.sum() > 0


def test_monitor_run_raises_what_run_once_exits_3_for(tmp_path, db_url):
    config = write_config(tmp_path / "config.yaml", db_url, f"sqlite:///{tmp_path / 'empty.db'}")
    monitor = driftmon.Monitor.from_config(config, "shop")
    with pytest.raises(driftmon.SourceError, match="orders"):
        monitor.run(at=WINDOW_END)
    runs = driftmon.runs(config, "shop")
    assert list(runs.status) == ["failed"] and "orders" in runs.error[0]
    with pytest.raises(driftmon.ConfigError, match="in the future"):
        monitor.run(at=datetime.now(UTC) + timedelta(days=1))


def test_history_needs_a_results_database_and_a_known_monitor(tmp_path):
    config = write_config(tmp_path / "config.yaml", f"sqlite:///{tmp_path / 'nothing.db'}",
                          f"sqlite:///{tmp_path / 'source.db'}")
    with pytest.raises(driftmon.StoreError, match="no results database"):
        driftmon.results(config, "shop")
    assert not (tmp_path / "nothing.db").exists()  # reading never creates one
    with pytest.raises(driftmon.ConfigError, match="no monitor named nope"):
        driftmon.runs(config, "nope")
    with pytest.raises(driftmon.ConfigError, match="cannot read config file"):
        driftmon.results(tmp_path / "missing.yaml", "shop")
