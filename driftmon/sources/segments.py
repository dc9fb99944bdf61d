"""Segments (README, "Segments"): which segment each row belongs to, decided in SQL.

A segment is one value (one combination of values) of the ``segments.by``
columns. Membership comes from the reference, like a categorical column's
categories: the ``max`` combinations with the most reference rows (ties by
value) are segments of their own; every other combination, including one seen
only in the current window, is pooled as ``__other__``; a row with NULL in any
``by`` column is ``__missing__``. Every segment is counted in the bins of the
monitor's one profile of the whole population, so a segment and the whole are
compared on the same bins and the whole is exactly the sum of its segments.

A part of ``EventsSource`` (mixed in), split off by role: the host provides
``table``, ``engine``, ``reader``, ``monitor``, ``_in_window`` and ``_execute``.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import Connection

from driftmon.errors import SourceError
from driftmon.sources import binning, dialects
from driftmon.sources.profile import MISSING_SEGMENT, OTHER_SEGMENT
from driftmon.windows import TimeRange


def parse_segment(text: str, by: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``country=DE,app=web`` as ``{column: value}``, checked against the monitor's ``by`` columns."""
    values = {}
    for part in text.split(","):
        column, equals, value = part.partition("=")
        if not equals or not column.strip():
            raise ValueError(f"segment {text!r}: write column=value (several joined by commas)")
        values[column.strip()] = value
    if sorted(values) != sorted(by):
        raise ValueError(f"segment {text!r} names {', '.join(sorted(values))}; the monitor segments by "
                         f"{', '.join(by)}")
    return {column: values[column] for column in by}


class SegmentMembership:
    """The reference's segments and each row's segment code, for ``EventsSource``."""

    def _segment_columns(self) -> list[sa.ColumnElement]:
        name = self.engine.dialect.name
        types = self.reader.column_types or {}
        columns = []
        for column in self.monitor.segments.by:
            value = self.table.c[column]
            if dialects.is_portable(name) and isinstance(types.get(column), sa.String):
                value = dialects.exact_text(name, value)
            columns.append(value)
        return columns

    def _segment_members(self, connection: Connection, reference: TimeRange) -> tuple[list[tuple], int]:
        """The ``max`` largest combinations in the reference (ties by value) and how many there are."""
        segments = self.monitor.segments
        values = self._segment_columns()
        count = sa.func.count().label("n")
        statement = (
            sa.select(*values, count, sa.func.count().over().label("distinct"))
            .where(*self._in_window(reference), *(v.is_not(None) for v in values))
            .group_by(*values)
            .order_by(count.desc(), *self._segment_order())
            .limit(segments.max)
        )
        rows = self._execute(connection, statement)
        width = len(values)
        ranked = [(tuple(dialects.from_bytes(v) for v in row[:width]), row[width]) for row in rows]
        self._check_segment_values(ranked)
        # Python's order settles the ties the same on every engine.
        members = [tuple(m) for m in binning.top_categories(ranked, segments.max)] if all(
            len(m) == 1 for m, _ in ranked) else _top_combinations(ranked, segments.max)
        return members, int(rows[0][width + 1]) if rows else 0

    def _check_segment_values(self, ranked: list[tuple[tuple, int]]) -> None:
        """Members are stored as JSON and compared as literals: text, integers and booleans only."""
        for values, _ in ranked[:1]:
            for column, value in zip(self.monitor.segments.by, values, strict=True):
                if not isinstance(value, str | int | bool):
                    raise SourceError(
                        f"monitor {self.monitor.name!r}, table {self.source.table!r}, segments.by column "
                        f"{column!r} holds {type(value).__name__} values: segment by a text, integer or boolean "
                        f"column (a view can cast it)")

    def _segment_order(self) -> list[sa.ColumnElement]:
        types = self.reader.column_types or {}
        order = []
        for column, value in zip(self.monitor.segments.by, self._segment_columns(), strict=True):
            if self.engine.dialect.name == "postgresql" and isinstance(types.get(column), sa.String):
                value = self.table.c[column].collate("C")
            order.append(value)
        return order

    def _segment_code(self, members: list[tuple]) -> sa.ColumnElement:
        """Each row's segment: its member's position, ``OTHER_SEGMENT`` or ``MISSING_SEGMENT``."""
        name = self.engine.dialect.name
        values = self._segment_columns()
        missing = sa.or_(*(v.is_(None) for v in values))
        if not members:
            found = sa.literal(OTHER_SEGMENT)
        elif len(values) == 1:
            found = dialects.category_codes(name, values[0], [m[0] for m in members], OTHER_SEGMENT)
        else:
            found = sa.case(*(
                (sa.and_(*(v == dialects.exact_literal(name, x) for v, x in zip(values, member, strict=True))), i)
                for i, member in enumerate(members)), else_=OTHER_SEGMENT)
        return sa.case((missing, MISSING_SEGMENT), else_=found)


def _top_combinations(ranked: list[tuple[tuple, float]], k: int) -> list[tuple]:
    """The k largest combinations, ties broken by their values in order."""
    def order(pair):
        return (-pair[1], *(binning._sort_key(v) for v in pair[0]))
    return [combination for combination, _ in sorted(ranked, key=order)[:k]]
