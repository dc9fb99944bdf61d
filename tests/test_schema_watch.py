"""Schema watch: dropped, retyped and added columns of a source table become a stored schema status."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from driftmon.config_file import parse_config
from driftmon.errors import SourceError
from driftmon.sources import open_source
from driftmon.sources.schema_watch import BROKEN, CHANGED, OK, SchemaWatch, compare, type_text
from driftmon.sources.sql import reflect_columns
from driftmon.store import health_queries
from driftmon.store.database import create_db_engine
from driftmon.windows import TimeRange
from tests.sourcedata import START, create_and_fill, events_table, random_events

DAY = timedelta(days=1)
REFERENCE = TimeRange(START, START + 7 * DAY)
NEXT_REFERENCE = TimeRange(START + DAY, START + 8 * DAY)
WATCHED = ["ts", "model_version", "amount", "country", "score"]
DROP_COLUMN = pytest.mark.skipif(sqlite3.sqlite_version_info < (3, 35), reason="SQLite < 3.35 has no DROP COLUMN")


# --- compare -------------------------------------------------------------------------------

BASE = {"ts": "DATETIME", "amount": "FLOAT", "country": "VARCHAR(20)", "note": "TEXT"}


def test_an_unchanged_table_is_ok():
    assert compare(BASE, dict(BASE), ["ts", "amount"]) == (OK, [])


def test_an_added_column_is_a_change_not_harm():
    status, changes = compare(BASE, {**BASE, "extra": "INTEGER"}, ["ts", "amount"])
    assert status == CHANGED
    assert changes == [{"column": "extra", "change": "added", "was": None, "now": "INTEGER"}]


def test_a_dropped_or_retyped_watched_column_breaks():
    now = {"ts": "DATETIME", "country": "TEXT", "note": "TEXT"}
    status, changes = compare(BASE, now, ["ts", "amount", "country"])
    assert status == BROKEN
    assert changes == [{"column": "amount", "change": "dropped", "was": "FLOAT", "now": None},
                       {"column": "country", "change": "retyped", "was": "VARCHAR(20)", "now": "TEXT"}]


def test_unwatched_columns_may_go_or_change_type():
    now = {"ts": "DATETIME", "amount": "FLOAT", "country": "TEXT"}  # note dropped, country retyped
    assert compare(BASE, now, ["ts", "amount"]) == (OK, [])


def test_broken_outranks_changed_and_changes_are_sorted():
    now = {"ts": "DATETIME", "b": "INTEGER", "a": "INTEGER", "note": "TEXT"}
    status, changes = compare(BASE, now, ["ts", "country", "amount", "amount"])
    assert status == BROKEN
    assert [(c["change"], c["column"]) for c in changes] == [
        ("added", "a"), ("added", "b"), ("dropped", "amount"), ("dropped", "country")]


def test_a_watched_column_missing_from_both_is_still_dropped():
    status, changes = compare({"ts": "DATETIME"}, {"ts": "DATETIME"}, ["ts", "ghost"])
    assert (status, changes) == (BROKEN, [{"column": "ghost", "change": "dropped", "was": None, "now": None}])


def test_a_missing_table_drops_every_watched_column():
    status, changes = compare(BASE, {}, ["ts", "amount"])
    assert status == BROKEN and [c["column"] for c in changes] == ["amount", "ts"]


# --- type_text -----------------------------------------------------------------------------

class Unknown(sa.types.UserDefinedType):
    """An engine type no compiler knows (get_col_spec missing)."""

    cache_ok = True


def test_type_text_keeps_what_the_dialect_says():
    dialect = postgresql.dialect()
    aware, naive = postgresql.TIMESTAMP(timezone=True), postgresql.TIMESTAMP()
    assert type_text(aware, dialect) != type_text(naive, dialect)
    assert type_text(aware, dialect) == "TIMESTAMP WITH TIME ZONE"


def test_type_text_falls_back_for_types_that_do_not_compile():
    assert type_text(sa.types.NullType()) == "NULL"
    assert type_text(Unknown()) == "Unknown()"
    assert type_text(Unknown(), postgresql.dialect()) == "Unknown()"


# --- SchemaWatch against a real source -----------------------------------------------------

class Clock:
    def __init__(self):
        self.now = START + 8 * DAY

    def __call__(self):
        return self.now


@pytest.fixture
def source_engine(backend, db_url, tmp_path):
    """The source: a SQLite file of its own, or the test's PostgreSQL database."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'source.db'}" if backend == "sqlite" else db_url)
    create_and_fill(engine, events_table(), random_events(np.random.default_rng(3), 200, START, 8 * DAY))
    yield engine
    engine.dispose()


@pytest.fixture
def source(source_engine):
    raw = {"monitors": [{"name": "m", "features": [{"column": "amount"}, {"column": "country", "type": "categorical"},
                                                   {"column": "score"}],
                         "source": {"kind": "events", "table": "inference_log", "timestamp_column": "ts",
                                    "where": {"model_version": "v3"}}}]}
    return open_source(parse_config(raw, {}).resolved_monitors()[0], source_engine)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def watch(engine, clock):
    return SchemaWatch(engine, clock, every=timedelta(minutes=10))


def alter(engine, *statements):
    with engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)


def stored(engine):
    with engine.connect() as connection:
        return health_queries.load_schema(connection, "m")


def test_the_first_check_takes_the_table_as_baseline(watch, source, engine, clock):
    row = watch.check("m", source, REFERENCE, failed=False)
    assert (row["status"], row["changes"]) == (OK, [])
    assert set(row["baseline"]) == set(WATCHED)
    assert row["baseline_at"] == REFERENCE.end and row["checked_at"] == clock.now
    assert stored(engine) == row
    assert watch.check("m", source, REFERENCE, failed=False)["baseline"] == row["baseline"]  # stable text


def test_an_added_column_is_changed_and_runs_go_on(watch, source, source_engine, engine):
    source.profile(REFERENCE)
    watch.check("m", source, REFERENCE, failed=False)
    alter(source_engine, "ALTER TABLE inference_log ADD COLUMN region VARCHAR(8)")
    row = watch.check("m", source, REFERENCE, failed=False)
    assert row["status"] == CHANGED
    assert row["changes"] == [{"column": "region", "change": "added", "was": None, "now": "VARCHAR(8)"}]
    assert stored(engine)["status"] == CHANGED
    assert source.reader.column_types is not None  # nothing stale: no new reflection needed
    source.profile(REFERENCE)


@DROP_COLUMN
def test_a_dropped_watched_column_is_broken_and_named(watch, source, source_engine, engine):
    source.profile(REFERENCE)
    watch.check("m", source, REFERENCE, failed=False)
    alter(source_engine, "ALTER TABLE inference_log DROP COLUMN score")
    row = watch.check("m", source, REFERENCE, failed=True)
    assert row["status"] == BROKEN
    assert [(c["column"], c["change"], c["now"]) for c in row["changes"]] == [("score", "dropped", None)]
    assert row["changes"][0]["was"] == row["baseline"]["score"]
    # The reader reflects again and names the column, not the engine's error about a statement.
    assert source.reader.column_types is None
    with pytest.raises(SourceError, match=r"has no column\(s\) 'score'"):
        source.profile(REFERENCE)


@DROP_COLUMN
def test_an_unwatched_column_may_be_dropped(watch, source, source_engine):
    alter(source_engine, "ALTER TABLE inference_log ADD COLUMN note VARCHAR(8)")
    watch.check("m", source, REFERENCE, failed=False)
    alter(source_engine, "ALTER TABLE inference_log DROP COLUMN note")
    assert watch.check("m", source, REFERENCE, failed=False)["status"] == OK


def recreate_with_text_amount(engine):
    """A retype that every engine can do: the table again, with ``amount`` as text."""
    events_table().drop(engine)
    table = events_table()
    table.c.amount.type = sa.Text()
    create_and_fill(engine, table, [{"ts": START, "model_version": "v3", "amount": "1", "country": "DE",
                                     "score": 0.5}])


def test_a_retyped_column_stays_broken_until_a_new_reference_succeeds(watch, source, source_engine, engine):
    first = watch.check("m", source, REFERENCE, failed=False)
    recreate_with_text_amount(source_engine)
    row = watch.check("m", source, REFERENCE, failed=True)
    assert row["status"] == BROKEN
    assert row["changes"] == [{"column": "amount", "change": "retyped", "was": first["baseline"]["amount"],
                               "now": "TEXT"}]
    assert source.reader.column_types is None
    with pytest.raises(SourceError, match="declared numeric"):  # the run's own clear error
        source.profile(REFERENCE)
    # Runs that succeed on the old reference leave it broken; a failed one on the new, too.
    assert watch.check("m", source, REFERENCE, failed=False)["status"] == BROKEN
    assert watch.check("m", source, NEXT_REFERENCE, failed=True)["status"] == BROKEN
    assert stored(engine)["baseline_at"] == REFERENCE.end
    renewed = watch.check("m", source, NEXT_REFERENCE, failed=False)
    assert (renewed["status"], renewed["changes"], renewed["baseline_at"]) == (OK, [], NEXT_REFERENCE.end)
    assert renewed["baseline"]["amount"] == "TEXT"


def test_postgresql_alter_column_type_is_retyped(backend, watch, source, source_engine):
    if backend != "postgresql":
        pytest.skip("ALTER COLUMN ... TYPE is PostgreSQL's")
    watch.check("m", source, REFERENCE, failed=False)
    alter(source_engine, "ALTER TABLE inference_log ALTER COLUMN amount TYPE text",
          "ALTER TABLE inference_log ALTER COLUMN ts TYPE timestamptz")
    row = watch.check("m", source, REFERENCE, failed=True)
    assert row["changes"] == [
        {"column": "amount", "change": "retyped", "was": "DOUBLE PRECISION", "now": "TEXT"},
        {"column": "ts", "change": "retyped", "was": "TIMESTAMP WITHOUT TIME ZONE", "now": "TIMESTAMP WITH TIME ZONE"},
    ]


def test_a_new_reference_renews_the_baseline(watch, source, source_engine):
    watch.check("m", source, REFERENCE, failed=False)
    alter(source_engine, "ALTER TABLE inference_log ADD COLUMN region VARCHAR(8)")
    assert watch.check("m", source, REFERENCE, failed=False)["status"] == CHANGED
    row = watch.check("m", source, NEXT_REFERENCE, failed=False)
    assert (row["status"], row["baseline_at"]) == (OK, NEXT_REFERENCE.end)
    assert "region" in row["baseline"]


@DROP_COLUMN
def test_a_new_reference_keeps_the_baseline_while_a_watched_column_is_missing(watch, source, source_engine):
    first = watch.check("m", source, REFERENCE, failed=False)
    alter(source_engine, "ALTER TABLE inference_log DROP COLUMN country")
    row = watch.check("m", source, NEXT_REFERENCE, failed=False)
    assert row["status"] == BROKEN and (row["baseline"], row["baseline_at"]) == (first["baseline"], REFERENCE.end)
    alter(source_engine, "ALTER TABLE inference_log ADD COLUMN country VARCHAR(20)")
    assert watch.check("m", source, NEXT_REFERENCE, failed=False)["status"] == OK


def test_a_dropped_table_drops_every_watched_column(watch, source, source_engine, engine):
    first = watch.check("m", source, REFERENCE, failed=False)
    events_table().drop(source_engine)
    row = watch.check("m", source, NEXT_REFERENCE, failed=True)
    assert row["status"] == BROKEN
    assert sorted(c["column"] for c in row["changes"]) == sorted(WATCHED)
    assert {c["change"] for c in row["changes"]} == {"dropped"}
    assert row["baseline"] == first["baseline"]
    with pytest.raises(SourceError, match="does not exist"):
        source.profile(REFERENCE)
    create_and_fill(source_engine, events_table(), [])
    assert watch.check("m", source, NEXT_REFERENCE, failed=False)["status"] == OK


def test_a_table_missing_from_the_start_is_broken_until_it_appears(watch, source, source_engine):
    events_table().drop(source_engine)
    row = watch.check("m", source, REFERENCE, failed=True)
    assert row["status"] == BROKEN and row["baseline"] == {}
    assert {(c["change"], c["was"]) for c in row["changes"]} == {("dropped", None)}
    create_and_fill(source_engine, events_table(), [])
    row = watch.check("m", source, REFERENCE, failed=False)
    assert (row["status"], set(row["baseline"])) == (OK, set(WATCHED))


def test_an_unreachable_source_stores_nothing(watch, engine, tmp_path):
    down = create_db_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    raw = {"monitors": [{"name": "m", "features": [{"column": "amount"}],
                         "source": {"kind": "events", "table": "inference_log", "timestamp_column": "ts"}}]}
    try:
        src = open_source(parse_config(raw, {}).resolved_monitors()[0], down)
        with pytest.raises(SourceError, match="schema check"):
            watch.check("m", src, REFERENCE, failed=True)
    finally:
        down.dispose()
    assert stored(engine) is None


def test_due_pays_no_metadata_query_in_a_steady_cycle(watch, source, clock):
    assert watch.due("m", failed=False, reference=REFERENCE)  # never checked by this process
    watch.check("m", source, REFERENCE, failed=False)
    assert not watch.due("m", failed=False, reference=REFERENCE)
    assert watch.due("m", failed=True, reference=REFERENCE)  # name the cause of a failure
    assert watch.due("m", failed=False, reference=NEXT_REFERENCE)  # a new baseline may be due
    clock.now += timedelta(minutes=9)
    assert not watch.due("m", failed=False, reference=REFERENCE)
    clock.now += timedelta(minutes=1)
    assert watch.due("m", failed=False, reference=REFERENCE)
    assert watch.due("other", failed=False, reference=REFERENCE)


def test_due_until_a_new_reference_renews_the_baseline(watch, source):
    watch.check("m", source, REFERENCE, failed=False)
    watch.check("m", source, NEXT_REFERENCE, failed=True)  # could not renew: the run failed
    assert watch.due("m", failed=False, reference=NEXT_REFERENCE)
    watch.check("m", source, NEXT_REFERENCE, failed=False)
    assert not watch.due("m", failed=False, reference=NEXT_REFERENCE)


def test_reflections_compare_equal(source, source_engine):
    """Equal types give equal texts across reflections (each reflection builds new type objects)."""
    def texts():
        with source_engine.connect() as connection:
            types = reflect_columns(connection, "inference_log", None)
            return {name: type_text(kind, connection.dialect) for name, kind in types.items()}

    assert texts() == texts()
