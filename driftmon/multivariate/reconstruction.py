"""The reconstruction error of every row, computed in the database, and its per-slice sums.

NannyML's error of a row is ``||z - V V^T z||`` with z the imputed, encoded,
standardised row and V the kept components; a window's value is the mean over
its rows and its sampling error ``std(ddof=1) / sqrt(n)``. Both follow from the
per-slice COUNT, SUM(err) and SUM(err^2), which add across slices.

Why nested derived tables rather than one flat expression: written inline, each
projection would repeat every z expression (O(d^2 k) terms), and the short form
``||z||^2 - ||V^T z||^2`` cancels digits and can go slightly negative (SQLite's
sqrt then returns NULL, PostgreSQL's raises). Each level names its outputs once:
z (d terms), then projections (d terms each), then the residual, so the SQL has
O(d * min(k, d - k)) terms and the final sum is a sum of squares, never negative.
The residual is taken from whichever basis is smaller: ``z - V (V^T z)`` with the
k kept components, or directly ``W^T z`` with the d - k others (same norm, as
[V W] is orthonormal). Every level is fenced (``moments.fenced``): an engine
that merged it into the level above would re-evaluate each named expression
wherever it is used, which is the blow-up the nesting exists to avoid.
"""

from __future__ import annotations

import functools
import math
import operator
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.sql import ColumnElement, FromClause, Select, Subquery

from driftmon.multivariate.fit import ReconstructionFit
from driftmon.multivariate.moments import category_value, continuous_value, fenced
from driftmon.sources import dialects


def _total(terms: Sequence[ColumnElement]) -> ColumnElement:
    return functools.reduce(operator.add, terms)


def standardized_values(fit: ReconstructionFit, source: FromClause, dialect: str = "default") -> list[ColumnElement]:
    """z of each column as SQL: imputed, count-encoded and scaled exactly as NannyML does.

    A missing continuous value is imputed with the mean, which standardises to 0,
    hence the COALESCE. A categorical value maps to its level's standardised
    frequency, a missing one to the mode's, an unseen one to frequency 0's.
    Constants are bound parameters (``dialects.double``: exact on every engine).
    """

    def _number(value: float) -> ColumnElement:
        return dialects.double(dialect, float(value))

    values = []
    for j, column in enumerate(fit.columns):
        mean, scale = float(fit.means[j]), float(fit.scales[j])
        if not column.categorical:
            z = (continuous_value(source, column, dialect=dialect) - _number(mean)) / _number(scale)
            values.append(sa.func.coalesce(z, _number(0.0)))
            continue
        enc = fit.encodings[column.name]
        raw = category_value(source, column, dialect)
        whens = [(raw.is_(None), _number((enc.missing - mean) / scale))]
        levels = zip(enc.levels, enc.frequencies, strict=True)
        whens += [(raw == dialects.exact_literal(dialect, level), _number((f - mean) / scale)) for level, f in levels]
        values.append(sa.case(*whens, else_=_number((enc.unknown - mean) / scale)))
    return values


def row_errors_subquery(
    fit: ReconstructionFit,
    source: FromClause,
    carry: Mapping[str, ColumnElement] | None = None,
    where: ColumnElement | None = None,
    basis: str = "auto",
    dialect: str = "default",
    residuals: bool = False,
) -> Subquery:
    """A derived table with one row per source row: ``carry``'s labels, ``z0..z{d-1}`` and ``err``.

    ``carry`` passes expressions through (a slice key, a timestamp); ``where``
    filters the source rows; ``basis`` is ``"auto"`` (the smaller), ``"kept"`` or
    ``"complement"``; the result is the same up to rounding. ``dialect`` as in
    ``moments.reference_moments_select``. ``residuals`` adds each column's
    residual ``r0..r{d-1}`` (``err^2 = sum r_i^2``): what ``explain`` needs to say
    which columns the reconstruction misses (O(d^2) terms more with the complement basis).
    """

    def number(value: float) -> ColumnElement:
        return dialects.double(dialect, float(value))

    def combination(coefficients, columns) -> ColumnElement:
        return _total([number(a) * column for a, column in zip(coefficients, columns, strict=True)])

    carry = dict(carry or {})
    d, k = len(fit.columns), fit.n_components
    if basis == "auto":
        basis = "kept" if k < d - k else "complement"
    if basis not in ("kept", "complement"):
        raise ValueError(f"multivariate: basis {basis!r} is not 'auto', 'kept' or 'complement'")
    zs, rs = [f"z{j}" for j in range(d)], [f"r{i}" for i in range(d)]
    values = zip(standardized_values(fit, source, dialect), zs, strict=True)
    level = sa.select(*(e.label(name) for name, e in carry.items()), *(z.label(name) for z, name in values))
    level = level.select_from(source)
    table = fenced(level.where(where) if where is not None else level, dialect).subquery("mv_z")

    def keep(t: Subquery, *more: str) -> list[ColumnElement]:
        return [t.c[name] for name in (*carry, *zs, *more)]

    coef = (fit.components if basis == "kept" else fit.complement).detach().cpu().numpy()
    width = coef.shape[1]
    ps = [f"p{c}" for c in range(width)]
    projections = [combination(coef[:, c], [table.c[z] for z in zs]).label(ps[c]) for c in range(width)]
    table = fenced(sa.select(*keep(table), *projections), dialect).subquery("mv_p")
    if basis == "kept" or residuals:
        # Named residuals, so that squaring one does not repeat it: r = z - V p, or r = W q.
        if basis == "kept":
            parts = [table.c[zs[i]] - combination(coef[i], [table.c[p] for p in ps]) if width else table.c[zs[i]]
                     for i in range(d)]
        else:
            parts = [combination(coef[i], [table.c[p] for p in ps]) if width else number(0.0) for i in range(d)]
        table = sa.select(*keep(table, *ps), *(r.label(name) for r, name in zip(parts, rs, strict=True)))
        table = fenced(table, dialect).subquery("mv_r")
    squares = [table.c[name] for name in (rs if basis == "kept" else ps)]
    error = sa.func.sqrt(_total([part * part for part in squares])) if squares else number(0.0)
    return fenced(sa.select(*keep(table, *(rs if residuals else ())), error.label("err")), dialect).subquery("mv_err")


def slice_sums_select(
    errors: Subquery, group_by: Sequence[str] = (), d: int | None = None, moments: bool = True
) -> Select:
    """Per group of ``group_by`` (carried labels): ``n``, ``s1`` = SUM(err), ``s2`` = SUM(err^2),
    with ``moments`` the window's ``zs{j}`` = SUM(z_j) and ``zz{i}_{j}`` = SUM(z_i z_j) (i <= j)
    for the Gaussian KL, and where ``errors`` carries residuals, ``rr{i}`` = SUM(r_i^2). All
    additive over slices."""
    if d is None:
        d = sum(1 for c in errors.c if c.name.startswith("z") and c.name[1:].isdigit())
    err = errors.c["err"]
    aggregates = [sa.func.count().label("n"), sa.func.sum(err).label("s1"), sa.func.sum(err * err).label("s2")]
    if moments:
        z = [errors.c[f"z{j}"] for j in range(d)]
        aggregates += [sa.func.sum(z[j]).label(f"zs{j}") for j in range(d)]
        aggregates += [sa.func.sum(z[i] * z[j]).label(f"zz{i}_{j}") for i in range(d) for j in range(i, d)]
    if f"r{d - 1}" in errors.c:
        aggregates += [sa.func.sum(errors.c[f"r{i}"] * errors.c[f"r{i}"]).label(f"rr{i}") for i in range(d)]
    keys = [errors.c[name] for name in group_by]
    statement = sa.select(*keys, *aggregates)
    return statement.group_by(*keys) if keys else statement


@dataclass(frozen=True)
class WindowSums:
    """A slice's (or a window's) sums; ``a + b`` merges two slices exactly.

    ``rr`` (per column SUM r_i^2, when the statement had residuals) sums to ``s2``.
    """

    n: float
    s1: float
    s2: float
    zsum: np.ndarray
    zz: np.ndarray
    rr: np.ndarray | None = None

    @classmethod
    def from_row(cls, row: Mapping, d: int) -> WindowSums:
        """Read one row of :func:`slice_sums_select` (without ``moments``, the z sums are zeros)."""
        zsum, zz = np.zeros(d), np.zeros((d, d))
        if f"zs{d - 1}" in row:
            for i in range(d):
                zsum[i] = float(row[f"zs{i}"] or 0.0)
                for j in range(i, d):
                    zz[i, j] = zz[j, i] = float(row[f"zz{i}_{j}"] or 0.0)
        rr = np.array([float(row[f"rr{i}"] or 0.0) for i in range(d)]) if f"rr{d - 1}" in row else None
        return cls(float(row["n"]), float(row["s1"] or 0.0), float(row["s2"] or 0.0), zsum, zz, rr)

    def __add__(self, other: WindowSums) -> WindowSums:
        rr = None if self.rr is None or other.rr is None else self.rr + other.rr
        return WindowSums(
            self.n + other.n, self.s1 + other.s1, self.s2 + other.s2, self.zsum + other.zsum, self.zz + other.zz, rr
        )

    def residual_shares(self) -> np.ndarray:
        """Each column's mean squared residual, ``rr / n``: summed over columns, the mean of err^2.

        ``explain`` compares a window's shares with the reference's to name the
        columns whose relationship to the others the reference's components miss.
        """
        if self.rr is None:
            raise ValueError("multivariate: these sums were counted without residuals")
        return self.rr / self.n

    @property
    def mean_error(self) -> float:
        """The window's reconstruction error: NannyML's ``reconstruction_error`` value."""
        return self.s1 / self.n if self.n else math.nan

    @property
    def sampling_error(self) -> float:
        """NannyML's sampling error, ``std(err, ddof=1) / sqrt(n)``, from the three sums."""
        if self.n < 2:
            return math.nan
        variance = max(self.s2 - self.s1 * self.s1 / self.n, 0.0) / (self.n - 1)
        return math.sqrt(variance / self.n)


def _sqrt(value):
    """sqrt for SQLite builds without math functions; NULL in, NULL out, like the built-in."""
    return None if value is None else math.sqrt(value)


def _has_sqrt(engine: Engine) -> bool:
    with engine.connect() as connection:
        try:
            connection.exec_driver_sql("SELECT sqrt(4.0)").scalar()
        except sa.exc.OperationalError:
            return False
    return True


def ensure_sqlite_sqrt(engine: Engine, force: bool = False) -> bool:
    """Give every SQLite connection of ``engine`` a ``sqrt`` if its build lacks one.

    SQLite has sqrt only when compiled with SQLITE_ENABLE_MATH_FUNCTIONS (3.35+);
    Python's own sqrt is IEEE correctly rounded, as is the C library's, so the
    results are identical. Returns whether the function was added (``force``
    adds it even over a built-in one: how the tests exercise this path); a
    no-op for other engines.
    """
    if engine.dialect.name != "sqlite":
        return False
    if not force and _has_sqrt(engine):
        return False

    @event.listens_for(engine, "connect")
    def _add_sqrt(dbapi_connection, _record) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.create_function("sqrt", 1, _sqrt, deterministic=True)

    engine.dispose()  # pooled connections were opened before the listener
    return True


def reference_band(
    values: Sequence[float], multiplier: float = 3.0, lower_limit: float | None = 0.0
) -> tuple[float | None, float | None]:
    """NannyML's default thresholds from the reference chunks' values: mean -+ ``multiplier`` std.

    The std is the population one (``np.nanstd``), NaN chunks are ignored, and
    a lower bound at or below ``lower_limit`` is dropped (None), as NannyML does
    for the reconstruction error (its limit 0; a KL's limit is 0 too). The
    chunks are window-sized runs of the reference's stored slices, summed, so
    calibrating never re-reads the source.
    """
    array = np.asarray(values, dtype=float)
    if not np.isfinite(array).any():
        return None, None
    mean, std = float(np.nanmean(array)), float(np.nanstd(array))
    lower, upper = mean - multiplier * std, mean + multiplier * std
    if lower_limit is not None and lower <= lower_limit:
        lower = None
    return lower, upper


def outside(value: float, band: tuple[float | None, float | None]) -> bool:
    """NannyML's alert: the value is not strictly inside the band (a missing bound is no bound)."""
    lower, upper = band
    return not ((-math.inf if lower is None else lower) < value < (math.inf if upper is None else upper))
