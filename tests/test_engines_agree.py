"""One definition of the numbers: the same data gives the same edges, counts and statistics on every engine.

SQLite is the yardstick. Each engine gets the same rows (NULLs, ties, values on
cut points, text that differs only in case or trailing spaces, rows on the
windows' edges) and must give SQLite's cut points (to 1e-12 relative), its
counts bin for bin, in a full count and summed from slices, and its KL, PSI,
JS and G-test p-values (to 1e-12). DuckDB and Spark also read them as a view
over Parquet files, as a data-lake user points driftmon at ``*.parquet``. No NaN or
±inf here: MariaDB cannot store them (tests/engines.py); the source tests cover them.

Segmented monitors (README, "Segments") are held to the same: per segment, bin
for bin, the engine's counts (full and from slices) equal SQLite's and a pandas
``groupby`` over the same rows (tests/segmentdata.py), and a steady cycle reads
the source in ONE statement, whatever the number of segments.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from driftmon.config_file import parse_config
from driftmon.counting.incremental import SliceCounter
from driftmon.segmenting import batch_of
from driftmon.sources import open_source
from driftmon.sources.profile import MISSING, OTHER
from driftmon.stats.divergence import divergences
from driftmon.store.database import create_db_engine
from driftmon.store.repository import Repository
from driftmon.windows import TimeRange
from tests.conftest import POSTGRES_URL_ENV
from tests.engines import ENGINES, engine_factory  # noqa: F401  fixture
from tests.segmentdata import expected_counts, found_counts, frame_of, with_segments
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


def settings(segments: dict | None = None, name: str = "m"):
    monitor = {"name": name, "features": FEATURES,
               "source": {"kind": "events", "table": "inference_log", "timestamp_column": "ts",
                          "where": {"model_version": "v3"}}}
    if segments:
        monitor["segments"] = segments
    raw = {"defaults": {"schedule": {"every": "15m"}, "window": {"size": "1h"}}, "monitors": [monitor]}
    return parse_config(raw, {}).resolved_monitors()[0]


def table():
    return events_table(tied=sa.Double, spread=sa.Double, clamped=sa.Double, fixed=sa.Double,
                        region=sa.String(8), tier=sa.Integer)


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
# A segment column alone (max 4: two values tie for the 4th place, four more are pooled),
# and two together (a text and an integer column, NULLs in each).
SEGMENTS = {"region": {"by": ["region"], "max": 4}, "region-tier": {"by": ["region", "tier"], "max": 5}}
STEP = timedelta(minutes=15)  # the schedule: one new slice per steady cycle
SEGMENT_WINDOWS = [WINDOWS[1], WINDOWS[0], TimeRange(WINDOWS[0].start + STEP, WINDOWS[0].end + STEP)]
_monitor_names = itertools.count()


@pytest.fixture(scope="module")
def data() -> list[dict]:
    return with_segments(rows(), REFERENCE)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from driftmon.store import migrate

    engine = create_db_engine(f"sqlite:///{tmp_path_factory.mktemp('results') / 'results.db'}")
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def expected(data, results, tmp_path_factory) -> dict:
    """SQLite's numbers: unsegmented, and per segment case."""
    engine = create_db_engine(f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'source.db'}")
    try:
        create_and_fill(engine, table(), data)
        return {"whole": measure(engine, results),
                **{case: measure_segments(engine, results, segments) for case, segments in SEGMENTS.items()}}
    finally:
        engine.dispose()


@pytest.fixture(scope="module", params=ENGINE_PARAMS)
def filled(request, data, engine_factory, tmp_path_factory):  # noqa: F811
    """The engine under test holding the rows: filled once for every test of this module."""
    name = request.param
    if name == "postgresql":
        if not os.environ.get(POSTGRES_URL_ENV):
            pytest.skip(f"{POSTGRES_URL_ENV} is not set")
        opened = _postgres(os.environ[POSTGRES_URL_ENV])
    else:
        opened = engine_factory.open(PARQUET.get(name, name))
    engine = next(opened)
    try:
        if name in PARQUET:
            _parquet(engine, tmp_path_factory.mktemp(name), data)
        else:
            create_and_fill(engine, table(), data)
        yield engine
    finally:
        next(opened, None)


def _parquet(engine: sa.Engine, tmp_path, data) -> None:
    """Two Parquet files, and the view over them that driftmon reads."""
    folder = tmp_path / "parquet"
    folder.mkdir()
    frame = pd.DataFrame(data)
    # Microseconds, as the rows are: Spark reads no nanosecond Parquet timestamps.
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.tz_localize(None).astype("datetime64[us]")
    frame["tier"] = frame["tier"].astype("Int32")  # an integer column with NULLs, as in the tables
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


def test_every_engine_gives_sqlites_numbers(filled, results, expected):
    found, expected = measure(filled, results), expected["whole"]
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


# --- segments -----------------------------------------------------------------------------


@contextmanager
def source_reads(engine: sa.Engine) -> Iterator[list[str]]:
    """The statements sent to the engine that read the source table, as the driver sees them."""
    seen: list[str] = []

    def record(connection, cursor, statement, parameters, context, executemany):
        if "inference_log" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def measure_segments(engine: sa.Engine, results: sa.Engine, segments: dict) -> dict:
    """Per segment and window: counts (full, from slices), the mix, the batch's statistics, and the
    source statements of each cycle (the last one a steady cycle: one new slice)."""
    monitor = settings(segments, name=f"m{next(_monitor_names)}")  # slices of its own in the results store
    source = open_source(monitor, engine)
    profile = source.profile(REFERENCE)
    found = {"profile": profile, "keys": profile.segments.keys}
    counter = SliceCounter(Repository(), results, lambda: SEGMENT_WINDOWS[-1].end + DAY)
    for window in SEGMENT_WINDOWS:
        full = source.counts(profile, window)
        before = source.statements
        with source_reads(engine) as reads:
            sliced = counter.window(monitor, source, profile, window)
        with results.begin() as connection:
            Repository().save_slices(connection, sliced.rows)
        batch = batch_of(full).counts
        stats = divergences(batch.reference, batch.current, batch.mask, device="cpu")
        found[window] = {
            "full": full, "sliced": sliced.counts, "fresh": len(sliced.fresh),
            "statements": (source.statements - before, len(reads)),
            "batch": {"labels": batch.labels, "current": batch.current, "reference": batch.reference,
                      **{name: getattr(stats, name).numpy() for name in ("kl", "psi", "js", "p_value")}},
        }
    return found


@pytest.mark.parametrize("case", list(SEGMENTS))
def test_every_engine_counts_sqlites_segments(case, filled, results, expected, data):
    """Per segment, bin for bin: the engine = SQLite = pandas; the batch's statistics = SQLite's."""
    segments = SEGMENTS[case]
    found, theirs = measure_segments(filled, results, segments), expected[case]
    profile = found["profile"]
    frame = frame_of(data, {"model_version": "v3"})
    assert found["keys"] == theirs["keys"]
    assert profile.segments.rows == theirs["profile"].segments.rows
    assert profile.segments.distinct == theirs["profile"].segments.distinct
    for window in SEGMENT_WINDOWS:
        mine, yardstick = found[window], theirs[window]
        full = mine["full"]
        pandas = expected_counts(frame, segments["by"], segments["max"], profile, REFERENCE, window)
        assert found["keys"] == pandas.keys and len(full.segments) == segments["max"] + 2
        for i, key in enumerate(pandas.keys):
            counts = full.segments[i]
            assert found_counts(counts) == pandas.current[key], f"{window} {key} current"
            assert found_counts(counts, "reference") == pandas.reference[key], f"{window} {key} reference"
            assert counts.current_totals.tolist() == [pandas.rows[key]] * len(FEATURES), f"{window} {key}"
            sliced = mine["sliced"].segments[i]  # summed from slices: the full count, segment by segment
            assert sliced.labels == counts.labels, f"{window} {key}"
            np.testing.assert_array_equal(sliced.current, counts.current, err_msg=f"{window} {key} sliced")
            np.testing.assert_array_equal(yardstick["full"].segments[i].current, counts.current, err_msg=key)
        # The mix: rows per segment; __other__ is a full count of the pooled rows.
        # (its labels: the members' keys, then the column's own __other__ and __missing__).
        labels = [*pandas.keys[:-2], OTHER, MISSING]
        assert found_counts(full.mix)["segment"] == {
            label: float(pandas.rows[key]) for label, key in zip(labels, pandas.keys, strict=True) if pandas.rows[key]}
        in_window = frame[(frame["ts"] >= window.start) & (frame["ts"] < window.end)]
        complete = in_window.dropna(subset=segments["by"])
        members = set(pandas.keys[:-2])
        pooled = sum(1 for row in complete[segments["by"]].itertuples(index=False)
                     if ",".join(f"{c}={v}" for c, v in zip(segments["by"], row, strict=True)) not in members)
        assert pandas.rows[pandas.keys[-2]] == pooled > 0
        assert full.segments[-2].current_totals[0] == pooled
        # The whole population is the sum of its segments: the unsegmented monitor's counts.
        if window in WINDOWS:
            assert full.labels == expected["whole"][window]["labels"]
            np.testing.assert_array_equal(full.current, expected["whole"][window]["current"])
        batch = mine["batch"]
        assert batch["labels"] == yardstick["batch"]["labels"]
        for key in ("current", "reference"):
            np.testing.assert_array_equal(batch[key], yardstick["batch"][key], err_msg=key)
        for key in ("kl", "psi", "js", "p_value"):
            np.testing.assert_allclose(batch[key], yardstick["batch"][key], rtol=TOLERANCE, atol=1e-300,
                                       err_msg=key)
        # ONE statement on the source per cycle, whatever the number of segments.
        assert mine["statements"] == (1, 1), window
    assert found[SEGMENT_WINDOWS[-1]]["fresh"] == 1  # the last cycle was steady: one new slice
    vanished = expected_counts(frame, segments["by"], segments["max"], profile, REFERENCE, WINDOWS[0])
    assert 0 in vanished.rows.values()  # a segment of the reference with no row in the window
    assert vanished.rows[pandas.keys[-1]] > 0  # rows with NULL in a by column


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
