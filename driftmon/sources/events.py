"""Events sources: one row per observation, binned inside the database.

Only bin counts cross the wire. Every watched column becomes an integer bin
code in SQL (value bins 0…B−1, ``OTHER_CODE``, ``MISSING_CODE``), and one
statement counts the codes of all columns of a window in one scan; its shape
on each engine is in slice_statements.py (PostgreSQL: GROUPING SETS over codes
computed once per row).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.dialects import postgresql

from driftmon.config import SEGMENT_PSEUDO_COLUMN, Feature, MonitorSettings, SeasonalReference
from driftmon.fingerprints import column_fingerprint, fingerprint, source_fingerprint
from driftmon.sources import binning, dialects, slice_statements
from driftmon.sources.alignment import align, align_segments, whole_population
from driftmon.sources.profile import ColumnCounts, ColumnProfile, ReferenceProfile, SegmentProfile, WindowCounts
from driftmon.sources.reference_bins import ReferenceBinning
from driftmon.sources.segment_slices import SegmentedLayout
from driftmon.sources.segments import SegmentMembership
from driftmon.sources.slice_statements import ANY_WINDOW as _ANY_WINDOW
from driftmon.sources.slice_statements import KEY_SPAN as _KEY_SPAN
from driftmon.sources.slice_statements import MISSING_CODE, OTHER_CODE
from driftmon.sources.slicing import EventsLayout, SliceCount
from driftmon.sources.sql import (
    SourceReader,
    WindowStatement,
    equality_filters,
    in_range,
    slice_bounds,
    slice_index,
    source_table,
)
from driftmon.windows import TimeRange

_LARGEST_FLOAT = sys.float_info.max
# PostgreSQL's categories are looked up in one jsonb object (a hash-like binary search)
# past this many, where CASE compares them one by one (bench/bench_slice_statement.py).
_JSONB_LOOKUP_FROM = 8
# Spans of at most this many slices (a steady cycle reads one or two, more after a pause)
# are counted in the shape for few rows (slice_statements.statement).
_FEW_SLICES = 6
log = logging.getLogger(__name__)


COMPILED_STATEMENTS_KEPT = 4  # per source (monitor): see EventsSource._counting

class EventsSource(ReferenceBinning, SegmentMembership):
    """Bin counts of a monitor's columns from an inference-log table (bins cut by ReferenceBinning),
    per segment where the monitor has segments (SegmentMembership)."""

    def __init__(self, monitor: MonitorSettings, engine: Engine):
        self.monitor = monitor
        self.engine = engine
        self.source = monitor.source
        self.features = monitor.features
        self.segments = monitor.segments
        by = list(self.segments.by) if self.segments else []
        names = [self.source.timestamp_column, *self.source.where, *(f.column for f in self.features), *by]
        self.table = source_table(self.source.table, self.source.schema_, names)
        self.reader = SourceReader(engine, monitor.name, self.source.table, self.source.schema_,
                                   names, self.source.timeout, timestamp=self.source.timestamp_column,
                                   timestamp_unit=self.source.timestamp_unit,
                                   numeric=[f.column for f in self.features if f.type == "numeric"])
        # Every source setting that shapes a count, with the database the engine reads; a seasonal
        # reference's exclusions too, as they shape its profile's bins (profile(holes=...)).
        self.fingerprint = source_fingerprint(self.source, engine.url)
        if isinstance(monitor.reference, SeasonalReference) and monitor.reference.exclude:
            self.fingerprint = fingerprint({"source": self.fingerprint, "exclude": [
                e.model_dump(mode="json") for e in monitor.reference.exclude]})
        self.statements = 0  # executed so far; tests and logs read it
        self._warned: set[str] = set()  # columns already reported as having too many categories
        # The count statement of the latest bins (cuts, categories), for the next window.
        # Compiled count statements by bins and shape: a steady cycle's, and the slice fill's or
        # whole window's that a reference move or a recount alternates with (a 24-column
        # statement takes ~20 ms to compile). The newest few are kept; bins change rarely.
        self._counting: dict[tuple, WindowStatement] = {}
        # Stretches a profile being cut must leave out (a seasonal reference's exclusions).
        self._holes: tuple[TimeRange, ...] = ()

    def expected_hash(self, column: str) -> str:
        """The fingerprint of what shapes the column's profile (driftmon/fingerprints.py)."""
        if column == SEGMENT_PSEUDO_COLUMN and self.segments:
            return column_fingerprint(self.fingerprint, None, self.segments)
        feature = next((f for f in self.features if f.column == column), None)
        return column_fingerprint(self.fingerprint, feature, self.segments) if feature else ""

    def fits(self, stored: ReferenceProfile) -> bool:
        """Whether a stored profile still describes every configured column (and segment)."""
        hashes = {c.column: c.config_hash for c in stored.columns}
        if self.segments and (stored.segments is None
                              or stored.segments.config_hash != self.expected_hash(SEGMENT_PSEUDO_COLUMN)):
            return False
        return all(hashes.get(f.column) == self.expected_hash(f.column) for f in self.features)

    # --- the interface -----------------------------------------------------

    def profile(self, reference: TimeRange, holes: tuple[TimeRange, ...] = ()) -> ReferenceProfile:
        """Cut the reference's bins and count it: edges, categories, counts.

        ``holes`` (a seasonal reference's excluded stretches) never shape the bins (edges,
        categories, segment members); the profile's own counts, which a seasonal reference
        replaces by its lags' (``profile_from_slices``), still hold their rows.
        """
        self._holes = holes
        try:
            with self.reader.reading(f"reference {reference}") as connection:
                cuts = self._cuts(connection, reference)
                categories = self._categories(connection, reference)
                members, distinct = self._segment_members(connection, reference) if self.segments else ([], 0)
                per_segment, _ = self._count(connection, reference, cuts, categories, members)
        finally:
            self._holes = ()
        counts = whole_population(per_segment)
        columns = tuple(self._column_profile(f, cuts, categories, counts[f.column],
                                             [s[f.column] for s in per_segment] if self.segments else None)
                        for f in self.features)
        segments = None
        if self.segments:
            rows = tuple(s[self.features[0].column].total for s in per_segment)
            segments = SegmentProfile(tuple(self.segments.by), tuple(members), rows, distinct,
                                      self.expected_hash(SEGMENT_PSEUDO_COLUMN))
        return ReferenceProfile(range=reference, columns=columns, segments=segments)

    def counts(self, profile: ReferenceProfile, window: TimeRange) -> WindowCounts:
        """The window's counts in the profile's bins, aligned with the reference."""
        cuts, categories = _bins_of(profile)
        with self.reader.reading(f"window {window}") as connection:
            per_segment, rows = self._count(connection, window, cuts, categories, _members_of(profile))
        return self._aligned(profile, per_segment, window, rows)

    def _aligned(self, profile, per_segment, window, rows) -> WindowCounts:
        if self.segments:
            return align_segments(profile, per_segment, window, rows_scanned=rows)
        return align(profile, per_segment[0], window, rows_scanned=rows)

    # --- slices (driftmon/counting/slices.py) ---------------------------------------------

    def slice_key(self, profile: ReferenceProfile) -> str:
        """What slices are counted in: the same bins give the same key, whatever the range."""
        bins = [(c.column, c.config_hash, list(c.edges), list(c.categories)) for c in profile.columns]
        if profile.segments is None:
            return fingerprint({"kind": "events", "bins": bins})
        members = [list(m) for m in profile.segments.members]
        return fingerprint({"kind": "events", "bins": bins, "segments": members})

    def slice_counts(self, profile: ReferenceProfile, span: TimeRange,
                     length: timedelta, companion=None) -> dict[datetime, SliceCount]:
        """Every slice of ``span`` counted in ONE statement, grouped by slice, column and bin.

        ``companion``: another aggregate of the same rows that rides in this statement as a
        UNION ALL branch (driftmon/multivariate/companion.py: the multivariate sums), keeping
        its rows; it names the engines it can join (``MERGED_ENGINES``)."""
        cuts, categories = _bins_of(profile)
        members = _members_of(profile)
        layout = self._layout(cuts, categories, profile)
        with self.reader.reading(f"slices {span}") as connection:
            self.statements += 1
            few = span.end - span.start <= _FEW_SLICES * length
            statement = self._count_statement(connection, cuts, categories, members, length, few, companion)
            found = statement.execute(connection, span, slice_bounds(span))
            if companion is not None:
                found = companion.split(found, _keyed(connection), bool(self.segments))
        extra, index, code, count = _normalized(found, _keyed(connection), 1 + bool(self.segments))
        if self.segments:
            # Segment codes as indexes: members 0…S−1, then __other__ (−1) and __missing__ (−2).
            segment = np.where(extra[:, 1] >= 0, extra[:, 1], len(members) - 1 - extra[:, 1])
            return layout.slices(index, extra[:, 0], code, count, span, length, segment)
        return layout.slices(index, extra[:, 0], code, count, span, length)

    def window_from_slices(self, profile: ReferenceProfile, payloads: list, window: TimeRange,
                           rows_scanned: int) -> WindowCounts:
        """A window's counts as the sum of its slices' counts."""
        cuts, categories = _bins_of(profile)
        layout = self._layout(cuts, categories, profile)
        per_segment = layout.segment_tallies(payloads) if self.segments else [layout.tallies(payloads)]
        return self._aligned(profile, self._tallied(per_segment, cuts, categories), window, rows_scanned)

    def profile_from_slices(self, profile: ReferenceProfile, payloads: list) -> ReferenceProfile:
        """The profile's bins with the summed counts of these slices: a seasonal reference.

        Every lag is counted in the same bins, so the sum is a profile like one counted
        from the lags' rows directly (bin for bin; tests/test_seasonal.py checks it).
        """
        cuts, categories = _bins_of(profile)
        layout = self._layout(cuts, categories, profile)
        per_segment = self._tallied(layout.segment_tallies(payloads) if self.segments else [layout.tallies(payloads)],
                                    cuts, categories)
        return self._with_counts(profile, per_segment)

    def profile_counted(self, profile: ReferenceProfile, reference: TimeRange) -> ReferenceProfile:
        """The profile's bins with the counts of ``reference`` read from the source (where slices
        cannot serve: a rolling reference whose grid does not fit)."""
        cuts, categories = _bins_of(profile)
        with self.reader.reading(f"reference {reference}") as connection:
            per_segment, _ = self._count(connection, reference, cuts, categories, _members_of(profile))
        return replace(self._with_counts(profile, per_segment), range=reference)

    def _with_counts(self, profile: ReferenceProfile, per_segment: list[dict[str, ColumnCounts]]) -> ReferenceProfile:
        counts = whole_population(per_segment)

        def column(c: ColumnProfile) -> ColumnProfile:
            found = counts[c.column]
            return replace(c, counts=tuple(found.counts.values()), other=found.other, missing=found.missing,
                           segment_counts=tuple((*s[c.column].counts.values(), s[c.column].other,
                                                 s[c.column].missing) for s in per_segment) if self.segments else ())

        segments = profile.segments and replace(
            profile.segments, rows=tuple(s[self.features[0].column].total for s in per_segment))
        return replace(profile, columns=tuple(column(c) for c in profile.columns), segments=segments)

    def _tallied(self, per_segment: list[dict[int, dict[int, float]]], cuts,
                 categories) -> list[dict[str, ColumnCounts]]:
        """Per segment, each column's ``{code: count}`` as its ColumnCounts (labels made once per column)."""
        labels = [self._labels(f, cuts, categories) for f in self.features]
        return [{f.column: _column_counts(f, labels[i], tallies[i]) for i, f in enumerate(self.features)}
                for tallies in per_segment]

    def _layout(self, cuts, categories, profile: ReferenceProfile) -> EventsLayout:
        widths = [len(self._labels(f, cuts, categories)) for f in self.features]
        return SegmentedLayout(widths, profile.segments.size) if self.segments else EventsLayout(widths)

    # --- reading ------------------------------------------------------------

    def _execute(self, connection: Connection, statement) -> list:
        self.statements += 1
        return connection.execute(statement).all()

    @property
    def _timestamp(self) -> sa.ColumnClause:
        return self.table.c[self.source.timestamp_column]

    def _in_window(self, window: TimeRange) -> list[sa.ColumnElement]:
        timestamp, name = self._timestamp, self.engine.dialect.name
        holes = [~in_range(name, timestamp, hole, self.reader.epoch, suffix=f"_hole{i}")
                 for i, hole in enumerate(self._holes)] if window != _ANY_WINDOW else []
        return [in_range(name, timestamp, window, self.reader.epoch), *holes,
                *equality_filters(self.table, self.source.where, name)]

    def _category(self, feature: Feature) -> sa.ColumnElement:
        """A categorical column's values, compared byte for byte where the collation would not."""
        value = self.table.c[feature.column]
        column_type = (self.reader.column_types or {}).get(feature.column)
        if dialects.is_portable(self.engine.dialect.name) and isinstance(column_type, sa.String):
            return dialects.exact_text(self.engine.dialect.name, value)
        return value

    # --- counting -----------------------------------------------------------

    def _count(self, connection, window, cuts, categories,
               members: list[tuple]) -> tuple[list[dict[str, ColumnCounts]], int]:
        """Per segment (one, the whole population, when unsegmented) the counts of every column."""
        self.statements += 1
        found = self._count_statement(connection, cuts, categories, members).execute(connection, window)
        segments = len(members) + 2 if self.segments else 1
        tallies = [{i: {} for i in range(len(self.features))} for _ in range(segments)]
        extra, index, code, count = _normalized(found, _keyed(connection), bool(self.segments))
        for row in zip(extra[:, 0] if self.segments else np.zeros(len(index), dtype=np.int64), index, code, count,
                       strict=True):
            code_of_segment, i, bin_code, n = (int(x) for x in row)
            segment = code_of_segment if code_of_segment >= 0 else len(members) - 1 - code_of_segment
            tallies[segment][i][bin_code] = float(n)
        rows = int(sum(sum(tally[0].values()) for tally in tallies)) if self.features else 0
        return self._tallied(tallies, cuts, categories), rows

    def _count_statement(self, connection, cuts, categories, members=(), length=None,
                         few: bool = False, companion=None) -> WindowStatement:
        """The count statement of these bins, compiled once; ``length`` groups it by slice too,
        and a segmented monitor's by segment; ``few``: for a steady cycle's few slices."""
        bins = (tuple((k, tuple(v)) for k, v in sorted(cuts.items())),
                tuple((k, tuple(v)) for k, v in sorted(categories.items())), tuple(members), length, few,
                companion.key if companion is not None else None)
        compiled = self._counting.pop(bins, None)
        if compiled is None:
            epoch = self.reader.epoch
            extra = []
            if length:
                extra.append(slice_index(self.engine.dialect.name, self._timestamp, length, epoch).label("slice"))
            if self.segments:
                extra.append(self._segment_code(list(members)).label("segment"))
            statement = slice_statements.statement(self, cuts, categories, extra, len(members) + 2, few)
            if companion is not None:
                statement = companion.merged(statement, self, _keyed(connection), bool(self.segments),
                                             connection.dialect.name)
            compiled = WindowStatement.compile(statement, connection, epoch)
            if companion is not None:
                compiled = companion.inline(compiled, connection)
        self._counting[bins] = compiled  # newest last
        while len(self._counting) > COMPILED_STATEMENTS_KEPT:
            del self._counting[next(iter(self._counting))]
        return compiled

    def _count_union(self, codes, extra):
        """The portable shape (bench/bench_sources.py times it beside driftmon's)."""
        return slice_statements.union(self, codes, extra)

    def _code(self, feature: Feature, cuts, categories, value: sa.ColumnElement | None = None) -> sa.ColumnElement:
        """The SQL expression giving each row's bin code for one column, from ``value`` where the
        statement computed the column's value once already (slice_statements.fenced_rows)."""
        name = self.engine.dialect.name
        if feature.type == "categorical":
            value = self._category(feature) if value is None else value
            known = categories[feature.column]
            if not known:
                found = sa.literal(OTHER_CODE)
            elif name == "postgresql" and len(known) >= _JSONB_LOOKUP_FROM and self._plain_text(feature, known):
                found = _jsonb_codes(value, known)
            else:
                found = dialects.category_codes(name, value, known, OTHER_CODE)
            return sa.case((value.is_(None), MISSING_CODE), else_=found)
        value, edges = self._value(feature) if value is None else value, cuts[feature.column]
        if not edges:
            bucket = sa.literal(0)
        elif name == "postgresql":
            # width_bucket(x, thresholds) is 0 below c1 and i for c(i) <= x < c(i+1):
            # exactly the spec's left-closed bins, by binary search.
            bucket = sa.func.width_bucket(value, sa.literal(edges, postgresql.ARRAY(sa.Double)))
        else:
            bucket = sa.case(*((value < dialects.double(name, c), i) for i, c in enumerate(edges)),
                             else_=len(edges))
        if name == "postgresql":
            # One test for NULL, NaN and ±inf on a double: |x| <= the largest float is unknown for
            # NULL and false for NaN (it sorts above every number) and ±inf; three tests cost more.
            finite = sa.func.abs(value) <= dialects.double(name, _LARGEST_FLOAT)
            return sa.case((finite, bucket), else_=MISSING_CODE)
        return sa.case((self._missing(feature, value), MISSING_CODE), else_=bucket)

    def _plain_text(self, feature: Feature, known: list) -> bool:
        """A text or varchar column of text categories: jsonb keys compare as its values do
        (byte for byte), which char(n), citext or an enum would not."""
        column_type = (self.reader.column_types or {}).get(feature.column)
        return type(column_type) in (sa.TEXT, sa.VARCHAR) and all(isinstance(c, str) for c in known)

    def _value(self, feature: Feature) -> sa.ColumnElement:
        value = self.table.c[feature.column]
        return sa.cast(value, sa.Double) if self.engine.dialect.name == "postgresql" else value

    def _missing(self, feature: Feature, value: sa.ColumnElement | None = None) -> sa.ColumnElement:
        """NULL, NaN and ±inf: NaN sorts above every number on PostgreSQL, and SQLite stores it as NULL."""
        value = self._value(feature) if value is None else value
        largest = dialects.double(self.engine.dialect.name, _LARGEST_FLOAT)
        return sa.or_(value.is_(None), value > largest, value < -largest,
                      *dialects.non_finite(self.engine.dialect.name, value))

    def _numeric(self) -> list[Feature]:
        return [f for f in self.features if f.type == "numeric"]

    # --- records ------------------------------------------------------------------

    def _labels(self, feature: Feature, cuts, categories) -> list[str]:
        if feature.type == "categorical":
            return [binning.category_label(c) for c in categories[feature.column]]
        return binning.numeric_labels(cuts[feature.column])

    def _column_profile(self, feature: Feature, cuts, categories, column_counts: ColumnCounts,
                        segments: list[ColumnCounts] | None) -> ColumnProfile:
        return ColumnProfile(
            column=feature.column,
            role=feature.role,
            kind=feature.type,
            config_hash=self.expected_hash(feature.column),
            edges=tuple(cuts.get(feature.column, ())),
            categories=tuple(categories.get(feature.column, ())),
            labels=tuple(column_counts.counts),
            counts=tuple(column_counts.counts.values()),
            other=column_counts.other,
            missing=column_counts.missing,
            segment_counts=tuple((*s.counts.values(), s.other, s.missing) for s in segments or ()),
        )


def _keyed(connection: Connection) -> bool:
    """Whether the count statement returns keys (column index and code in one integer)."""
    return slice_statements.keyed(connection.dialect.name)


def _jsonb_codes(value: sa.ColumnElement, known: list[str]) -> sa.ColumnElement:
    """PostgreSQL: each text value's category code from one bound jsonb object, ``OTHER_CODE``
    for the rest (a key lookup by binary search, where CASE compared the categories in turn)."""
    codes = sa.cast(sa.literal(json.dumps({c: i for i, c in enumerate(known)}, ensure_ascii=False)),
                    postgresql.JSONB)
    return sa.func.coalesce(sa.cast(codes.op("->>", return_type=sa.Text)(value), sa.Integer), OTHER_CODE)


def _column_counts(feature: Feature, labels: list[str], tally: dict[int, float]) -> ColumnCounts:
    return ColumnCounts(
        column=feature.column,
        counts={label: tally.get(i, 0.0) for i, label in enumerate(labels)},
        other=tally.get(OTHER_CODE, 0.0),
        missing=tally.get(MISSING_CODE, 0.0),
    )


def _normalized(found, keyed: bool, extras: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Count rows of any dialect as int64 arrays: extra keys ``[n, extras]``, column index, bin code, count.

    Keyed statements return ``(*extra, key, count)``; the others ``(index, *extra, code, count)``.
    A first fill returns millions of rows: read as one array, not row by row.
    """
    extras = int(extras)  # a bool would index numpy arrays as a mask
    width = extras + (2 if keyed else 3)
    rows = np.array([tuple(row) for row in found], dtype=np.int64).reshape(-1, width)
    if keyed:
        index, code = np.divmod(rows[:, extras], _KEY_SPAN)
        return rows[:, :extras], index, code + MISSING_CODE, rows[:, -1]
    return rows[:, 1:1 + extras], rows[:, 0], rows[:, 1 + extras], rows[:, -1]


def _members_of(profile: ReferenceProfile) -> list[tuple]:
    return [tuple(m) for m in profile.segments.members] if profile.segments else []


def _bins_of(profile: ReferenceProfile) -> tuple[dict[str, list], dict[str, list]]:
    """A profile's cut points per numeric column and categories per categorical one."""
    cuts = {c.column: list(c.edges) for c in profile.columns if c.kind == "numeric"}
    categories = {c.column: list(c.categories) for c in profile.columns if c.kind == "categorical"}
    return cuts, categories
