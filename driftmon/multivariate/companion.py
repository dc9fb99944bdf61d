"""The multivariate sums inside the cycle's count statement: ONE source statement per steady cycle.

A steady cycle counts its new slices (driftmon/counting/incremental.py) with the count
statement of driftmon/sources/slice_statements.py. When the multivariate slices it needs
are those same slices, their sums ride along in that statement: a UNION ALL branch of the
per-slice sums, unpivoted into the count rows' shape, with one more column, ``mv``, that is
NULL on count rows and carries a sum on these. ``EventsSource.slice_counts`` splits them.

Count rows are ``(*extras, key, count)`` (keyed shapes) or ``(index, *extras, code, count)``;
a sum is the row ``(slice, [NULL segment], -1 - j, 0, value)`` or ``(-1 - j, slice, [NULL], 0,
0, value)`` for the j-th of ``n, s1, s2, zs0.., zz0_0..``. PostgreSQL unpivots with two
``unnest`` in one SELECT list; SQLite with a UNION ALL per sum over a materialised CTE of
the per-slice sums (a few rows). Other engines keep the second statement
(cycle_statements.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from driftmon.multivariate.cycle_statements import inline_constants
from driftmon.multivariate.fit import ReconstructionFit
from driftmon.multivariate.reconstruction import WindowSums, row_errors_subquery, slice_sums_select
from driftmon.multivariate.statements import read_as
from driftmon.sources.slice_statements import ANY_WINDOW
from driftmon.sources.sql import slice_index
from driftmon.windows import TimeRange

MERGED_ENGINES = ("postgresql", "sqlite")


def sum_names(d: int) -> list[str]:
    return ["n", "s1", "s2", *(f"zs{j}" for j in range(d)), *(f"zz{i}_{j}" for i in range(d) for j in range(i, d))]


@dataclass
class SliceCompanion:
    """The multivariate sums of ``span``'s slices, offered to the count statement of that span."""

    fit: ReconstructionFit
    fit_key: str
    span: TimeRange
    length: timedelta
    result: dict[int, WindowSums] | None = field(default=None)  # set once the count statement ran

    @property
    def key(self) -> tuple:
        return ("multivariate", self.fit_key, self.length)

    def merged(self, statement, source, keyed: bool, segmented: bool, dialect: str) -> sa.CompoundSelect:
        """``statement``'s rows with a NULL ``mv`` column, and the sums' rows in that shape."""
        counted = statement.subquery("counted")
        count_rows = sa.select(*counted.c, sa.cast(sa.null(), sa.Double).label("mv"))
        return sa.union_all(count_rows, *self._sum_rows(source, keyed, segmented, dialect))

    def _sum_rows(self, source, keyed: bool, segmented: bool, dialect: str) -> list[sa.Select]:
        fit = replace(self.fit, columns=read_as(source, self.fit.columns))
        d = len(fit.columns)
        carry = {"slice": slice_index(dialect, source._timestamp, self.length, source.reader.epoch)}
        errors = row_errors_subquery(fit, source.table, carry=carry, where=sa.and_(*source._in_window(ANY_WINDOW)),
                                     dialect=dialect)
        sums = slice_sums_select(errors, ["slice"], d).cte("mv_sums")
        if dialect == "sqlite":
            sums = sums.prefix_with("MATERIALIZED", dialect="sqlite")
        segment = [sa.cast(sa.null(), sa.BigInteger).label("segment")] if segmented else []
        zero = sa.literal(0, sa.BigInteger)
        names = sum_names(d)
        if dialect == "postgresql":
            keys = postgresql.array([sa.literal(-1 - j, sa.BigInteger) for j in range(len(names))])
            values = postgresql.array([_value(sums.c[name]) for name in names])
            return [sa.select(sums.c.slice, *segment, sa.func.unnest(keys).label("key"), zero.label("count"),
                              sa.func.unnest(values).label("mv"))]
        rows = []
        for j, name in enumerate(names):
            value = _value(sums.c[name]).label("mv")
            tag = sa.literal(-1 - j, sa.BigInteger)
            rows.append(sa.select(sums.c.slice, *segment, tag, zero, value) if keyed else
                        sa.select(tag, sums.c.slice, *segment, zero, zero, value))
        return rows

    def inline(self, compiled, connection):
        """PostgreSQL: the fit's constants in the text (cycle_statements.inline_constants says why)."""
        return inline_constants(compiled, connection) if connection.dialect.name == "postgresql" else compiled

    def split(self, found: list, keyed: bool, segmented: bool) -> list:
        """The count rows (without ``mv``), keeping the sums' rows as ``result``."""
        counts, sums = [], {}
        slice_at = 0 if keyed else 1
        tag_at = (1 + segmented) if keyed else 0
        for row in found:
            if row[-1] is None:
                counts.append(tuple(row)[:-1])
            else:
                sums.setdefault(int(row[slice_at]), {})[-1 - int(row[tag_at])] = float(row[-1])
        d = len(self.fit.columns)
        names = sum_names(d)
        self.result = {index: WindowSums.from_row({names[j]: v for j, v in values.items()}, d)
                       for index, values in sums.items()}
        return counts


def _value(total) -> sa.ColumnElement:
    """Never NULL: a NULL ``mv`` marks a count row."""
    return sa.func.coalesce(sa.cast(total, sa.Double), sa.literal(0.0, sa.Double))
