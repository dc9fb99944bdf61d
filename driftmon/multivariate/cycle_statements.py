"""The multivariate statements of a steady cycle, compiled once per fit.

Building the per-row reconstruction SQL and compiling it took ~70 ms of Python
for 24 columns, against ~10 ms for PostgreSQL to plan and run it on a 5-minute
slice (bench/bench_multivariate.py), so each (fit, slice length) keeps its SQL
text and binds the window at execution, as the count statements do
(``sql.WindowStatement``). PostgreSQL's JIT compiler is turned off for these
statements: compiling their hundreds of expressions cost more than it saved
(a 5-minute slice 265 ms with it, 55 ms without; a 7-day fit 22 s, 4 s).

On PostgreSQL the fit's constants are then written into the SQL text (by psycopg's own
quoting): psycopg parses a statement's placeholders again at every execution when its
text is longer than it caches (4 KB), ~25 ms for the ~700 constants of 24 columns.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy import Connection

from driftmon.multivariate.fit import ReconstructionFit
from driftmon.multivariate.reconstruction import WindowSums, row_errors_subquery, slice_sums_select
from driftmon.multivariate.statements import read_as
from driftmon.sources.events import EventsSource
from driftmon.sources.slice_statements import ANY_WINDOW
from driftmon.sources.sql import WindowStatement, slice_bounds, slice_index, window_bounds
from driftmon.windows import TimeRange

KEPT = 64  # compiled statements kept per process: a few per monitor with multivariate drift


@contextmanager
def without_jit(connection: Connection):
    """PostgreSQL: no JIT for the statements run inside (``SET LOCAL``: until the read's rollback)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SET LOCAL jit = off")
    yield connection


class SliceSumsStatements:
    """Per (source, fit, slice length) the compiled statement of per-slice sums."""

    def __init__(self):
        self._compiled: OrderedDict[tuple, WindowStatement] = OrderedDict()

    def read(self, source: EventsSource, connection: Connection, fit: ReconstructionFit, fit_key: str,
             span: TimeRange, length: timedelta | None) -> dict[int, WindowSums]:
        """Per slice of ``length`` from ``span``'s start (index 0) the sums of ``span``'s rows in ONE
        statement; ``length`` None: the whole span as index 0."""
        key = (id(source), source.fingerprint, fit_key, length)
        compiled = self._compiled.pop(key, None)
        if compiled is None:
            compiled = WindowStatement.compile(self._statement(source, connection, fit, length), connection,
                                               source.reader.epoch)
            if connection.dialect.name == "postgresql":
                compiled = inline_constants(compiled, connection)
        self._compiled[key] = compiled
        while len(self._compiled) > KEPT:
            self._compiled.popitem(last=False)
        source.statements += 1
        with without_jit(connection):
            found = compiled.execute(connection, span, slice_bounds(span) if length is not None else None)
        d = len(fit.columns)
        return {int(row._mapping["slice"]) if length is not None else 0: WindowSums.from_row(row._mapping, d)
                for row in found}

    @staticmethod
    def _statement(source: EventsSource, connection: Connection, fit: ReconstructionFit,
                   length: timedelta | None) -> sa.Select:
        name = connection.dialect.name
        # A stored fit's columns do not say which hold text: the source's types do.
        fit = replace(fit, columns=read_as(source, fit.columns))
        carry = {}
        if length is not None:
            carry["slice"] = slice_index(name, source._timestamp, length, source.reader.epoch)
        errors = row_errors_subquery(fit, source.table, carry=carry, where=sa.and_(*source._in_window(ANY_WINDOW)),
                                     dialect=name)
        return slice_sums_select(errors, group_by=list(carry), d=len(fit.columns))


_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def inline_constants(compiled: WindowStatement, connection: Connection) -> WindowStatement:
    """The statement with every parameter but the window's written as a literal (psycopg's quoting;
    a ``%`` in a text literal doubled, as psycopg reads the text for placeholders)."""
    from psycopg import sql as psycopg_sql

    window = set(window_bounds(compiled.dialect, ANY_WINDOW, compiled.epoch)) | {"slice_origin"}
    raw = connection.connection.dbapi_connection

    def literal(match: re.Match) -> str:
        name = match.group(1)
        if name in window:
            return match.group(0)
        return psycopg_sql.Literal(compiled.parameters[name]).as_string(raw).replace("%", "%%")

    kept = {name: value for name, value in compiled.parameters.items() if name in window}
    return replace(compiled, sql=_PLACEHOLDER.sub(literal, compiled.sql), parameters=kept)
