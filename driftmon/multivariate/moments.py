"""The reference fit's moments in ONE aggregate statement, and their parsing.

What NannyML's calculator needs from the reference (mean imputation of
continuous columns, most-frequent imputation and count encoding of categorical
ones, the standard scaler, and the covariance for PCA) is a function of a few
sums, so the database computes those sums and no row leaves it.

Mean imputation and cross moments. With ``x~ = x if present else mu`` (mu the
mean over present values), ``x~ - mu`` is ``x - mu`` where x is present and 0
where missing, so the centred cross product of two imputed columns is a sum over
the rows where BOTH are present::

    sum_both (x_i - mu_i)(x_j - mu_j) = Q_ij - mu_j A_ij - mu_i A_ji + mu_i mu_j N_ij

with ``Q_ij = SUM(x_i x_j)`` (NULL unless both are present), ``A_ij = SUM(x_i)``
over the rows where x_j is present, and ``N_ij`` the count of rows with both.
mu is unknown when the statement runs, but it enters only after the sums, so
this masked-sum decomposition keeps the whole fit in one statement (a two-pass
"means first, then centred sums" would need two, and a scan of the reference
each). The imputed column's mean is mu itself, exactly.

Count encoding. A categorical column's encoded value is its level's frequency
in the imputed reference, known only after the scan, so its cross moments cannot
be plain SUMs of an encoded expression. The statement therefore GROUPs BY the
categorical columns: within a group every categorical value is constant, and the
per-group count and sums of the continuous columns give every cross moment once
the frequencies are known (they are the group counts summed per level). One row
comes back per distinct combination of categorical values present in the
reference; see DESIGN.md for the high-cardinality fallback (two statements).

Non-finite values (NaN, +-inf) count as missing, as in driftmon's univariate
counts (NannyML's imputer treats NaN as missing too). ``dialect`` (the engine's
dialect name) routes constants and text through ``driftmon.sources.dialects``
(exact floats on ClickHouse/Spark, byte-wise text on MySQL/MariaDB).

Precision: raw (uncentred) sums lose digits when a column's mean is large next
to its spread; ``shifts`` subtracts a per-column constant (e.g. the mean of the
univariate profile) inside the SQL, and everything downstream is shift-invariant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import sqlalchemy as sa
from sqlalchemy.sql import ColumnElement, FromClause, Select

from driftmon.sources import dialects


@dataclass(frozen=True)
class Column:
    """One input column of the multivariate fit; ``categorical`` ones are count-encoded.

    ``text``: whether a categorical column holds text, from the source's reflected
    types (``statements.fit_columns``); None where unknown, taken as text. Only
    text goes through ``dialects.exact_text`` (:func:`category_value`). It is how
    the column is read, not what the fit is: it neither compares nor is stored.
    """

    name: str
    categorical: bool = False
    text: bool | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ReferenceMoments:
    """The statement's rows as arrays, one leading entry per group (categorical combination).

    ``keys[g]`` is the group's tuple of categorical values (None for missing);
    with ``p`` continuous columns, ``count[g, i]`` is COUNT(x_i), ``total[g, i]``
    SUM(x_i), ``cross[g, i, j]`` SUM(x_i x_j), ``masked[g, i, j]`` SUM(x_i) over
    the rows where x_j is present and ``both[g, i, j]`` the count of rows with
    both (``masked[g, i, i] = total[g, i]``, ``both[g, i, i] = count[g, i]``).
    Continuous values are those minus ``shifts``. Every array adds over groups
    and over slices, which is what makes the fit mergeable.
    """

    columns: tuple[Column, ...]
    shifts: np.ndarray
    keys: tuple[tuple, ...]
    rows: np.ndarray
    count: np.ndarray
    total: np.ndarray
    cross: np.ndarray
    masked: np.ndarray
    both: np.ndarray

    @property
    def continuous(self) -> tuple[Column, ...]:
        """The continuous columns, in the order of the arrays' column axes."""
        return tuple(c for c in self.columns if not c.categorical)

    @property
    def categorical(self) -> tuple[Column, ...]:
        """The categorical columns, in the order of ``keys``' entries."""
        return tuple(c for c in self.columns if c.categorical)


@dataclass(frozen=True)
class ReferenceMomentsQuery:
    """The statement and how to read its rows back."""

    statement: Select
    columns: tuple[Column, ...]
    shifts: np.ndarray

    def parse(self, rows: Sequence[Mapping]) -> ReferenceMoments:
        """Turn the statement's result rows (``.mappings().all()``) into :class:`ReferenceMoments`."""
        cont = [c for c in self.columns if not c.categorical]
        cats = [c for c in self.columns if c.categorical]
        p, groups = len(cont), len(rows)
        arrays = {k: np.zeros((groups, p, p)) for k in ("cross", "masked", "both")}
        count, total, n = np.zeros((groups, p)), np.zeros((groups, p)), np.zeros(groups)
        keys = []
        for g, row in enumerate(rows):
            keys.append(tuple(dialects.from_bytes(row[f"k{c}"]) for c in range(len(cats))))
            n[g] = _num(row["n"])
            for i in range(p):
                count[g, i], total[g, i] = _num(row[f"c{i}"]), _num(row[f"s{i}"])
                for j in range(p):
                    if i <= j:
                        arrays["cross"][g, i, j] = arrays["cross"][g, j, i] = _num(row[f"q{i}_{j}"])
                    if i != j:
                        arrays["masked"][g, i, j] = _num(row[f"a{i}_{j}"])
                        arrays["both"][g, i, j] = _num(row[f"m{min(i, j)}_{max(i, j)}"])
                arrays["masked"][g, i, i], arrays["both"][g, i, i] = total[g, i], count[g, i]
        return ReferenceMoments(
            columns=self.columns, shifts=self.shifts, keys=tuple(keys), rows=n, count=count, total=total, **arrays
        )


def _num(value) -> float:
    """SUM over no rows is NULL; a group without a present value contributes 0."""
    return 0.0 if value is None else float(value)


def continuous_value(source: FromClause, column: Column, shift: float = 0.0, dialect: str = "default") -> ColumnElement:
    """The column as DOUBLE (integer sums of squares overflow), NULL unless finite, minus its shift.

    ``dialects.as_double``: DuckDB's FLOAT is single precision, ClickHouse's CAST
    refuses NULL. NaN sorts above +inf on PostgreSQL and DuckDB, so the two
    comparisons exclude it there; ClickHouse needs ``isNaN``; MySQL/MariaDB
    store no non-finite value.
    """
    value = dialects.as_double(dialect, source.c[column.name])
    if dialect not in dialects.MYSQL:
        finite = [value > dialects.double(dialect, -math.inf), value < dialects.double(dialect, math.inf)]
        finite += [sa.not_(test) for test in dialects.non_finite(dialect, value)]
        value = sa.case((sa.and_(*finite), value))
    return value - dialects.double(dialect, shift) if shift else value


def category_value(source: FromClause, column: Column, dialect: str = "default") -> ColumnElement:
    """The categorical column as compared and grouped: text byte for byte on every engine.

    A column known not to hold text (``column.text`` False) is read as it is: on
    MySQL/MariaDB ``exact_text`` would turn an integer column's levels into
    strings ('10' before '9', and a mode other than SQLite's).
    """
    value = source.c[column.name]
    return value if column.text is False else dialects.exact_text(dialect, value)


# MariaDB/MySQL merge a derived table into the outer query unless it has a LIMIT.
_NO_LIMIT = 2**63 - 1


def fenced(statement: Select, dialect: str = "default") -> Select:
    """Keep a derived table from being merged into the query above it.

    Merged (SQLite's flattening, PostgreSQL's pull-up, MariaDB's derived-table
    merge), each reference to one of its columns re-evaluates the column's whole
    expression: the nested reconstruction SQL would then cost O(d^2 k) per row
    instead of O(d k) (on SQLite, 24 columns and 20,000 rows took 65 s merged).
    An OFFSET stops the first two (SQLite needs a LIMIT with it), a LIMIT the
    third; DuckDB, ClickHouse and Spark compute a derived table's columns once.
    """
    if dialect == "sqlite":
        return statement.limit(-1).offset(0)
    if dialect == "postgresql":
        return statement.offset(0)
    if dialect in dialects.MYSQL:
        return statement.limit(_NO_LIMIT)
    return statement


def reference_moments_select(
    source: FromClause,
    columns: Sequence[Column],
    where: ColumnElement | None = None,
    shifts: Mapping[str, float] | None = None,
    dialect: str = "default",
) -> ReferenceMomentsQuery:
    """The one aggregate statement of the reference fit's moments.

    ``source`` is a table (or any FROM clause) whose ``.c`` holds the columns;
    ``where`` restricts it to the reference range. Identifiers are quoted by
    SQLAlchemy, constants travel as bound parameters, and result labels are
    generated (``n``, ``c0``, ``q0_1``...), so column names never reach the SQL
    text unquoted. O(p^2) aggregates for p continuous columns.
    """
    columns = tuple(columns)
    if not columns:
        raise ValueError("multivariate: no columns to fit")
    if len({c.name for c in columns}) != len(columns):
        raise ValueError("multivariate: a column is listed twice")
    shifts = dict(shifts or {})
    cont = [c for c in columns if not c.categorical]
    cats = [c for c in columns if c.categorical]
    # Each value computed once per row in a fenced derived table, then aggregated O(p^2) times.
    values = [continuous_value(source, c, float(shifts.get(c.name, 0.0)), dialect).label(f"x{i}")
              for i, c in enumerate(cont)]
    values += [category_value(source, c, dialect).label(f"k{i}") for i, c in enumerate(cats)]
    rows = sa.select(*values).select_from(source)
    rows = fenced(rows.where(where) if where is not None else rows, dialect).subquery("mv_x")
    xs = [rows.c[f"x{i}"] for i in range(len(cont))]
    keys = [rows.c[f"k{i}"] for i in range(len(cats))]
    aggregates = [sa.func.count().label("n")]
    for i, x in enumerate(xs):
        aggregates += [sa.func.count(x).label(f"c{i}"), sa.func.sum(x).label(f"s{i}")]
        for j, y in enumerate(xs):
            if i <= j:
                aggregates.append(sa.func.sum(x * y).label(f"q{i}_{j}"))
            if i != j:
                # x_i where x_j is present: the masked sums of the decomposition above.
                aggregates.append(sa.func.sum(sa.case((y.is_not(None), x))).label(f"a{i}_{j}"))
            if i < j:
                aggregates.append(sa.func.count(sa.case((y.is_not(None), x))).label(f"m{i}_{j}"))
    statement = sa.select(*keys, *aggregates)
    if keys:
        statement = statement.group_by(*keys)
    shift_array = np.array([float(shifts.get(c.name, 0.0)) for c in cont])
    return ReferenceMomentsQuery(statement=statement, columns=columns, shifts=shift_array)
