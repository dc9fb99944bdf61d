"""One definition of the numbers: the same data gives the same edges, counts and statistics on every engine.

SQLite is the yardstick. Each engine gets the same rows (NULLs, ties, values on
cut points, text that differs only in case or trailing spaces, rows on the
windows' edges) and must give SQLite's cut points (to 1e-12 relative), its
counts bin for bin, in a full count and summed from slices, and its KL, PSI,
JS and G-test p-values (to 1e-12). DuckDB and Spark also read them as a view
over Parquet files, as a data-lake user points driftmon at ``*.parquet``. No NaN or
±inf here: MariaDB cannot store them (tests/engines.py); the source tests cover them.
"""

from __future__ import annotations

import os
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from driftmon.config_file import parse_config
from driftmon.counting.incremental import SliceCounter
from driftmon.sources import open_source
from driftmon.stats.divergence import divergences
from driftmon.store.database import create_db_engine
from driftmon.store.repository import Repository
from driftmon.windows import TimeRange
from tests.conftest import POSTGRES_URL_ENV
from tests.engines import ENGINES, engine_factory, require_driver  # noqa: F401  fixture
from tests.sourcedata import START, create_and_fill, events_table

DAY, HOUR = timedelta(days=1), timedelta(hours=1)
REFERENCE = TimeRange(START, START + 7 * DAY)
WINDOWS = [TimeRange(START + 7 * DAY, START + 7 * DAY + HOUR), TimeRange(START + DAY, START + 2 * DAY)]
FEATURES = [
    {"column": "amount", "bins": 10},
    {"column": "score", "bins": 7},
    {"column": "tied", "bins": 10},
    {"column": "spread", "binning": "uniform", "bins": 9},
    {"column": "clamped", "binning": "uniform", "range": [0, 1], "bins": 4},
    {"column": "fixed", "binning": "explicit", "edges": [-1.0, 0.0, 0.1, 2.5]},
    {"column": "country", "type": "categorical", "top_k": 5},
]
TOLERANCE = 1e-12


def rows() -> list[dict]:
    rng = np.random.default_rng(17)
    n = 6000
    seconds = rng.uniform(0, (8 * DAY).total_seconds(), n)
    seconds[:40] = 0.0  # on the reference's start
    seconds[40:80] = (7 * DAY).total_seconds()  # on the current window's start
    countries = rng.choice(["DE", "de", "DE ", "FR", "fr", "US", "b", "B", "_x", "é"], n)
    out = []
    for i in range(n):
        shift = 8.0 if seconds[i] >= (7 * DAY).total_seconds() else 0.0
        out.append({
            "ts": START + timedelta(seconds=float(seconds[i])),
            "model_version": "v3" if i % 11 else "V3",  # a filter that only matches exactly
            "amount": None if i % 29 == 0 else float(rng.normal(100 + shift, 20)),
            "score": float(rng.uniform(0, 1)),
            "tied": float(rng.integers(0, 6)),  # quantiles fall on and between equal values
            "spread": None if i % 31 == 0 else float(rng.exponential(3.0)),
            "clamped": float(rng.uniform(-0.5, 1.5)),
            "fixed": float(rng.choice([-1.0, 0.0, 0.1, 2.5, 3.0, -7.25])),
            "country": None if i % 23 == 0 else str(countries[i]),
        })
    return out


def settings():
    raw = {"defaults": {"schedule": {"every": "15m"}, "window": {"size": "1h"}},
           "monitors": [{"name": "m", "features": FEATURES,
                         "source": {"kind": "events", "table": "inference_log", "timestamp_column": "ts",
                                    "where": {"model_version": "v3"}}}]}
    return parse_config(raw, {}).resolved_monitors()[0]


def table():
    return events_table(tied=sa.Double, spread=sa.Double, clamped=sa.Double, fixed=sa.Double)


def measure(engine: sa.Engine, results: sa.Engine) -> dict:
    """Cut points, counts (full and from slices) and statistics of each window."""
    monitor = settings()
    source = open_source(monitor, engine)
    profile = source.profile(REFERENCE)
    found = {"edges": {c.column: c.edges for c in profile.columns},
             "categories": {c.column: c.categories for c in profile.columns},
             "reference": {c.column: (c.counts, c.other, c.missing) for c in profile.columns}}
    for window in WINDOWS:
        counts = source.counts(profile, window)
        counter = SliceCounter(Repository(), results, lambda end=window.end: end + DAY)
        sliced = counter.window(monitor, source, profile, window)
        stats = divergences(counts.reference, counts.current, counts.mask, device="cpu")
        found[window] = {"labels": counts.labels, "current": counts.current, "reference": counts.reference,
                         "sliced": sliced.counts.current, "rows": counts.rows_scanned,
                         **{name: getattr(stats, name).numpy() for name in ("kl", "psi", "js", "p_value")}}
    return found


PARQUET = {"duckdb-parquet": "duckdb", "spark-parquet": "spark"}
ENGINE_PARAMS = ["postgresql", *ENGINES, *PARQUET]


@pytest.fixture
def results(tmp_path):
    from driftmon.store import migrate

    engine = create_db_engine(f"sqlite:///{tmp_path / 'results.db'}")
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def _sqlite(tmp_path, data):
    engine = create_db_engine(f"sqlite:///{tmp_path / 'source.db'}")
    create_and_fill(engine, table(), data)
    return engine


def _parquet(engine: sa.Engine, tmp_path, data) -> None:
    """Two Parquet files, and the view over them that driftmon reads."""
    folder = tmp_path / "parquet"
    folder.mkdir()
    frame = pd.DataFrame(data)
    # Microseconds, as the rows are: Spark reads no nanosecond Parquet timestamps.
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.tz_localize(None).astype("datetime64[us]")
    half = len(frame) // 2
    frame.iloc[:half].to_parquet(folder / "part-0.parquet")
    frame.iloc[half:].to_parquet(folder / "part-1.parquet")
    if engine.dialect.name == "duckdb":
        pattern = str(folder / "*.parquet").replace("'", "''")
        view = f"SELECT * FROM read_parquet('{pattern}')"
    else:  # Spark reads every Parquet file of the folder
        view = f"SELECT * FROM parquet.`{str(folder).replace('`', '``')}`"
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE VIEW inference_log AS {view}")


@pytest.mark.parametrize("name", ENGINE_PARAMS)
def test_every_engine_gives_sqlites_numbers(name, engine_factory, results, tmp_path):  # noqa: F811
    data = rows()
    baseline_engine = _sqlite(tmp_path, data)
    try:
        expected = measure(baseline_engine, results)
    finally:
        baseline_engine.dispose()
    if name == "postgresql":
        if not os.environ.get(POSTGRES_URL_ENV):
            pytest.skip(f"{POSTGRES_URL_ENV} is not set")
        opened = _postgres(os.environ[POSTGRES_URL_ENV])
    else:
        opened = engine_factory.open(PARQUET.get(name, name))
    engine = next(opened)
    try:
        if name in PARQUET:
            _parquet(engine, tmp_path, data)
        else:
            create_and_fill(engine, table(), data)
        found = measure(engine, results)
    finally:
        next(opened, None)
    assert found["categories"] == expected["categories"]
    for column, edges in expected["edges"].items():
        assert len(found["edges"][column]) == len(edges), column
        np.testing.assert_allclose(found["edges"][column], edges, rtol=TOLERANCE, atol=0, err_msg=column)
    assert found["reference"] == expected["reference"]
    for window in WINDOWS:
        mine, theirs = found[window], expected[window]
        assert mine["labels"] == theirs["labels"] and mine["rows"] == theirs["rows"] > 0
        for key in ("current", "reference", "sliced"):
            np.testing.assert_array_equal(mine[key], theirs[key], err_msg=f"{window} {key}")
        for key in ("kl", "psi", "js", "p_value"):
            np.testing.assert_allclose(mine[key], theirs[key], rtol=TOLERANCE, atol=1e-300, err_msg=key)


def _postgres(url: str):
    from tests.conftest import PostgresServer

    server = PostgresServer(url)
    database = server.create()
    engine = create_db_engine(database)
    try:
        yield engine
    finally:
        engine.dispose()
        server.drop(database)
        server.dispose()
