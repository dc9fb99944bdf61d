"""Sources: bin counts from the database equal an independent numpy/pandas count."""

from __future__ import annotations

import math
import sqlite3
from datetime import timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from driftmon.config_file import parse_config
from driftmon.counting.profiles import reference_profile
from driftmon.errors import SourceError
from driftmon.sources import open_source
from driftmon.sources.profile import MISSING, OTHER
from driftmon.sources.sql import WindowStatement, in_range
from driftmon.store.database import create_db_engine
from driftmon.store.repository import Repository
from driftmon.windows import TimeRange
from tests.sourcedata import START, create_and_fill, events_table, random_events

DAY, HOUR = timedelta(days=1), timedelta(hours=1)
REFERENCE = TimeRange(START, START + 7 * DAY)
CURRENT = TimeRange(START + 7 * DAY, START + 7 * DAY + HOUR)


def monitor(features, source=None, **extra):
    source = source or {"kind": "events", "table": "inference_log", "timestamp_column": "ts",
                        "where": {"model_version": "v3"}}
    raw = {"monitors": [{"name": "m", "source": source, "features": features, **extra}]}
    return parse_config(raw, {}).resolved_monitors()[0]


@pytest.fixture
def source_engine(db_url):
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def log(source_engine):
    """Seven days of reference rows, one shifted hour, and rows another model wrote."""
    rng = np.random.default_rng(7)
    rows = (random_events(rng, 3000, START, 7 * DAY)
            + random_events(rng, 400, CURRENT.start, HOUR, shift=15)
            + random_events(rng, 300, START, 8 * DAY, shift=500, version="v2"))
    rows += [  # edge cases inside the current hour
        {"ts": CURRENT.start, "model_version": "v3", "amount": math.inf, "country": "ZZ", "score": 1.0},
        {"ts": CURRENT.start, "model_version": "v3", "amount": -math.inf, "country": "ZZ", "score": 0.0},
        {"ts": CURRENT.start, "model_version": "v3", "amount": math.nan, "country": None, "score": 0.5},
        {"ts": CURRENT.end, "model_version": "v3", "amount": 1.0, "country": "DE", "score": 0.5},  # excluded
        {"ts": CURRENT.start, "model_version": "v3", "amount": 1e9, "country": "DE", "score": 7.0},
    ]
    create_and_fill(source_engine, events_table(), rows)
    return pd.DataFrame(rows)


def frame_in(frame: pd.DataFrame, window: TimeRange) -> pd.DataFrame:
    ts = pd.to_datetime(frame["ts"], utc=True)
    chosen = (ts >= window.start) & (ts < window.end) & (frame["model_version"] == "v3")
    return frame[chosen]


def numpy_counts(values: pd.Series, cuts) -> tuple[list[float], float]:
    """Independent: numpy.histogram with the same cut points and finite outer edges."""
    x = values.to_numpy(dtype=float)
    finite = x[np.isfinite(x)]
    low = min([*finite, *cuts, 0.0]) - 1
    high = max([*finite, *cuts, 0.0]) + 1
    counts, _ = np.histogram(finite, bins=[low, *cuts, high])
    return counts.astype(float).tolist(), float(len(x) - len(finite))


def row_of(counts, column):
    f = counts.columns.index(column)
    labels = counts.labels[f]
    return dict(zip(labels, counts.current[f][: len(labels)], strict=True)), \
        dict(zip(labels, counts.reference[f][: len(labels)], strict=True))


@pytest.mark.parametrize("bins", [1, 4, 10])
def test_quantile_bins_match_numpy(source_engine, log, bins):
    src = open_source(monitor([{"column": "amount", "bins": bins}]), source_engine)
    profile = src.profile(REFERENCE)
    reference = frame_in(log, REFERENCE)["amount"].astype(float)
    finite = reference[np.isfinite(reference)].to_numpy()
    expected_cuts = sorted(set(np.quantile(finite, np.arange(1, bins) / bins).tolist()))
    (column,) = profile.columns
    np.testing.assert_allclose(column.edges, expected_cuts, rtol=1e-12)
    ref_counts, ref_missing = numpy_counts(reference, column.edges)
    assert list(column.counts) == ref_counts and column.missing == ref_missing

    counts = src.counts(profile, CURRENT)
    current = frame_in(log, CURRENT)["amount"].astype(float)
    cur_counts, cur_missing = numpy_counts(current, column.edges)
    cur, ref = row_of(counts, "amount")
    assert list(cur.values()) == [*cur_counts, cur_missing]  # missing: NULL, NaN, ±inf
    assert list(ref.values()) == [*ref_counts, ref_missing]
    assert counts.current_totals[0] == len(current)
    assert counts.current_missing[0] == cur_missing == current.isna().sum() + 2  # + inf, -inf


def test_values_exactly_on_edges_go_right(source_engine):
    rows = [{"ts": START + i * HOUR, "model_version": "v3", "amount": float(v), "country": "DE", "score": 0.0}
            for i, v in enumerate([0, 1, 1, 2, 2, 2, 3, 3, 3, 3])]
    create_and_fill(source_engine, events_table(), rows)
    src = open_source(monitor([{"column": "amount", "binning": "explicit", "edges": [1, 2, 3]}]), source_engine)
    profile = src.profile(TimeRange(START, START + DAY))
    assert profile.columns[0].counts == (1.0, 2.0, 3.0, 4.0)  # (-inf,1) [1,2) [2,3) [3,inf)


def test_uniform_bins(source_engine, log):
    features = [{"column": "score", "binning": "uniform", "range": [0, 1], "bins": 4},
                {"column": "amount", "binning": "uniform", "bins": 5}]
    src = open_source(monitor(features), source_engine)
    profile = src.profile(REFERENCE)
    assert profile.column("score").edges == (0.25, 0.5, 0.75)
    reference = frame_in(log, REFERENCE)["amount"].astype(float)
    low, high = reference.min(), reference.max()
    np.testing.assert_allclose(profile.column("amount").edges, [low + i * (high - low) / 5 for i in range(1, 5)])
    counts = src.counts(profile, CURRENT)
    cur, _ = row_of(counts, "score")
    expected, missing = numpy_counts(frame_in(log, CURRENT)["score"], [0.25, 0.5, 0.75])
    assert list(cur.values()) == expected and missing == 0  # 7.0 lands in the open top bin


def test_uniform_bins_of_values_near_the_largest_float(source_engine):
    """±1e308: hi − lo overflows, yet the edges stay finite and evenly spaced (not one bin)."""
    rows = [{"ts": START + i * HOUR, "model_version": "v3", "amount": value, "country": "DE", "score": 0.5}
            for i, value in enumerate([-1e308, -5e307, 0.0, 5e307, 1e308] * 10)]
    create_and_fill(source_engine, events_table(), rows)
    src = open_source(monitor([{"column": "amount", "binning": "uniform", "bins": 4}]), source_engine)
    profile = src.profile(REFERENCE)
    assert profile.column("amount").edges == (-5e307, 0.0, 5e307)
    assert profile.column("amount").counts == (10.0, 10.0, 10.0, 20.0) and profile.column("amount").missing == 0


def test_categorical_top_k_other_and_missing(source_engine, log):
    src = open_source(monitor([{"column": "country", "type": "categorical", "top_k": 3}]), source_engine)
    profile = src.profile(REFERENCE)
    reference = frame_in(log, REFERENCE)["country"]
    frequencies = reference.value_counts()
    ranked = sorted(frequencies.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    (column,) = profile.columns
    assert list(column.categories) == [k for k, _ in ranked]
    assert list(column.counts) == [float(v) for _, v in ranked]
    assert column.missing == reference.isna().sum()
    assert column.other == reference.notna().sum() - sum(v for _, v in ranked)

    counts = src.counts(profile, CURRENT)
    current = frame_in(log, CURRENT)["country"]
    cur, _ = row_of(counts, "country")
    top = [k for k, _ in ranked]
    assert [cur[k] for k in top] == [float((current == k).sum()) for k in top]
    assert cur[OTHER] == float((~current.isin(top) & current.notna()).sum())  # includes unseen "ZZ"
    assert cur[MISSING] == float(current.isna().sum())


def test_category_ties_broken_by_value(source_engine):
    rows = [{"ts": START, "model_version": "v3", "amount": 0.0, "country": c, "score": 0.0}
            for c in ["b", "B", "a", "a", "c", "c", "_x"]]
    create_and_fill(source_engine, events_table(), rows)
    src = open_source(monitor([{"column": "country", "type": "categorical", "top_k": 4}]), source_engine)
    (column,) = src.profile(TimeRange(START, START + DAY)).columns
    assert column.categories == ("a", "c", "B", "_x")  # code-point order: B < _ < b


def test_empty_window_and_one_distinct_value(source_engine, log):
    features = [{"column": "amount", "bins": 4}, {"column": "country", "type": "categorical"}]
    src = open_source(monitor(features), source_engine)
    profile = src.profile(REFERENCE)
    empty = src.counts(profile, TimeRange(START - DAY, START))
    assert empty.current.sum() == 0 and list(empty.current_totals) == [0, 0]

    rows = [{"ts": START + i * HOUR, "model_version": "v3", "amount": 5.0, "country": "DE", "score": 0.0}
            for i in range(20)]
    create_and_fill(source_engine, events_table("single"), rows)
    one = open_source(monitor([{"column": "amount", "bins": 4}],
                              source={"kind": "events", "table": "single", "timestamp_column": "ts"}), source_engine)
    profile = one.profile(TimeRange(START, START + DAY))
    assert profile.columns[0].edges == (5.0,)  # the three equal quartiles merge into one cut
    assert profile.columns[0].counts == (0.0, 20.0)


def test_window_is_half_open_and_filtered(source_engine, log):
    src = open_source(monitor([{"column": "score", "binning": "explicit", "edges": [0.5]}]), source_engine)
    counts = src.counts(src.profile(REFERENCE), CURRENT)
    assert counts.rows_scanned == len(frame_in(log, CURRENT)) == 404  # v2 rows and the row at end excluded



def test_windows_reuse_the_compiled_count_statement(source_engine, log):
    features = [{"column": "amount", "bins": 6}, {"column": "country", "type": "categorical", "top_k": 3}]
    src = open_source(monitor(features), source_engine)
    profile = src.profile(REFERENCE)
    windows = [CURRENT, TimeRange(START + DAY, START + DAY + HOUR), TimeRange(START, START + 7 * DAY)]
    counts = [src.counts(profile, window) for window in windows]
    (compiled,) = src._counting.values()  # one statement for the three windows
    assert [c.rows_scanned for c in counts] == [len(frame_in(log, w)) for w in windows]
    for window, found in zip(windows, counts, strict=True):
        fresh = open_source(monitor(features), source_engine).counts(profile, window)  # its own statement
        np.testing.assert_array_equal(fresh.current, found.current)
        assert fresh.labels == found.labels
    assert list(src._counting.values()) == [compiled]
    # Other bins: a new statement, kept beside the first (a few are: EventsSource._counting).
    src.counts(src.profile(TimeRange(START, START + DAY)), CURRENT)
    assert len(src._counting) == 2 and list(src._counting.values())[-1] is not compiled


class _Doubled(sa.types.TypeDecorator):
    impl = sa.Integer
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value * 2


def test_window_statement_applies_bind_processors_and_binds_each_window(source_engine, log):
    table = sa.table("inference_log", sa.column("ts"))
    statement = sa.select(sa.literal(21, _Doubled()), sa.func.count()).select_from(table).where(
        in_range(source_engine.dialect.name, table.c.ts, CURRENT))
    with source_engine.connect() as connection:
        compiled = WindowStatement.compile(statement, connection)
        for window in (CURRENT, REFERENCE):
            expected = int(((pd.to_datetime(log["ts"], utc=True) >= window.start)
                            & (pd.to_datetime(log["ts"], utc=True) < window.end)).sum())
            assert compiled.execute(connection, window) == [(42, expected)]

class CountingCursorMixin:
    fetched = 0
    counting = False

    def execute(self, statement, *args, **kwargs):
        type(self).counting = "inference_log" in str(statement)
        return super().execute(statement, *args, **kwargs)

    def _count(self, rows):
        if type(self).counting:
            type(self).fetched += len(rows)
        return rows

    def fetchall(self):
        return self._count(super().fetchall())

    def fetchmany(self, *args, **kwargs):
        return self._count(super().fetchmany(*args, **kwargs))

    def fetchone(self):
        row = super().fetchone()
        self._count([row] if row is not None else [])
        return row


class SqliteCursor(CountingCursorMixin, sqlite3.Cursor):
    pass


class PgCursor(CountingCursorMixin, psycopg.Cursor):
    pass


class SqliteConnection(sqlite3.Connection):
    def cursor(self, factory=SqliteCursor):
        return super().cursor(factory)


def counting_engine(url: str) -> sa.Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return sa.create_engine(
            "sqlite://", creator=lambda: sqlite3.connect(parsed.database, factory=SqliteConnection)
        )
    parsed = parsed.set(drivername="postgresql+psycopg")
    return sa.create_engine(parsed, connect_args={"cursor_factory": PgCursor})


def test_no_raw_rows_cross_the_wire(db_url, source_engine, log):
    features = [{"column": "amount", "bins": 10}, {"column": "country", "type": "categorical", "top_k": 4},
                {"column": "score", "binning": "uniform", "range": [0, 1], "bins": 10}]
    engine = counting_engine(db_url)
    try:
        src = open_source(monitor(features), engine)
        profile = src.profile(REFERENCE)
        for cursor in (SqliteCursor, PgCursor):
            cursor.fetched = 0
        src.counts(profile, CURRENT)
        fetched = SqliteCursor.fetched + PgCursor.fetched
        assert 0 < fetched <= (10 + 2) + (4 + 2) + (10 + 2)
        # Profile: quantile edges, top-K categories, reference counts; then ONE per window.
        assert src.statements == 3 + 1
    finally:
        engine.dispose()


def test_profile_computed_once_per_range(source_engine, engine, log):
    repository = Repository()
    features = [{"column": "amount", "bins": 4}, {"column": "country", "type": "categorical"}]
    src = open_source(monitor(features), source_engine)
    reference = REFERENCE
    computed = []
    original = src.profile
    src.profile = lambda r: computed.append(r) or original(r)  # type: ignore[method-assign]
    for cycle in range(5):
        window = TimeRange(CURRENT.start + cycle * 5 * timedelta(minutes=1), CURRENT.end)
        profile = reference_profile(repository, engine, src, "m", reference)
        src.counts(profile, window)
    assert computed == [reference]
    assert reference_profile(repository, engine, src, "m", TimeRange(START + DAY, START + 8 * DAY))
    assert len(computed) == 2

    changed = open_source(monitor([{"column": "amount", "bins": 5}, features[1]]), source_engine)
    again = reference_profile(repository, engine, changed, "m", reference)
    assert len(again.column("amount").edges) == 4  # new binning, new profile
    assert reference_profile(repository, engine, src, "m", reference).column("amount").edges \
        == original(reference).column("amount").edges


def test_stored_profile_round_trips(source_engine, engine, log):
    repository = Repository()
    src = open_source(monitor([{"column": "amount"}, {"column": "country", "type": "categorical"}]), source_engine)
    computed = reference_profile(repository, engine, src, "m", REFERENCE)
    with engine.connect() as connection:
        assert repository.load_profile(connection, "m", REFERENCE) == computed


def test_hostile_identifiers_are_quoted(source_engine):
    table_name = 'log"; DROP TABLE sentinel; --'
    if source_engine.dialect.name == "hive":  # Spark's catalog takes letters, digits and _ in table names only
        table_name = "log_drop_table_sentinel"
    column = "amount; DELETE FROM sentinel"
    weird = sa.Table(table_name, sa.MetaData(), sa.Column("time stamp", sa.DateTime),
                     sa.Column(column, sa.Double), sa.Column("it's", sa.String(5)))
    sentinel = sa.Table("sentinel", weird.metadata, sa.Column("x", sa.Integer))
    rows = [{"time stamp": START.replace(tzinfo=None) + i * HOUR, column: float(i), "it's": "o'k"}
            for i in range(10)]
    create_and_fill(source_engine, weird, rows)
    with source_engine.begin() as connection:
        connection.execute(sentinel.insert(), [{"x": 1}])
    src = open_source(monitor([{"column": column, "bins": 2}],
                              source={"kind": "events", "table": table_name, "timestamp_column": "time stamp",
                                      "where": {"it's": "o'k"}}), source_engine)
    profile = src.profile(TimeRange(START, START + DAY))
    assert sum(profile.columns[0].counts) == 10
    with source_engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(sentinel)).scalar() == 1


def test_missing_table_and_column_are_named(source_engine, log):
    absent = open_source(monitor([{"column": "amount"}], source={"kind": "events", "table": "nope",
                                                                  "timestamp_column": "ts"}), source_engine)
    with pytest.raises(SourceError, match="table 'nope' does not exist"):
        absent.profile(REFERENCE)
    wrong = open_source(monitor([{"column": "amuont"}]), source_engine)
    with pytest.raises(SourceError, match="monitor 'm', table 'inference_log'.*no column.*'amuont'"):
        wrong.profile(REFERENCE)


def test_unreachable_database_is_a_source_error():
    engine = create_db_engine("postgresql://nobody:secret-pw@127.0.0.1:1/none")
    try:
        src = open_source(monitor([{"column": "amount"}]), engine)
        with pytest.raises(SourceError, match="monitor 'm'") as info:
            src.profile(REFERENCE)
        assert "secret-pw" not in str(info.value)
    finally:
        engine.dispose()


def test_sqlite_text_timestamps_in_other_shapes(tmp_path):
    engine = create_db_engine(f"sqlite:///{tmp_path / 'src.db'}")
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE log (ts TEXT, x REAL)"))
            connection.execute(sa.text("INSERT INTO log VALUES (:ts, 1.0)"), [
                {"ts": "2024-03-01T00:00:00"}, {"ts": "2024-03-01 00:30:00+00:00"},
                {"ts": "2024-03-01T02:00:00+01:00"},  # 01:00 UTC: outside the first hour
                {"ts": "2024-03-01 00:59:59.999"}])
        src = open_source(monitor([{"column": "x", "bins": 1}],
                                  source={"kind": "events", "table": "log", "timestamp_column": "ts"}), engine)
        assert src.profile(TimeRange(START, START + HOUR)).columns[0].counts == (3.0,)
    finally:
        engine.dispose()



def test_sqlite_text_timestamps_at_the_largest_utc_offsets(tmp_path):
    # Local times up to 14 h from UTC, either separator, a bare date: the raw
    # text prefilter must keep every row whose UTC time lies in the window.
    inside = ["2024-03-01T14:00:00+14:00", "2024-03-01 14:59:59.999+14:00", "2024-02-29 12:00:00-12:00",
              "2024-02-29T12:30:00-12:00", "2024-03-01", "2024-03-01T00:59:59.999Z"]
    outside = ["2024-03-01T15:00:00+14:00", "2024-02-29T11:59:59.999-12:00", "2024-03-01 01:00:00",
               "2024-02-29T23:59:59.999"]
    engine = create_db_engine(f"sqlite:///{tmp_path / 'src.db'}")
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE log (ts TEXT, x REAL)"))
            connection.execute(sa.text("CREATE INDEX log_ts ON log (ts)"))
            connection.execute(sa.text("INSERT INTO log VALUES (:ts, 1.0)"), [{"ts": t} for t in inside + outside])
        src = open_source(monitor([{"column": "x", "bins": 1}],
                                  source={"kind": "events", "table": "log", "timestamp_column": "ts"}), engine)
        assert src.profile(TimeRange(START, START + HOUR)).columns[0].counts == (float(len(inside)),)
    finally:
        engine.dispose()

# --- histograms -------------------------------------------------------------------

HISTOGRAMS = {"kind": "histograms", "table": "feature_histograms", "timestamp_column": "bucket_start",
              "role_column": "role"}


def histogram_table(engine, rows):
    table = sa.Table("feature_histograms", sa.MetaData(), sa.Column("bucket_start", sa.DateTime),
                     sa.Column("feature", sa.String(50)), sa.Column("bin", sa.String(50)),
                     sa.Column("count", sa.Double), sa.Column("role", sa.String(20)))
    create_and_fill(engine, table, [dict(zip(["bucket_start", "feature", "bin", "count", "role"], r, strict=True))
                                    for r in rows])


def test_histograms_sum_windows_with_label_union(source_engine):
    ref, cur = START + HOUR, CURRENT.start
    histogram_table(source_engine, [
        (ref, "age", "0-18", 10, "feature"), (ref + DAY, "age", "0-18", 5, "feature"),
        (ref, "age", "18-65", 30, "feature"), (ref, "age", "65+", 0, "feature"),  # present with 0
        (cur, "age", "0-18", 2.5, "feature"), (cur, "age", "unknown", 4, "feature"),  # new label, weight
        (ref, "score", "high", 7, "prediction"), (cur, "score", "high", 3, "prediction"),
        (cur, "fresh", "x", 1, "feature"),  # only in the current window
    ])
    raw = {"monitors": [{"name": "h", "source": HISTOGRAMS}]}
    src = open_source(parse_config(raw, {}).resolved_monitors()[0], source_engine)
    counts = src.counts(src.profile(REFERENCE), CURRENT)
    assert counts.columns == ("age", "score", "fresh")
    assert counts.roles == ("feature", "prediction", "feature")
    cur_age, ref_age = row_of(counts, "age")
    assert ref_age == {"0-18": 15, "18-65": 30, "65+": 0, "unknown": 0}
    assert cur_age == {"0-18": 2.5, "18-65": 0, "65+": 0, "unknown": 4}
    assert list(counts.reference_totals) == [45, 7, 0]
    assert counts.rows_scanned == 4 and counts.errors == {}


def test_histograms_bad_counts_fail_only_their_column(source_engine):
    histogram_table(source_engine, [
        (START, "good", "a", 3, None), (CURRENT.start, "good", "a", 4, None),
        (START, "bad", "a", 3, None), (CURRENT.start, "bad", "a", -1, None), (CURRENT.start, "bad", "b", 2, None),
    ])
    raw = {"monitors": [{"name": "h", "source": HISTOGRAMS, "features": [{"column": "good"}, {"column": "bad"}]}]}
    src = open_source(parse_config(raw, {}).resolved_monitors()[0], source_engine)
    counts = src.counts(src.profile(REFERENCE), CURRENT)
    assert set(counts.errors) == {"bad"}
    assert "negative, NaN or infinite counts in bin(s) 'a'" in counts.errors["bad"]
    assert row_of(counts, "good")[0] == {"a": 4}


# --- numeric timestamps and declared types (issue 15, items 3 and 4) ----------------


@pytest.mark.parametrize("unit, scale, column_type", [
    (None, 1, sa.BigInteger), ("ms", 1_000, sa.BigInteger), ("us", 1_000_000, sa.BigInteger),
    ("ns", 1_000_000_000, sa.BigInteger), (None, 1, sa.Double)])
def test_numeric_timestamps_are_time_since_the_epoch(source_engine, unit, scale, column_type):
    from driftmon.counting.incremental import SliceCounter

    table = sa.Table("epoch_log", sa.MetaData(), sa.Column("ts", column_type), sa.Column("x", sa.Double))
    origin = int((CURRENT.start - START).total_seconds()) + int(START.timestamp())
    seconds = [origin - 1, origin, origin + 1799, origin + 3599, origin + 3600]  # the last one is outside
    values = [s * scale for s in seconds]
    if column_type is sa.Double:
        values[-2] = origin + 3599.999  # a fraction still inside
    create_and_fill(source_engine, table, [{"ts": v, "x": float(i)} for i, v in enumerate(values)])
    source = {"kind": "events", "table": "epoch_log", "timestamp_column": "ts",
              **({"timestamp_unit": unit} if unit else {})}
    settings = monitor([{"column": "x", "binning": "explicit", "edges": [2.5]}], source=source,
                       schedule={"every": "10m"})
    src = open_source(settings, source_engine)
    profile = src.profile(CURRENT)
    assert profile.columns[0].counts == (2.0, 1.0)  # rows 1, 2 | 3
    counter = SliceCounter(Repository(), source_engine, lambda: CURRENT.end + DAY)
    sliced = counter.window(settings, src, profile, CURRENT)
    assert np.array_equal(sliced.counts.current, src.counts(profile, CURRENT).current)
    assert [sliced.fresh[start].rows for start in sorted(sliced.fresh)] == [1, 0, 1, 0, 0, 1]


def test_timestamp_unit_on_a_datetime_column_is_an_error(source_engine, log):
    source = {"kind": "events", "table": "inference_log", "timestamp_column": "ts", "timestamp_unit": "ms"}
    src = open_source(monitor([{"column": "amount"}], source=source), source_engine)
    with pytest.raises(SourceError, match="timestamp_unit applies to numeric timestamp columns; column 'ts' is"):
        src.profile(REFERENCE)


def test_a_text_column_declared_numeric_fails_naming_monitor_table_column_and_type(source_engine, log):
    src = open_source(monitor([{"column": "country", "binning": "uniform", "bins": 4}]), source_engine)
    with pytest.raises(SourceError) as info:
        src.profile(REFERENCE)
    message = str(info.value)
    assert "monitor 'm'" in message and "table 'inference_log'" in message
    assert "column 'country' is declared numeric but its type is VARCHAR" in message


def test_a_categorical_column_with_more_values_than_top_k_is_logged_once(source_engine, log, caplog):
    src = open_source(monitor([{"column": "amount", "type": "categorical", "top_k": 5}]), source_engine)
    with caplog.at_level("WARNING", logger="driftmon.sources.events"):
        src.profile(REFERENCE)
        src.profile(TimeRange(START, START + DAY))
    warned = [r for r in caplog.records if getattr(r, "event", None) == "source.many_categories"]
    assert len(warned) == 1
    assert warned[0].column == "amount" and warned[0].top_k == 5 and warned[0].distinct > 1000
    assert "is it numeric?" in warned[0].getMessage()


def test_reads_in_progress_can_be_cancelled(source_engine, log, backend):
    """At shutdown an abandoned run's query must not go on running on the source."""
    import threading
    import time

    src = open_source(monitor([{"column": "amount"}]), source_engine)
    slow = ("SELECT pg_sleep(30)" if backend == "postgresql" else
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) "
            "SELECT count(*) FROM c")
    failures = []

    def read():
        try:
            with src.reader.reading("a slow read") as connection:
                connection.exec_driver_sql(slow).all()
        except SourceError as exc:
            failures.append(str(exc))

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 10
    while not src.reader._active and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # the statement is running
    began = time.monotonic()
    assert src.reader.cancel() == 1
    reader.join(timeout=10)
    assert not reader.is_alive() and time.monotonic() - began < 5
    assert len(failures) == 1 and "a slow read" in failures[0]
