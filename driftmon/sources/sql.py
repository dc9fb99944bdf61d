"""SQL building blocks shared by the source kinds.

Names from the config become quoted identifiers through SQLAlchemy constructs
and every value is a bound parameter: nothing here formats SQL text.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from driftmon.errors import SourceError
from driftmon.sources import dialects
from driftmon.windows import TimeRange

# SQLite compares timestamps as text: both sides are normalised to this shape.
_SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%f"
# Local times lie at most 14 h from UTC (UTC+14:00, Kiribati; UTC-12:00).
_LARGEST_UTC_OFFSET = timedelta(hours=14)
_ONE_MILLISECOND = timedelta(milliseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def source_table(table: str, schema: str | None, columns: list[str]) -> sa.TableClause:
    return sa.table(table, *(sa.column(name) for name in dict.fromkeys(columns)), schema=schema)


EPOCH_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}  # per second


@dataclass(frozen=True)
class Epoch:
    """A timestamp column of numbers: time since the epoch in 1/``unit`` seconds."""

    unit: int
    integer: bool  # an integer column: bounds round up, so ts >= ceil(start) is ts >= start

    def value(self, moment: datetime) -> int | float:
        """``moment`` in this unit, exact: integers for integer columns."""
        microseconds = (moment - _EPOCH) // timedelta(microseconds=1)
        whole, remainder = divmod(microseconds * self.unit, 1_000_000)
        if remainder == 0 or self.integer:
            return whole + (1 if remainder else 0)
        return microseconds * self.unit / 1_000_000

    @property
    def type(self) -> sa.types.TypeEngine:
        return sa.BigInteger() if self.integer else sa.Double()


def window_bounds(engine_name: str, window: TimeRange, epoch: Epoch | None = None) -> dict[str, Any]:
    """The values of ``in_range``'s bound parameters for ``window``.

    A statement compiled once can thus be executed for any window.
    """
    if epoch is not None:
        return {"window_start": epoch.value(window.start), "window_end": epoch.value(window.end)}
    if engine_name == "sqlite":
        return {
            # The raw text of a row's local time: ' ' sorts before 'T', so the
            # lower bound takes ' ' and the upper one 'T', whichever separator rows use.
            "window_scan_from": _sqlite_text(window.start - _LARGEST_UTC_OFFSET),
            "window_scan_to": _sqlite_text(window.end + _LARGEST_UTC_OFFSET).replace(" ", "T"),
            # Normalised text has millisecond steps: ts < end is ts <= end - 1 ms.
            "window_first": _sqlite_text(window.start),
            "window_last": _sqlite_text(window.end - _ONE_MILLISECOND),
        }
    if dialects.is_portable(engine_name):  # naive UTC, read in a UTC session (dialects.session_utc)
        return {"window_start": dialects.naive_utc(window.start), "window_end": dialects.naive_utc(window.end)}
    return {"window_start": window.start, "window_end": window.end}


def in_range(engine_name: str, timestamp: sa.ColumnClause, window: TimeRange,
             epoch: Epoch | None = None, suffix: str = "") -> sa.ColumnElement:
    """``start <= ts < end`` with UTC bounds, whatever the engine stores.

    ``epoch``: the column holds numbers, time since the epoch (bound in the
    column's own type, so an index on it serves the range).
    The bounds are bound parameters named as in ``window_bounds``, plus ``suffix``
    (a second range in one statement: a seasonal reference's excluded stretches).
    """
    bounds = {name + suffix: value for name, value in window_bounds(engine_name, window, epoch).items()}
    if epoch is not None:
        return sa.and_(
            timestamp >= sa.bindparam("window_start" + suffix, bounds["window_start" + suffix], type_=epoch.type),
            timestamp < sa.bindparam("window_end" + suffix, bounds["window_end" + suffix], type_=epoch.type))
    if engine_name == "sqlite":
        def bound(name):
            return sa.bindparam(name + suffix, bounds[name + suffix], type_=sa.String)

        # Text timestamps may be written '2024-01-01T00:00:00', with or without
        # fractions or an offset; strftime normalises all of them to UTC. It
        # cannot use an index, so a raw text range wider by the largest UTC
        # offset first narrows the rows an index on ts can find, and BETWEEN
        # computes strftime once per row where two comparisons computed it twice.
        normalised = sa.func.strftime(_SQLITE_TIME_FORMAT, timestamp)
        return sa.and_(
            timestamp >= bound("window_scan_from"),
            timestamp < bound("window_scan_to"),
            normalised.between(bound("window_first"), bound("window_last")),
        )
    moment = sa.DateTime(timezone=not dialects.is_portable(engine_name))
    return sa.and_(
        timestamp >= sa.bindparam("window_start" + suffix, bounds["window_start" + suffix], type_=moment),
        timestamp < sa.bindparam("window_end" + suffix, bounds["window_end" + suffix], type_=moment),
    )


def slice_index(engine_name: str, timestamp: sa.ColumnClause, length: timedelta,
                epoch: Epoch | None = None) -> sa.ColumnElement:
    """Each row's slice, counted from the bound ``slice_origin`` (epoch seconds of the first one).

    Rows are filtered to ``[origin, ...)`` first, so the difference is never
    negative and integer division is the floor. Slices are whole seconds.
    """
    seconds = int(length.total_seconds())
    origin = sa.bindparam("slice_origin", 0, type_=sa.BigInteger)
    if epoch is not None and dialects.is_portable(engine_name):
        # BIGINT casts: DuckDB would take bound integers as INT32 and overflow.
        span = sa.cast(sa.literal(seconds * epoch.unit, sa.BigInteger), sa.BigInteger)
        unit = sa.cast(sa.literal(epoch.unit, sa.BigInteger), sa.BigInteger)
        offset = timestamp - sa.cast(origin, sa.BigInteger) * unit
        return dialects.floor_divide(engine_name, offset, span, epoch.integer)
    if epoch is not None:  # numbers since the epoch: origin and length in the same unit
        span = sa.literal(seconds * epoch.unit, sa.BigInteger)
        return sa.cast((timestamp - origin * sa.literal(epoch.unit, sa.BigInteger)) // span, sa.BigInteger)
    if engine_name == "sqlite":
        # strftime('%s') reads every text form that in_range reads, in UTC.
        epoch = sa.cast(sa.func.strftime("%s", timestamp), sa.BigInteger)
        return (epoch - origin) // sa.literal(seconds, sa.BigInteger)
    micros = dialects.epoch_micros(engine_name, timestamp)
    if micros is not None:
        offset = micros - sa.cast(origin, sa.BigInteger) * sa.cast(sa.literal(1_000_000, sa.BigInteger), sa.BigInteger)
        length_us = sa.cast(sa.literal(seconds * 1_000_000, sa.BigInteger), sa.BigInteger)
        return dialects.floor_divide(engine_name, offset, length_us, True)
    # extract(epoch ...) is numeric: exact, and for naive timestamps taken as UTC.
    offset = sa.extract("epoch", timestamp) - origin
    return sa.cast(sa.func.floor(offset / sa.literal(seconds, sa.Numeric)), sa.BigInteger)


def slice_bounds(span: TimeRange) -> dict[str, Any]:
    """The value of ``slice_index``'s bound parameter for counting ``span``."""
    return {"slice_origin": int((span.start - _EPOCH).total_seconds())}


def _sqlite_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def equality_filters(table: sa.TableClause, where: dict, engine_name: str | None = None) -> list[sa.ColumnElement]:
    if engine_name is not None and dialects.is_portable(engine_name):  # byte-exact text, whatever the collation
        return [dialects.exact_text(engine_name, table.c[name]) == dialects.exact_literal(engine_name, value)
                if isinstance(value, str) else table.c[name] == sa.literal(value) for name, value in where.items()]
    return [table.c[name] == sa.literal(value) for name, value in where.items()]


def reflect_columns(connection: Connection, table: str, schema: str | None) -> dict[str, sa.types.TypeEngine]:
    """The table's columns and their types; a clear error when the table is missing."""
    own = {dialects.DUCKDB: dialects.reflect_duckdb, **dict.fromkeys(dialects.SPARK, dialects.reflect_spark)}
    if connection.dialect.name in own:
        types = own[connection.dialect.name](connection, table, schema)
        if not types:
            raise SourceError(f"table {_qualified(table, schema)} does not exist")
        return types
    try:
        columns = sa.inspect(connection).get_columns(table, schema=schema)
    except NoSuchTableError:
        columns = []
    if not columns:
        raise SourceError(f"table {_qualified(table, schema)} does not exist")
    return {column["name"]: column["type"] for column in columns}


def require_columns(available: dict, wanted: list[str], table: str, schema: str | None) -> None:
    absent = [name for name in wanted if name not in available]
    if absent:
        raise SourceError(
            f"table {_qualified(table, schema)} has no column(s) {', '.join(map(repr, absent))}"
        )


def _qualified(table: str, schema: str | None) -> str:
    return repr(f"{schema}.{table}" if schema else table)


@contextmanager
def statement_timeout(connection: Connection, timeout: timedelta | None) -> Iterator[None]:
    """Bound every statement of the block, on the engines that can.

    PostgreSQL: ``statement_timeout`` local to the transaction. SQLite: a
    progress handler that interrupts the statement once the deadline passes.
    """
    if timeout is None:
        yield
        return
    milliseconds = max(1, int(timeout.total_seconds() * 1000))
    if connection.dialect.name == "postgresql":
        connection.execute(
            sa.select(sa.func.set_config("statement_timeout", sa.literal(f"{milliseconds}ms"), sa.true()))
        )
        yield
    elif connection.dialect.name == "sqlite":
        raw = connection.connection.dbapi_connection
        deadline = datetime.now(UTC) + timeout
        raw.set_progress_handler(lambda: int(datetime.now(UTC) > deadline), 10_000)
        try:
            yield
        finally:
            raw.set_progress_handler(None, 0)
    else:
        with dialects.statement_timeout(connection, milliseconds, connection.engine.url.drivername):
            yield


@contextmanager
def source_errors(what: str, driver_errors: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Translate driver errors once, here, into SourceError naming what was read.

    Besides SQLAlchemy's own errors, those a driver raises past SQLAlchemy's wrapping: I/O
    (``OSError``: refused, reset, timed out), thrift's transport errors (PyHive when a Spark
    Thrift Server is down), chDB's, and DB-API errors (``driver_errors``: the dialect's
    ``dbapi.Error``; other PEP 249 classes are recognised by name). Programming errors
    (TypeError, KeyError, ...) are defects and pass through.
    """
    try:
        yield
    except SourceError as exc:
        raise SourceError(f"{what}: {exc}") from exc
    except SQLAlchemyError as exc:
        detail = getattr(exc, "orig", None) or exc
        raise SourceError(f"{what}: {_first_line(detail)}") from exc
    except Exception as exc:
        if not _is_driver_error(exc, driver_errors):
            raise
        raise SourceError(f"{what}: {type(exc).__name__}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# Drivers' exceptions that are not DB-API errors, as (module, class): looked up only in
# modules already imported (the driver that raised one has been), so they stay optional.
_NATIVE_DRIVER_ERRORS = (("thrift.transport.TTransport", "TTransportException"), ("chdb", "ChdbError"))
# PEP 249's classes, by name: every DB-API error derives from one of them.
_DBAPI_ERROR_NAMES = frozenset({"DatabaseError", "InterfaceError"})


def _is_driver_error(exc: Exception, driver_errors: tuple[type[BaseException], ...]) -> bool:
    if isinstance(exc, (OSError, *driver_errors)):
        return True
    for module, name in _NATIVE_DRIVER_ERRORS:
        native = getattr(sys.modules.get(module), name, None)
        if isinstance(native, type) and isinstance(exc, native):
            return True
    return any(kind.__name__ in _DBAPI_ERROR_NAMES for kind in type(exc).__mro__)


def dbapi_errors(engine: Engine) -> tuple[type[BaseException], ...]:
    """The root of the engine's driver's DB-API errors, where it has one."""
    error = getattr(getattr(engine.dialect, "dbapi", None), "Error", None)
    return (error,) if isinstance(error, type) and issubclass(error, Exception) else ()


@dataclass
class SourceReader:
    """Read-only transactions on one source table, each bounded by its timeout.

    The first one checks that the table and every column it needs exist, so a
    typo in the config fails with a message naming the missing piece.
    """

    engine: Engine
    monitor: str
    table: str
    schema: str | None
    columns: list[str]
    timeout: timedelta | None
    timestamp: str | None = None
    timestamp_unit: str | None = None  # the config's; numbers default to seconds
    numeric: list[str] = field(default_factory=list)  # columns that must hold numbers
    column_types: dict | None = field(default=None, init=False)
    epoch: Epoch | None = field(default=None, init=False)  # set when the timestamps are numbers
    # Driver connections with a read in progress, so that shutdown can cancel them.
    _active: set = field(default_factory=set, init=False, repr=False)
    _active_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @contextmanager
    def reading(self, what: str) -> Iterator[Connection]:
        label = f"monitor {self.monitor!r}, table {self.table!r}, {what}"
        with source_errors(label, dbapi_errors(self.engine)), self.engine.connect() as connection, \
                self._tracked(connection):
            if dialects.is_portable(connection.dialect.name):
                dialects.session_utc(connection)
            with statement_timeout(connection, self.timeout):
                if self.column_types is None:
                    types = reflect_columns(connection, self.table, self.schema)
                    require_columns(types, self.columns, self.table, self.schema)
                    self.epoch = self._epoch(types, connection.dialect.name)
                    require_numbers(types, self.numeric)
                    self.column_types = types
                yield connection
            connection.rollback()


    @contextmanager
    def _tracked(self, connection: Connection) -> Iterator[None]:
        raw = connection.connection.dbapi_connection
        with self._active_lock:
            self._active.add(raw)
        try:
            yield
        finally:
            with self._active_lock:
                self._active.discard(raw)

    def cancel(self) -> int:
        """Stop the reads in progress on the source (an abandoned run's query would go on
        running there otherwise): sqlite3's interrupt, psycopg's cancel request. Returns
        how many were asked to stop."""
        with self._active_lock:
            active = list(self._active)
        stopped = 0
        for raw in active:
            stop = getattr(raw, "interrupt", None) or getattr(raw, "cancel", None)
            if stop is not None:
                try:
                    stop()
                    stopped += 1
                except Exception:  # noqa: BLE001  the read may have ended meanwhile
                    pass
        return stopped

    def _epoch(self, types: dict, dialect: str) -> Epoch | None:
        if self.timestamp is None:
            return None
        column_type = types[self.timestamp]
        table = f"{self.schema}.{self.table}" if self.schema else self.table
        problem = timestamp_type_problem(dialect, self.timestamp, column_type, self.timestamp_unit, table)
        if problem:
            raise SourceError(problem)
        if is_number(column_type):
            return Epoch(EPOCH_UNITS[self.timestamp_unit or "s"], isinstance(column_type, sa.Integer))
        return None


# Types that hold no point in time. Engines' own types that driftmon does not know are
# given the benefit of the doubt: they subclass these when they are one of them.
_NOT_TIME = (sa.String, sa.Boolean, sa.LargeBinary, sa.Time, sa.Interval, sa.JSON, sa.ARRAY, sa.Uuid)


def timestamp_type_problem(dialect: str, column: str, column_type: sa.types.TypeEngine, unit: str | None,
                           table: str) -> str | None:
    """Why the timestamp column's type cannot be compared with UTC bounds, or None.

    Date/time types and numbers (time since the epoch in ``unit``) can; SQLite text
    too (in_range normalises it with strftime). Anywhere else text fails every run
    with the engine's own error (PostgreSQL: ``operator does not exist: text >=
    timestamp with time zone``), which names no column.
    """
    if is_number(column_type):
        return None
    if unit is not None:
        return (f"source.timestamp_unit applies to numeric timestamp columns; "
                f"column {column!r} is {column_type}")
    if not isinstance(column_type, _NOT_TIME) or (dialect == "sqlite" and isinstance(column_type, sa.String)):
        return None
    convert = (f"SET TimeZone = 'UTC'; ALTER TABLE {table} ALTER COLUMN {column} TYPE timestamptz "
               f"USING {column}::timestamptz" if dialect == "postgresql" else "change it to a TIMESTAMP type")
    return (f"column {column!r} of table {table!r} is {column_type}, not a date/time type or a number (time "
            f"since the epoch, with source.timestamp_unit): driftmon compares it with UTC time bounds; "
            f"convert it ({convert}) or point source.table at a view that casts it")


def is_number(column_type: sa.types.TypeEngine) -> bool:
    return isinstance(column_type, sa.Integer | sa.Numeric | sa.Float)


def require_numbers(types: dict, columns: list[str]) -> None:
    """Numeric features need number columns: text would all land in ``__missing__``, silently."""
    for name in columns:
        column_type = types[name]
        if not is_number(column_type) and not isinstance(column_type, sa.types.NullType):
            raise SourceError(f"column {name!r} is declared numeric but its type is {column_type}; "
                              f"declare it `type: categorical` or cast it in a view")


@dataclass(frozen=True)
class WindowStatement:
    """A statement compiled once, executed for any window by binding its bounds.

    Building and compiling a count statement (a CASE per column, a bound
    parameter per cut point) took more Python time than SQLite spent counting
    a window, all of it holding the GIL while /metrics waited, and its
    thousands of short-lived objects drove the cyclic GC into full collections
    (bench/bench_daemon.py). Kept as SQL text and parameter values, not as
    SQLAlchemy objects, which weighed about 1.5 MB per monitor.
    """

    dialect: str
    sql: str
    parameters: dict[str, Any]  # processed for the driver
    positions: tuple[str, ...] | None  # parameter order, for positional paramstyles
    processors: dict[str, Any]  # the driver conversions of parameters that have one, for window values
    epoch: Epoch | None = None  # numeric timestamps

    @classmethod
    def compile(cls, statement: sa.Executable, connection: Connection, epoch: Epoch | None = None) -> WindowStatement:
        dialect = connection.dialect
        compiled = statement.compile(dialect=dialect)
        if compiled.literal_execute_params or compiled.post_compile_params or compiled.escaped_bind_names:
            # Their SQL text is only final at execution: compiled.string is not what runs.
            raise ValueError("a statement with expanding, literal-execute or escaped parameters "
                             "cannot be compiled once for every window")
        processors = {}
        for name, bind in compiled.binds.items():  # by rendered name, as construct_params gives them
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                processors[name] = processor
        parameters = {
            name: processors[name](value) if name in processors else value
            for name, value in compiled.construct_params(escape_names=False).items()
        }
        return cls(
            dialect=dialect.name,
            sql=compiled.string,
            parameters=parameters,
            positions=tuple(compiled.positiontup) if dialect.positional else None,
            processors=processors,
            epoch=epoch,
        )

    def execute(self, connection: Connection, window: TimeRange, extra: dict[str, Any] | None = None) -> list:
        parameters = dict(self.parameters)
        for name, value in {**window_bounds(self.dialect, window, self.epoch), **(extra or {})}.items():
            processor = self.processors.get(name)
            parameters[name] = processor(value) if processor else value
        if self.positions is not None:
            return connection.exec_driver_sql(self.sql, tuple(parameters[n] for n in self.positions)).all()
        return connection.exec_driver_sql(self.sql, parameters).all()
