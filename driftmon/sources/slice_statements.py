"""The count statement's shape on each engine (issue #25): one scan, every binning
expression computed once per row, the rows' codes counted per column.

Measured on two 5-minute slices (~8,700 rows) of the 24-column table of
bench/bench_sources.py, side by side with the engine's own ``sum()`` of the 24
columns over the same rows (bench/bench_slice_statement.py):

- PostgreSQL: values (cast to double once) and extras (slice, segment) in a
  subquery, keys (extras packed above each column's code) in a second one,
  both kept by ``OFFSET 0`` from being pulled up into the grouping (unfenced,
  each code ran once per grouping set). A steady cycle's few slices are then
  counted by ``GROUP BY GROUPING SETS ((k0), (k1), ...)``: 24 small hash
  tables filled in one pass over the coded rows, where ``unnest(ARRAY[...])``
  first made 24 rows of every row and grouped those; more rows (a fill, a whole
  window) keep the unnest, which parallel workers aggregate in shares;
- ClickHouse, Spark and DuckDB: the codes unpivoted with ``arrayJoin``/``explode``/
  ``unnest`` and grouped (DuckDB: half the time of the UNION ALL below, which it
  gave before issue #25);
- MariaDB/MySQL: one scan into a derived table, joined to one row per column;
- elsewhere (SQLite): one scan into a materialised CTE of codes, then a UNION
  ALL of one GROUP BY per column over it.

Keyed shapes return ``(*extras, key, count)`` with key = column index ·
``KEY_SPAN`` + code − ``MISSING_CODE``; the others ``(index, *extras, code, count)``
(events._normalized reads both).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from driftmon.sources import dialects
from driftmon.sources.profile import MISSING_SEGMENT
from driftmon.windows import TimeRange

if TYPE_CHECKING:
    from driftmon.sources.events import EventsSource

OTHER_CODE = -1
MISSING_CODE = -2
# key = column index * KEY_SPAN + (code - MISSING_CODE); codes stay below 10 001
# because bins and top_k are at most 10 000.
KEY_SPAN = 1 << 16
# Compiled count statements bind their window at execution (sql.WindowStatement).
ANY_WINDOW = TimeRange(datetime(1970, 1, 1, tzinfo=UTC), datetime(1970, 1, 2, tzinfo=UTC))
_NO_LIMIT = 2**63 - 1  # MariaDB merges derived tables into the outer query unless they have a LIMIT


def keyed(name: str) -> bool:
    """Whether the engine's statement returns keys (column index and code in one integer)."""
    return name == "postgresql" or dialects.unpivots(name)


def statement(source: EventsSource, cuts, categories, extra: list, segments: int = 0,
              few: bool = False) -> sa.Executable:
    """The count statement of ``source``'s columns in these bins, grouped by ``extra`` too
    (``segments``: the number of segment codes, where ``extra`` has them). ``few``: the rows
    of a few slices, a steady cycle's (PostgreSQL's shape differs, see ``unnest``)."""
    name = source.engine.dialect.name
    if name == "postgresql":
        if few:
            return grouping_sets(source, cuts, categories, extra, segments)
        return unnest(source, cuts, categories, extra)
    codes = [source._code(f, cuts, categories) for f in source.features]
    if name in dialects.MYSQL:
        return joined(source, codes, extra)
    if dialects.unpivots(name):
        return array_join(source, codes, extra)
    return union(source, codes, extra)


def fenced_rows(source: EventsSource, extra: list) -> sa.Subquery:
    """Each row's extras and watched values, computed once: ``OFFSET 0`` keeps PostgreSQL
    from pulling the subquery up and repeating its expressions in every use."""
    values = [source._value(f) if f.type == "numeric" else source._category(f) for f in source.features]
    return (
        sa.select(*extra, *(v.label(f"v{i}") for i, v in enumerate(values)))
        .where(*source._in_window(ANY_WINDOW))
        .offset(0)
        .subquery("picked")
    )


def keyed_codes(source: EventsSource, rows: sa.Subquery, cuts, categories) -> list[sa.ColumnElement]:
    """Each column's key, from the fenced values of ``rows``."""
    return [source._code(f, cuts, categories, rows.c[f"v{i}"]) + (i * KEY_SPAN - MISSING_CODE)
            for i, f in enumerate(source.features)]


def grouping_sets(source: EventsSource, cuts, categories, extra: list, segments: int = 0) -> sa.Select:
    """PostgreSQL: the coded rows counted per column key by GROUPING SETS, in one pass.

    Each set groups ONE bigint (the extras packed above the column key): the planner
    estimates 200 groups for it and hashes every set; grouped by (slice, key) it
    estimated 200 x 200 groups per set past ~25,000 rows and sorted the rows once per
    column instead (24 sorts, spilled to disk, for a 7-day fill). ``segments``: how
    many segment codes there are (members, __other__, __missing__).
    """
    rows = fenced_rows(source, extra)
    keys = keyed_codes(source, rows, cuts, categories)
    width = sa.literal(len(keys) * KEY_SPAN, sa.BigInteger)
    packed = _packed([rows.c[e.name] for e in extra], [e.name for e in extra], segments)
    coded = (
        sa.select(*((k if packed is None else packed * width + k).label(f"k{i}") for i, k in enumerate(keys)))
        .offset(0)
        .subquery("coded")
    )
    columns = [coded.c[f"k{i}"] for i in range(len(keys))]
    # Every set keeps one column's key and NULLs the others: COALESCE gives the key that counts.
    key = sa.func.coalesce(*columns)
    sets = sa.func.grouping_sets(*(sa.tuple_(c) for c in columns))
    if packed is None:
        return sa.select(key.label("key"), sa.func.count()).group_by(sets)
    return sa.select(*_unpacked(key // width, [e.name for e in extra], segments), (key % width).label("key"),
                     sa.func.count()).group_by(sets)


def unnest(source: EventsSource, cuts, categories, extra: list) -> sa.Select:
    """PostgreSQL, many rows (a fill, a whole window): each coded row's keys unnested in a
    subquery's SELECT list, then grouped. GROUPING SETS cannot aggregate in parallel
    workers: on the 24 h fill of the 10 M-row table it took 17-23 s where this took 8-10 s.
    (As a LATERAL join the unnest was slower, a LATERAL VALUES list 2.5-3x slower; extras
    grouped at the unnest's level ran once per key, 46 s instead of 15 s for a 24 h window.)"""
    rows = fenced_rows(source, extra)
    keys = keyed_codes(source, rows, cuts, categories)
    coded = (sa.select(*(rows.c[e.name] for e in extra), postgresql.array(keys).label("keys"))
             .offset(0).subquery("coded"))
    groups = [coded.c[e.name] for e in extra]
    unpivoted = sa.select(*groups, sa.func.unnest(coded.c["keys"]).label("key")).subquery("unpivoted")
    names = [unpivoted.c[e.name] for e in extra]
    return sa.select(*names, unpivoted.c.key, sa.func.count()).group_by(*names, unpivoted.c.key)


def _packed(values: list, names: list[str], segments: int) -> sa.ColumnElement | None:
    """The extras as one bigint: slice (never negative) · segments + segment code − MISSING_SEGMENT."""
    if not values:
        return None
    parts = dict(zip(names, values, strict=True))
    segment = parts.get("segment")
    shifted = None if segment is None else segment - MISSING_SEGMENT
    if "slice" not in parts:
        return sa.cast(shifted, sa.BigInteger)
    if shifted is None:
        return parts["slice"]
    return parts["slice"] * sa.literal(segments, sa.BigInteger) + shifted


def _unpacked(packed: sa.ColumnElement, names: list[str], segments: int) -> list[sa.ColumnElement]:
    out = []
    for name in names:
        if name == "slice":
            out.append((packed // segments if "segment" in names else packed).label("slice"))
        else:
            own = packed % segments if "slice" in names else packed
            out.append((own + MISSING_SEGMENT).label("segment"))
    return out


def array_join(source: EventsSource, codes: list, extra: list) -> sa.Select:
    # ClickHouse, Spark and DuckDB: one scan that unpivots each row's keyed codes (arrayJoin,
    # explode, unnest); the portable UNION ALL re-reads its CTE per column on ClickHouse
    # (1,045 ms -> 105 ms on chDB, bench/bench_engines.py).
    keys = [code + (i * KEY_SPAN - MISSING_CODE) for i, code in enumerate(codes)]
    unpivoted = (
        sa.select(*extra, dialects.unpivot(source.engine.dialect.name, keys).label("key"))
        .where(*source._in_window(ANY_WINDOW))
        .subquery("unpivoted")
    )
    groups = [unpivoted.c[e.name] for e in extra]
    return sa.select(*groups, unpivoted.c.key, sa.func.count()).group_by(*groups, unpivoted.c.key)


def union(source: EventsSource, codes: list, extra: list) -> sa.CompoundSelect:
    # The window's codes are computed in one scan into a materialised CTE,
    # then counted per column: one pass over the table however many columns.
    coded = (
        sa.select(*extra, *(code.label(f"c{i}") for i, code in enumerate(codes)))
        .where(*source._in_window(ANY_WINDOW))
        .cte("coded")
        .prefix_with("MATERIALIZED", dialect="sqlite")
    )
    groups = [coded.c[e.name] for e in extra]
    return sa.union_all(*(
        sa.select(sa.literal(i).label("index"), *groups, coded.c[f"c{i}"], sa.func.count())
        .group_by(*groups, coded.c[f"c{i}"])
        for i in range(len(codes))
    ))


def joined(source: EventsSource, codes: list, extra: list) -> sa.Select:
    # MariaDB/MySQL inline a CTE at each reference, so the UNION ALL above scanned
    # the window once per column (14 s for 125 k rows and 24 columns). Here the
    # window's codes are read once, in a derived table that LIMIT keeps from being
    # merged into the outer query, and joined to one row per column index.
    coded = (
        sa.select(*extra, *(code.label(f"c{i}") for i, code in enumerate(codes)))
        .where(*source._in_window(ANY_WINDOW))
        .limit(_NO_LIMIT)
        .subquery("coded")
    )
    columns = sa.union_all(*(sa.select(sa.literal(i).label("idx")) for i in range(len(codes)))).subquery("columns")
    code = sa.case({i: coded.c[f"c{i}"] for i in range(len(codes))}, value=columns.c.idx)
    groups = [coded.c[e.name] for e in extra]
    return (
        sa.select(columns.c.idx, *groups, code.label("code"), sa.func.count())
        .select_from(coded.join(columns, sa.true()))
        .group_by(columns.c.idx, *groups, code)
    )
