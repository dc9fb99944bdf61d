"""SQL building blocks shared by the source kinds.

Names from the config become quoted identifiers through SQLAlchemy constructs
and every value is a bound parameter: nothing here formats SQL text.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from driftmon.errors import SourceError
from driftmon.windows import TimeRange

# SQLite compares timestamps as text: both sides are normalised to this shape.
_SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%f"
_ONE_DAY = timedelta(days=1)


def source_table(table: str, schema: str | None, columns: list[str]) -> sa.TableClause:
    return sa.table(table, *(sa.column(name) for name in dict.fromkeys(columns)), schema=schema)


def in_range(engine_name: str, timestamp: sa.ColumnClause, window: TimeRange) -> sa.ColumnElement:
    """``start <= ts < end`` with UTC bounds, whatever the engine stores."""
    if engine_name == "sqlite":
        # Text timestamps may be written '2024-01-01T00:00:00', with or without
        # fractions or an offset; strftime normalises all of them to UTC. It
        # cannot use an index, so a raw text range one day wider (any offset,
        # either separator) first narrows the rows an index on ts can find.
        normalised = sa.func.strftime(_SQLITE_TIME_FORMAT, timestamp)
        return sa.and_(
            timestamp >= sa.literal(_sqlite_text(window.start - _ONE_DAY)),
            timestamp < sa.literal(_sqlite_text(window.end + _ONE_DAY)),
            normalised >= sa.literal(_sqlite_text(window.start)),
            normalised < sa.literal(_sqlite_text(window.end)),
        )
    return sa.and_(
        timestamp >= sa.literal(window.start, sa.DateTime(timezone=True)),
        timestamp < sa.literal(window.end, sa.DateTime(timezone=True)),
    )


def _sqlite_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def equality_filters(table: sa.TableClause, where: dict) -> list[sa.ColumnElement]:
    return [table.c[name] == sa.literal(value) for name, value in where.items()]


def reflect_columns(connection: Connection, table: str, schema: str | None) -> dict[str, sa.types.TypeEngine]:
    """The table's columns and their types; a clear error when the table is missing."""
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
        yield


@contextmanager
def source_errors(what: str) -> Iterator[None]:
    """Translate driver errors once, here, into SourceError naming what was read."""
    try:
        yield
    except SourceError as exc:
        raise SourceError(f"{what}: {exc}") from exc
    except SQLAlchemyError as exc:
        detail = getattr(exc, "orig", None) or exc
        first_line = str(detail).strip().splitlines()[0] if str(detail).strip() else type(detail).__name__
        raise SourceError(f"{what}: {first_line}") from exc



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
    column_types: dict | None = field(default=None, init=False)

    @contextmanager
    def reading(self, what: str) -> Iterator[Connection]:
        label = f"monitor {self.monitor!r}, table {self.table!r}, {what}"
        with source_errors(label), self.engine.connect() as connection:
            with statement_timeout(connection, self.timeout):
                if self.column_types is None:
                    types = reflect_columns(connection, self.table, self.schema)
                    require_columns(types, self.columns, self.table, self.schema)
                    self.column_types = types
                yield connection
            connection.rollback()
