"""What the engines beyond SQLite and PostgreSQL need said differently (issue 17).

SQLite and PostgreSQL keep their own branches in sql.py and events.py; every
other engine (MariaDB/MySQL, DuckDB, ClickHouse/chDB, Spark SQL and whatever
else has a SQLAlchemy dialect) takes the portable statements, adjusted here
where an engine's rules would give other bins:

- timestamps are bound as naive UTC and each connection's session time zone is
  UTC, so a zone-aware column (MySQL ``TIMESTAMP``, DuckDB ``TIMESTAMPTZ``,
  ClickHouse ``DateTime``) reads the same instants as a naive one;
- MySQL/MariaDB compare text case- and trailing-space-insensitively by default
  (``'b' = 'B '``): categories, their counts and ``where`` filters compare the
  bytes instead, as SQLite and PostgreSQL (collation "C") do;
- ClickHouse's NaN is neither above nor below any number, so it is tested with
  ``isNaN``; MariaDB/MySQL cannot store NaN or ±inf at all;
- ``CAST(x AS INTEGER)`` rounds on MySQL and DuckDB (it truncates on SQLite):
  sorted positions are floored explicitly;
- quantile cut points come from the engine's own ordered aggregate where it
  interpolates as numpy does (DuckDB ``quantile_cont``, ClickHouse
  ``quantilesExactInclusive``), from the portable ranked query elsewhere;
- Spark SQL through PyHive (``hive://`` to the Spark Thrift Server): PyHive
  writes bound values into the statement text, and its string escaping is not
  Spark's (``'b''q'`` reads ``bq``, a backslash escapes): driftmon's text
  literals reach Spark as hex bytes decoded there, and its floats as text
  parsed to DOUBLE (a bare ``0.1`` is a DECIMAL on Spark); columns are read
  with ``DESCRIBE TABLE`` on quoted names (PyHive's reflection quotes nothing);
- statement timeouts: MariaDB ``max_statement_time``, MySQL
  ``max_execution_time``, ClickHouse ``max_execution_time``, Spark a
  cancel at the deadline (spark_deadline.py), DuckDB an interrupt from a timer;
  any other engine cannot bound a statement, which is logged once per source.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import mysql

MYSQL = frozenset({"mysql", "mariadb"})
DUCKDB = "duckdb"
CLICKHOUSE = frozenset({"chdb", "clickhouse", "clickhousedb"})
SPARK = frozenset({"hive", "spark", "databricks"})
log = logging.getLogger(__name__)
_warned_timeouts: set[tuple[str, str]] = set()
_EPOCH_TEXT = "1970-01-01 00:00:00"


def is_portable(name: str) -> bool:
    """An engine without a branch of its own in sql.py/events.py (neither SQLite nor PostgreSQL)."""
    return name not in ("sqlite", "postgresql")


def naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def session_utc(connection: Connection) -> None:
    """The session's time zone is UTC, so zone-aware timestamp columns read as UTC."""
    name = connection.dialect.name
    if name in MYSQL:
        connection.exec_driver_sql("SET time_zone = '+00:00'")
    elif name == DUCKDB:
        try:
            connection.exec_driver_sql("SET TimeZone = 'UTC'")
        except sa.exc.DBAPIError:  # built without ICU: no zones at all, everything is UTC
            connection.rollback()
    elif name in CLICKHOUSE:
        connection.exec_driver_sql("SET session_timezone = 'UTC'")
        # The portable count statement repeats its CTE once per column: 24 columns
        # exceed ClickHouse's default AST limit (50 000 expanded elements).
        connection.exec_driver_sql("SET max_ast_elements = 5000000")
        connection.exec_driver_sql("SET max_expanded_ast_elements = 5000000")
    elif name in SPARK:
        connection.exec_driver_sql("SET spark.sql.session.timeZone = UTC")


def epoch_micros(name: str, timestamp: sa.ColumnElement) -> sa.ColumnElement | None:
    """Exact integer microseconds since the epoch of a timestamp column, on the portable engines.

    (``extract(epoch ...)`` is a double on DuckDB: a row a microsecond before a
    slice edge could round onto it.) None: the engine has none; the generic
    ``extract(epoch ...)`` applies.
    """
    if name in MYSQL:
        # Independent of the session time zone for DATETIME; TIMESTAMP reads in UTC (session_utc).
        return sa.func.timestampdiff(sa.literal_column("MICROSECOND"), sa.literal(_EPOCH_TEXT), timestamp)
    if name == DUCKDB:
        return sa.func.epoch_us(timestamp)
    if name in CLICKHOUSE:
        return sa.func.toUnixTimestamp64Micro(sa.func.toDateTime64(timestamp, 6))
    if name in SPARK:
        # unix_micros takes TIMESTAMP only; a TIMESTAMP_NTZ (Parquet's naive time) reads as UTC (session_utc).
        return sa.func.unix_micros(sa.cast(timestamp, sa.DateTime))
    return None


def floor_divide(name: str, numerator: sa.ColumnElement, denominator: sa.ColumnElement,
                 integer: bool) -> sa.ColumnElement:
    """``floor(numerator / denominator)`` as a BIGINT, for a numerator that is never negative.

    Integers divide as integers (``/`` is a double division on DuckDB, ClickHouse
    and Spark, and CAST rounds on DuckDB and MySQL).
    """
    grouped = sa.sql.elements.Grouping(numerator)  # a custom operator does not parenthesise it
    if integer and name in MYSQL:
        return grouped.op("DIV")(denominator)
    if integer and name == DUCKDB:
        return sa.cast(grouped.op("//")(denominator), sa.BigInteger)
    if integer and name in CLICKHOUSE:
        return sa.func.intDiv(numerator, denominator)
    if integer and name in SPARK:
        return grouped.op("div")(denominator)
    return sa.cast(sa.func.floor(numerator / sa.cast(denominator, sa.Double)), sa.BigInteger)


def exact_text(name: str, value: sa.ColumnElement) -> sa.ColumnElement:
    """Text compared and grouped byte for byte (code-point order in UTF-8)."""
    if name in MYSQL:
        return sa.cast(sa.cast(value, mysql.CHAR(charset="utf8mb4")), mysql.BINARY())
    return value


def exact_literal(name: str, value: object) -> sa.ColumnElement:
    if name in MYSQL and isinstance(value, str):
        return sa.cast(sa.literal(value), mysql.BINARY())
    if name in SPARK and isinstance(value, str):
        # Hex digits survive any escaping; the bytes are decoded by Spark (module docstring).
        return sa.func.decode(sa.literal_column(f"X'{value.encode('utf-8').hex()}'"), sa.literal_column("'UTF-8'"))
    return sa.literal(value)


def category_codes(name: str, value: sa.ColumnElement, categories: list, otherwise: int) -> sa.ColumnElement:
    """Each known category's code (its position), ``otherwise`` for the rest."""
    if name in SPARK:
        return sa.case(*((value == exact_literal(name, c), i) for i, c in enumerate(categories)), else_=otherwise)
    return sa.case({category: i for i, category in enumerate(categories)}, value=value, else_=otherwise)


def from_bytes(value: object) -> object:
    """A category read back through ``exact_text``: MySQL returns the bytes."""
    return value.decode("utf-8") if isinstance(value, bytes | bytearray) else value


def double(name: str, value: float) -> sa.ColumnElement:
    """A float64 literal that reaches the engine exactly.

    chDB's driver writes bound floats with 15 significant digits (cut points
    would move, and the largest double would become inf): ClickHouse gets the
    shortest exact text and parses it, which rounds correctly. Typed DOUBLE: a
    divisor of no known type is CAST to Decimal(38, 9) by SQLAlchemy's true
    division on chdb-sqlalchemy (9 decimals: z-scores off by 1e-10).
    """
    if name in CLICKHOUSE:
        return sa.func.toFloat64(sa.literal(repr(float(value)), sa.String), type_=sa.Double)
    if name in SPARK:
        return sa.cast(sa.literal(repr(float(value)), sa.String), sa.Double)
    return sa.literal(value, sa.Double)


def as_double(name: str, value: sa.ColumnElement) -> sa.ColumnElement:
    """A numeric column's values as float64, NULL staying NULL.

    ClickHouse's ``CAST(x AS Float64)`` makes a Nullable column non-Nullable and
    raises at its first NULL (CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN); its
    ``toFloat64`` keeps the Nullable. ``sa.Double`` elsewhere: DuckDB's FLOAT
    is single precision. Typed DOUBLE, as ``double`` says why.
    """
    if name in CLICKHOUSE:
        return sa.func.toFloat64(value, type_=sa.Double)
    return sa.cast(value, sa.Double)


def non_finite(name: str, value: sa.ColumnElement) -> list[sa.ColumnElement]:
    """Extra tests for NaN, where NaN does not compare above every number."""
    return [sa.func.isNaN(value)] if name in CLICKHOUSE else []


def floor_integer(name: str, value: sa.ColumnElement) -> sa.ColumnElement:
    """``floor(value)`` as an integer; SQLite's CAST truncates, the others' may round."""
    return sa.cast(sa.func.floor(value), sa.BigInteger)


def filtered(name: str, aggregate, value: sa.ColumnElement, condition: sa.ColumnElement) -> sa.ColumnElement:
    """``aggregate(value) FILTER (WHERE condition)``; MySQL/MariaDB have no FILTER clause."""
    if name in MYSQL:
        return aggregate(sa.case((condition, value)))
    return aggregate(value).filter(condition)


def has_ordered_quantiles(name: str) -> bool:
    """Engines whose own ordering gives the cut points in one statement (all columns).

    Not Spark: its exact ways (``percentile``, or sorting ``collect_list``) hold a
    column's whole reference in one in-memory aggregation buffer (a local 2 GB
    Thrift Server shut its SparkContext down in that statement at 8.75 M rows
    and 20 columns); the portable ranked query sorts, spilling to disk.
    """
    return name == DUCKDB or name in CLICKHOUSE


def ordered_quantiles(name: str, value: sa.ColumnElement, present: sa.ColumnElement,
                      levels: list[float]) -> sa.ColumnElement:
    """DuckDB: all of a column's quantiles in one ordered aggregate, ``quantile_cont``.

    It takes the virtual index (n − 1)·q and interpolates as numpy's "linear"
    does, to the bit in tests/test_engines_agree.py.
    """
    return sa.func.quantile_cont(value, sa.literal(levels, sa.ARRAY(sa.Double))).filter(present)


def clickhouse_sorted(value: sa.ColumnElement, present: sa.ColumnElement) -> sa.ColumnElement:
    """ClickHouse: a column's present values, sorted by the engine (``arraySort(groupArrayIf(...))``).

    ``quantileExactInclusive`` has numpy's definition but interpolates
    differently (cut points an ulp apart, so other labels): the values either
    side of each virtual index are read from this array and interpolated here.
    """
    return sa.func.arraySort(sa.func.groupArrayIf(value, present))


def clickhouse_neighbours(values: sa.ColumnElement, level: float) -> list[sa.ColumnElement]:
    """The sorted values at floor((n − 1)·q) and the next position (clipped), 0-based as numpy's."""
    n = sa.func.length(values)
    below = sa.func.toUInt64(sa.func.floor((n - 1) * double(CLICKHOUSE_NAME, level)))
    above = sa.func.least(below + 1, n - 1)
    return [sa.func.arrayElement(values, below + 1), sa.func.arrayElement(values, above + 1)]


CLICKHOUSE_NAME = "chdb"


def unpivot(name: str, keys: list[sa.ColumnElement]) -> sa.ColumnElement:
    """One output row per element of ``keys``: ClickHouse's ``arrayJoin``, Spark's ``explode``,
    DuckDB's ``unnest`` of a list."""
    if name == DUCKDB:
        return sa.func.unnest(sa.func.list_value(*keys))
    array = sa.func.array(*keys)
    return sa.func.explode(array) if name in SPARK else sa.func.arrayJoin(array)


def unpivots(name: str) -> bool:
    """Engines whose count statement unpivots each row's keyed codes in one scan (slice_statements.py)."""
    return name in CLICKHOUSE or name in SPARK or name == DUCKDB


def reflect_duckdb(connection: Connection, table: str, schema: str | None) -> dict[str, sa.types.TypeEngine]:
    """Column types from information_schema: duckdb-engine's reflection queries a
    ``pg_catalog.pg_collation`` that DuckDB lacks under SQLAlchemy 2.1."""
    columns = sa.table("columns", sa.column("table_name"), sa.column("table_schema"), sa.column("column_name"),
                       sa.column("data_type"), sa.column("ordinal_position"), schema="information_schema")
    statement = sa.select(columns.c.column_name, columns.c.data_type).where(columns.c.table_name == table)
    if schema is not None:
        statement = statement.where(columns.c.table_schema == schema)
    else:
        statement = statement.where(columns.c.table_schema == sa.func.current_schema())
    rows = connection.execute(statement.order_by(columns.c.ordinal_position)).all()
    return {name: _duckdb_type(kind) for name, kind in rows}


def reflect_spark(connection: Connection, table: str, schema: str | None) -> dict[str, sa.types.TypeEngine]:
    """Column types from ``DESCRIBE TABLE`` on quoted names; {} when there is no such table."""
    quote = connection.dialect.identifier_preparer.quote_identifier
    name = quote(table) if schema is None else f"{quote(schema)}.{quote(table)}"
    try:
        rows = connection.exec_driver_sql(f"DESCRIBE TABLE {name}").all()
    except sa.exc.DBAPIError as exc:
        if "TABLE_OR_VIEW_NOT_FOUND" in str(exc.orig):
            return {}
        raise
    types = {}
    for column, kind, *_ in rows:
        if not column or column.startswith("#"):  # "# Partition Information" and what follows repeats columns
            break
        types[column] = _spark_type(kind)
    return types


_SPARK_TYPES = {
    "double": sa.Double, "float": sa.Float, "bigint": sa.BigInteger, "int": sa.Integer, "smallint": sa.SmallInteger,
    "tinyint": sa.SmallInteger, "string": sa.String, "varchar": sa.String, "char": sa.String, "boolean": sa.Boolean,
    "date": sa.Date, "timestamp": sa.DateTime, "timestamp_ntz": sa.DateTime, "decimal": sa.Numeric,
}


def _spark_type(kind: str) -> sa.types.TypeEngine:
    base = kind.split("(")[0].split("<")[0].strip().lower()
    return _SPARK_TYPES.get(base, sa.types.NullType)()


_DUCKDB_TYPES = {
    "DOUBLE": sa.Double, "FLOAT": sa.Float, "REAL": sa.Float, "BIGINT": sa.BigInteger, "INTEGER": sa.Integer,
    "SMALLINT": sa.SmallInteger, "TINYINT": sa.SmallInteger, "HUGEINT": sa.BigInteger, "UBIGINT": sa.BigInteger,
    "UINTEGER": sa.BigInteger, "USMALLINT": sa.Integer, "UTINYINT": sa.SmallInteger, "VARCHAR": sa.String,
    "BOOLEAN": sa.Boolean, "DATE": sa.Date, "TIMESTAMP": sa.DateTime, "TIMESTAMP_NS": sa.DateTime,
    "TIMESTAMP_MS": sa.DateTime, "TIMESTAMP_S": sa.DateTime,
}


def _duckdb_type(kind: str) -> sa.types.TypeEngine:
    kind = kind.upper()
    if kind.startswith("DECIMAL"):
        return sa.Numeric()
    if kind == "TIMESTAMP WITH TIME ZONE":
        return sa.DateTime(timezone=True)
    return _DUCKDB_TYPES.get(kind, sa.types.NullType)()


@contextmanager
def statement_timeout(connection: Connection, milliseconds: int, source: str) -> Iterator[None]:
    """Bound the block's statements on the portable engines that can; say so once where they cannot."""
    name = connection.dialect.name
    if name in MYSQL:
        mariadb = getattr(connection.dialect, "is_mariadb", False)
        variable, value = ("max_statement_time", milliseconds / 1000) if mariadb else \
            ("max_execution_time", milliseconds)
        connection.exec_driver_sql(f"SET SESSION {variable} = {value!r}")  # a number driftmon computed
        try:
            yield
        finally:
            connection.exec_driver_sql(f"SET SESSION {variable} = 0")
    elif name in CLICKHOUSE:
        connection.exec_driver_sql(f"SET max_execution_time = {milliseconds / 1000!r}")
        try:
            yield
        finally:
            connection.exec_driver_sql("SET max_execution_time = 0")
    elif name in SPARK:
        from driftmon.sources.spark_deadline import deadline

        with deadline(connection, milliseconds):
            yield
    elif name == DUCKDB:
        raw = connection.connection.dbapi_connection
        timer = threading.Timer(milliseconds / 1000, raw.interrupt)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
    else:
        if (name, source) not in _warned_timeouts:
            _warned_timeouts.add((name, source))
            log.warning("source.timeout is not enforced: driftmon cannot bound a statement on %s", name,
                        extra={"event": "source.timeout_unsupported", "dialect": name, "source": source})
        yield


def timeout_supported(name: str) -> bool:
    return name in ("sqlite", "postgresql", DUCKDB) or name in MYSQL or name in CLICKHOUSE or name in SPARK


def span(timeout: timedelta) -> int:
    return max(1, int(timeout.total_seconds() * 1000))
