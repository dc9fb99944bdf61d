"""The reference fit in two statements, for categorical columns with many combinations.

The one-statement fit (moments.py) groups by every categorical column at once:
one result row per combination of their values present in the reference, which
three columns of 50 levels each make 125,000 rows of ~900 sums. Here instead:

1. each categorical column's level counts (one GROUP BY per column, joined by
   UNION ALL: at most the sum of their cardinalities in rows), from which the
   count encoding follows (the mode takes the missing values, as NannyML imputes);
2. the moments of the ENCODED rows, every column now a number (a categorical one
   its level's frequency, by a CASE of bound constants), in one row.

The fit is the same as the grouped one's up to the order of floating additions
(tests/test_multivariate_daemon.py compares them).
"""

from __future__ import annotations

from dataclasses import replace

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.sql import ColumnElement, FromClause

from driftmon.multivariate.fit import CategoryEncoding, ReconstructionFit, encoding_from_counts, fit_from_moments
from driftmon.multivariate.moments import Column, category_value, reference_moments_select
from driftmon.sources import dialects

# Past this many combinations of categorical levels, the fit takes these two statements.
GROUPED_COMBINATIONS = 4_096


def level_counts(connection: Connection, table: FromClause, columns: tuple[Column, ...], where: ColumnElement,
                 ) -> tuple[dict[str, dict], float]:
    """Each categorical column's ``{level: rows}`` (None: missing) and the reference's row count.

    Each column's levels in a result column of their own (NULL in the other branches): one shared
    column would take the UNION's common type, text where an integer column meets a text one
    (DuckDB, ClickHouse: the integer levels came back as strings), or fail (PostgreSQL).
    """
    name = connection.dialect.name
    cats = [c for c in columns if c.categorical]

    def branch(i: int, column: Column) -> sa.Select:
        value = category_value(table, column, name)
        levels = [value.label(f"l{j}") if j == i else sa.null().label(f"l{j}") for j in range(len(cats))]
        return (sa.select(sa.literal(i).label("col"), *levels, sa.func.count().label("rows"))
                .select_from(table).where(where).group_by(value))

    counts: dict[str, dict] = {c.name: {} for c in cats}
    for row in connection.execute(sa.union_all(*(branch(i, c) for i, c in enumerate(cats)))):
        index = int(row[0])
        counts[cats[index].name][dialects.from_bytes(row[1 + index])] = float(row[-1])
    n = sum(counts[cats[0].name].values()) if cats else 0.0
    return counts, n


def encoded_rows(table: FromClause, columns: tuple[Column, ...], encodings: dict[str, CategoryEncoding],
                 where: ColumnElement, dialect: str) -> sa.Subquery:
    """The reference's rows with each categorical column replaced by its imputed level's frequency."""
    values = []
    for column in columns:
        if not column.categorical:
            values.append(table.c[column.name].label(column.name))
            continue
        encoding = encodings[column.name]
        raw = category_value(table, column, dialect)
        whens = [(raw.is_(None), dialects.double(dialect, encoding.missing))]
        whens += [(raw == dialects.exact_literal(dialect, level), dialects.double(dialect, frequency))
                  for level, frequency in zip(encoding.levels, encoding.frequencies, strict=True)]
        values.append(sa.case(*whens, else_=dialects.double(dialect, encoding.unknown)).label(column.name))
    return sa.select(*values).select_from(table).where(where).subquery("mv_encoded")


def fit_in_two_statements(connection: Connection, table: FromClause, columns: tuple[Column, ...],
                          where: ColumnElement, n_components: float | int) -> ReconstructionFit | None:
    """Level counts, then the encoded rows' moments; None when the reference holds fewer than 2 rows."""
    name = connection.dialect.name
    counts, n = level_counts(connection, table, columns, where)
    if n < 2:
        return None
    encodings = {column: encoding_from_counts(column, found, n) for column, found in counts.items()}
    encoded = encoded_rows(table, columns, encodings, where, name)
    numbers = tuple(Column(c.name) for c in columns)
    # Frequencies vary little around their mean: raw sums of their squares would cancel digits, so
    # each is summed less its mean, known exactly from the level counts (the fit is shift-invariant).
    shifts = {column: sum(f * counts[column].get(level, 0.0) for level, f in zip(e.levels, e.frequencies,
                                                                                  strict=True)) / n
              + e.missing * counts[column].get(None, 0.0) / n for column, e in encodings.items()}
    query = reference_moments_select(encoded, numbers, shifts=shifts, dialect=name)
    moments = query.parse(connection.execute(query.statement).mappings().all())
    return replace(fit_from_moments(moments, n_components), columns=columns, encodings=encodings)


def grouped_fits(columns: tuple[Column, ...], levels: dict[str, int | None]) -> bool:
    """Whether the one grouped statement suits: every categorical column's level count known
    (``levels``: from the reference profile; None where it kept only the top ones) and their
    combinations at most GROUPED_COMBINATIONS."""
    combinations = 1
    for column in columns:
        if column.categorical:
            known = levels.get(column.name)
            if known is None:
                return False
            combinations *= known + 1  # and missing
    return combinations <= GROUPED_COMBINATIONS
