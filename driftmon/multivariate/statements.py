"""The multivariate statements on a monitor's events source: the reference fit's moments, and
per-slice sums of the reconstruction error and of z (driftmon/multivariate/DESIGN.md).

Both read the source's own table with its filters (``where``) and time range, through the
same quoted identifiers and bound parameters as its count statement; the slice of a row is
the count statement's own ``slice_index``, so multivariate slices line up with count slices.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy import Connection

from driftmon.multivariate.fit import ReconstructionFit
from driftmon.multivariate.moments import Column, ReferenceMoments, reference_moments_select
from driftmon.multivariate.reconstruction import WindowSums, row_errors_subquery, slice_sums_select
from driftmon.sources.events import EventsSource
from driftmon.sources.sql import slice_bounds, slice_index
from driftmon.windows import TimeRange


def fit_columns(source: EventsSource, names: list[str] | None) -> tuple[Column, ...]:
    """The fit's columns in config order: categorical features are count-encoded."""
    chosen = names if names is not None else [f.column for f in source.features]
    kinds = {f.column: f.type == "categorical" for f in source.features}
    return read_as(source, tuple(Column(name, kinds[name]) for name in chosen))


def read_as(source: EventsSource, columns: tuple[Column, ...]) -> tuple[Column, ...]:
    """``columns`` with ``text`` set from the source's reflected types, as its categorical counts
    decide (``EventsSource._category``): a column of a String type is text, compared byte for byte;
    any other is read as it is. Unknown (None) before the reader has reflected the table."""
    types = source.reader.column_types
    if types is None:
        return columns
    return tuple(replace(c, text=isinstance(types.get(c.name), sa.String)) if c.categorical else c
                 for c in columns)


def read_moments(source: EventsSource, connection: Connection, columns: tuple[Column, ...],
                 reference: TimeRange) -> ReferenceMoments:
    """The reference's moments: ONE aggregate statement over its rows."""
    name = connection.dialect.name
    query = reference_moments_select(source.table, read_as(source, columns),
                                     where=sa.and_(*source._in_window(reference)), dialect=name)
    source.statements += 1
    return query.parse(connection.execute(query.statement).mappings().all())


def read_slice_sums(source: EventsSource, connection: Connection, fit: ReconstructionFit, span: TimeRange,
                    length: timedelta | None) -> dict[int, WindowSums]:
    """Per slice of ``length`` from ``span``'s start (index 0), the sums of ``span``'s rows in ONE
    statement; ``length`` None: the whole span as index 0."""
    name = connection.dialect.name
    carry = {}
    if length is not None:
        carry["slice"] = slice_index(name, source._timestamp, length, source.reader.epoch)
    # A stored fit's columns do not say which hold text: the source's types do.
    fit = replace(fit, columns=read_as(source, fit.columns))
    errors = row_errors_subquery(fit, source.table, carry=carry, where=sa.and_(*source._in_window(span)),
                                 dialect=name, residuals=True)
    statement = slice_sums_select(errors, group_by=list(carry), d=len(fit.columns))
    source.statements += 1
    found = connection.execute(statement, slice_bounds(span) if length is not None else {}).mappings().all()
    d = len(fit.columns)
    return {int(row["slice"]) if length is not None else 0: WindowSums.from_row(row, d) for row in found}
