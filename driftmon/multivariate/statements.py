"""The multivariate statements on a monitor's events source: the reference fit's moments, and
per-slice sums of the reconstruction error and of z (driftmon/multivariate/DESIGN.md).

Both read the source's own table with its filters (``where``) and time range, through the
same quoted identifiers and bound parameters as its count statement; the slice of a row is
the count statement's own ``slice_index``, so multivariate slices line up with count slices.
"""

from __future__ import annotations

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
    return tuple(Column(name, kinds[name]) for name in chosen)


def read_moments(source: EventsSource, connection: Connection, columns: tuple[Column, ...],
                 reference: TimeRange) -> ReferenceMoments:
    """The reference's moments: ONE aggregate statement over its rows."""
    name = connection.dialect.name
    query = reference_moments_select(source.table, columns, where=sa.and_(*source._in_window(reference)),
                                     dialect=name)
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
    errors = row_errors_subquery(fit, source.table, carry=carry, where=sa.and_(*source._in_window(span)),
                                 dialect=name, residuals=True)
    statement = slice_sums_select(errors, group_by=list(carry), d=len(fit.columns))
    source.statements += 1
    found = connection.execute(statement, slice_bounds(span) if length is not None else {}).mappings().all()
    d = len(fit.columns)
    return {int(row["slice"]) if length is not None else 0: WindowSums.from_row(row, d) for row in found}
