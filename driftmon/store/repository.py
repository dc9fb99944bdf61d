"""The queries of runs, results, reference profiles and slices.

Methods take the caller's connection and return plain values or frozen
records; the caller (the pipeline) owns the transaction, so a run's writes are
committed together or not at all. Driver errors become ``StoreError`` here.
The other tables' queries have modules of their own: leases (lease_queries.py),
data health (health_queries.py), segments (segment_queries.py), a run's writes
(run_writes.py), and what is stored with its repairs (inventory.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from driftmon.config import SEGMENT_PSEUDO_COLUMN
from driftmon.sources.profile import ColumnProfile, ReferenceProfile, SegmentProfile
from driftmon.store import run_writes
from driftmon.store.models import ReferenceProfile as ProfileRow
from driftmon.store.models import Result, Run, SliceCounts
from driftmon.store.stored_times import stored_utc
from driftmon.windows import TimeRange

SEGMENTS_KIND = "segments"  # the reference_profiles row that holds a profile's segments
_profiles = ProfileRow.__table__
_runs = Run.__table__
_results = Result.__table__
_slices = SliceCounts.__table__
# The whole population's rows: a segmented monitor also stores one per segment (README, "Segments").
_WHOLE = _results.c.segment_key == ""


class Repository:
    """Reads and writes driftmon's tables."""

    def insert_run(self, connection: Connection, run: dict) -> int:
        """A run row (see ``models.Run``); returns its id."""
        return connection.execute(_runs.insert().returning(_runs.c.id), run).scalar_one()

    def upsert_results(self, connection: Connection, rows: list[dict]) -> None:
        """One row per (monitor, column, segment, window end): a re-run replaces, never duplicates."""
        if not rows:
            return
        if connection.dialect.name == "postgresql":
            # ONE statement from a JSON document (run_writes.results_from_json), not executemany.
            document = run_writes.json_rows([{"segment_key": "", **row} for row in rows])
            if document is not None:
                connection.execute(run_writes.results_from_json(), {"results": document})
                return
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        connection.execute(run_writes.results_upsert(dialect), rows)

    def stored_window_ends(self, connection: Connection, monitor: str, span: TimeRange,
                           fingerprint: str | None = None) -> set[datetime]:
        """Ends of the windows in ``span`` that already have results (with ``fingerprint``: results
        made by those settings, or stored before results had fingerprints)."""
        statement = sa.select(_results.c.window_end).distinct().where(
            _results.c.monitor == monitor,
            _results.c.window_end > span.start,
            _results.c.window_end <= span.end,
        )
        if fingerprint is not None:
            # A window is stale when any of its columns was made by other settings.
            stale = sa.select(_results.c.window_end).where(
                _results.c.monitor == monitor, _results.c.fingerprint != fingerprint,
                _results.c.window_end > span.start, _results.c.window_end <= span.end)
            statement = statement.where(_results.c.window_end.not_in(stale))
        return {stored_utc(end) for end in connection.execute(statement).scalars()}

    def latest_results(self, connection: Connection) -> list[dict]:
        """The newest stored whole-population result of every (monitor, column)."""
        newest = (
            sa.select(_results.c.monitor, _results.c.column, sa.func.max(_results.c.window_end).label("end"))
            .where(_WHOLE)
            .group_by(_results.c.monitor, _results.c.column)
            .subquery()
        )
        statement = sa.select(_results).join(newest, sa.and_(
            _results.c.monitor == newest.c.monitor,
            _results.c.column == newest.c.column,
            _results.c.window_end == newest.c.end,
        )).where(_WHOLE)
        return [dict(row) for row in connection.execute(statement).mappings()]

    def last_successes(self, connection: Connection) -> dict[str, datetime]:
        """When each monitor last finished a run successfully."""
        statement = (
            sa.select(_runs.c.monitor, sa.func.max(_runs.c.finished_at))
            .where(_runs.c.status == "ok")
            .group_by(_runs.c.monitor)
        )
        return {monitor: stored_utc(finished) for monitor, finished in connection.execute(statement)}

    # --- reading stored windows back (explain, report) ---------------------------

    def latest_window_end(self, connection: Connection, monitor: str, at: datetime | None = None) -> datetime | None:
        """The end of ``monitor``'s newest stored window ending at or before ``at``."""
        statement = sa.select(sa.func.max(_results.c.window_end)).where(_results.c.monitor == monitor)
        if at is not None:
            statement = statement.where(_results.c.window_end <= at)
        found = connection.execute(statement).scalar()
        return None if found is None else stored_utc(found)

    def window_results(self, connection: Connection, monitor: str, window_end: datetime,
                       segment: str | None = "") -> list[dict]:
        """Every column's stored result of one window, bins and counts included: of the whole
        population, of one segment (its key), or of every segment and the whole (None)."""
        statement = sa.select(_results).where(
            _results.c.monitor == monitor, _results.c.window_end == window_end,
        ).order_by(_results.c.id)
        if segment is not None:
            statement = statement.where(_results.c.segment_key == segment)
        return [dict(row) for row in connection.execute(statement).mappings()]

    def result_history(self, connection: Connection, monitor: str, span: TimeRange,
                       columns: list[str] | None = None) -> list[dict]:
        """Stored results of the windows ending in ``span`` (oldest first), without their bins;
        only those of ``columns`` when given (a report of many columns reads those it charts)."""
        wanted = [c for c in _results.columns if c.name not in ("labels", "reference_counts", "current_counts")]
        statement = sa.select(*wanted).where(
            _results.c.monitor == monitor,
            _results.c.window_end > span.start,
            _results.c.window_end <= span.end,
            _WHOLE,
        )
        if columns is None:
            return self._ordered(connection, statement)
        rows: list[dict] = []
        for first in range(0, len(columns), 500):  # within any database's limit on bound parameters
            rows += self._ordered(connection, statement.where(_results.c.column.in_(columns[first:first + 500])))
        return sorted(rows, key=lambda row: (row["window_end"], row["column"]))

    def results_between(self, connection: Connection, monitor: str, start: datetime | None = None,
                        end: datetime | None = None) -> list[dict]:
        """Every stored result of the windows ending in (start, end], segments' included, without their bins:
        by window end, segment key (the whole population's first) and the columns' order (``driftmon.results``)."""
        wanted = [c for c in _results.columns if c.name not in ("labels", "reference_counts", "current_counts")]
        statement = _between(sa.select(*wanted).where(_results.c.monitor == monitor), _results.c.window_end,
                             start, end)
        ordered = statement.order_by(_results.c.window_end, _results.c.segment_key, _results.c.id)
        return [dict(row) for row in connection.execute(ordered).mappings()]

    def runs_between(self, connection: Connection, monitor: str, start: datetime | None = None,
                     end: datetime | None = None) -> list[dict]:
        """Every run row of the windows ending in (start, end], oldest window first (``driftmon.runs``)."""
        statement = _between(sa.select(_runs).where(_runs.c.monitor == monitor), _runs.c.window_end, start, end)
        return [dict(row) for row in connection.execute(statement.order_by(_runs.c.window_end, _runs.c.id)).mappings()]

    def _ordered(self, connection: Connection, statement) -> list[dict]:
        ordered = statement.order_by(_results.c.window_end, _results.c.column)
        return [dict(row) for row in connection.execute(ordered).mappings()]

    def result_tallies(self, connection: Connection, monitor: str, span: TimeRange,
                       alarms: tuple[str, ...]) -> list[tuple[str, int, int, datetime]]:
        """Per column over the windows ending in ``span``: windows, those with an ``alarms`` status,
        the earliest window start; counted by the database."""
        alarmed = sa.func.sum(sa.case((_results.c.status.in_(alarms), 1), else_=0))
        statement = sa.select(
            _results.c.column, sa.func.count(), alarmed, sa.func.min(_results.c.window_start),
        ).where(
            _results.c.monitor == monitor,
            _results.c.window_end > span.start,
            _results.c.window_end <= span.end,
            _WHOLE,
        ).group_by(_results.c.column)
        return [(column, int(windows), int(count or 0), stored_utc(earliest))
                for column, windows, count, earliest in connection.execute(statement)]

    def ping(self, connection: Connection) -> None:
        connection.execute(sa.select(sa.func.count()).select_from(_runs).where(sa.false()))


    def load_profile(self, connection: Connection, monitor: str, reference: TimeRange) -> ReferenceProfile:
        """Every stored column profile of ``monitor`` for exactly this reference range."""
        statement = sa.select(_profiles).where(
            _profiles.c.monitor == monitor,
            _profiles.c.reference_start == reference.start,
            _profiles.c.reference_end == reference.end,
        ).order_by(_profiles.c.id)
        rows = list(connection.execute(statement).mappings())
        columns = tuple(_column_profile(row) for row in rows if row["kind"] != SEGMENTS_KIND)
        segments = next((_segment_profile(row) for row in rows if row["kind"] == SEGMENTS_KIND), None)
        return ReferenceProfile(range=reference, columns=columns, segments=segments)

    def save_profile(self, connection: Connection, monitor: str, profile: ReferenceProfile, *,
                     replace: bool = False) -> None:
        """Store a profile's columns. A complete stored column is final: another replica's
        copy leaves it as it is, and only a recount (``replace``) overwrites it; an
        incomplete one is overwritten by every newer count."""
        now = datetime.now(UTC)
        rows = [
            {
                "monitor": monitor,
                "column": column.column,
                "reference_start": profile.range.start,
                "reference_end": profile.range.end,
                "config_hash": column.config_hash,
                "role": column.role,
                "kind": column.kind,
                "edges": list(column.edges),
                "categories": list(column.categories),
                "labels": list(column.labels),
                "counts": list(column.counts),
                "other": column.other,
                "missing": column.missing,
                "total": column.total,
                "error": column.error,
                "created_at": now,
                "complete": column.complete,
                "segment_counts": [list(c) for c in column.segment_counts] if profile.segments else None,
            }
            for column in profile.columns
        ]
        if profile.segments is not None and rows:
            rows.append(_segments_row(monitor, profile, now))
        if not rows:
            return
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(_profiles)
        keys = ["monitor", "column", "reference_start", "reference_end", "config_hash"]
        statement = statement.on_conflict_do_update(
            index_elements=keys,
            set_={c.name: statement.excluded[c.name] for c in _profiles.columns if c.name not in (*keys, "id")},
            where=None if replace else _profiles.c.complete == sa.false(),
        )
        connection.execute(statement, rows)


    # --- slices -------------------------------------------------------------------

    def load_slices(self, connection: Connection, monitor: str, profile_key: str,
                    span: TimeRange) -> dict[datetime, StoredSlice]:
        """The stored slices of ``monitor`` under one profile that start in ``span``."""
        statement = sa.select(_slices.c.slice_start, _slices.c.counts, _slices.c.rows, _slices.c.sealed,
                              _slices.c.counted_at).where(
            _slices.c.monitor == monitor,
            _slices.c.profile_key == profile_key,
            _slices.c.slice_start >= span.start,
            _slices.c.slice_start < span.end,
        )
        return {stored_utc(start): StoredSlice(counts, rows, sealed, stored_utc(counted))
                for start, counts, rows, sealed, counted in connection.execute(statement)}

    def slice_versions(self, connection: Connection, monitor: str, profile_key: str,
                       span: TimeRange) -> dict[datetime, tuple[bool, datetime]]:
        """``(sealed, counted_at)`` of the stored slices starting in ``span``, without their counts."""
        statement = sa.select(_slices.c.slice_start, _slices.c.sealed, _slices.c.counted_at).where(
            _slices.c.monitor == monitor,
            _slices.c.profile_key == profile_key,
            _slices.c.slice_start >= span.start,
            _slices.c.slice_start < span.end,
        )
        return {stored_utc(start): (sealed, stored_utc(counted))
                for start, sealed, counted in connection.execute(statement)}

    def slice_state(self, connection: Connection, monitor: str, profile_key: str, head: TimeRange,
                    tail: TimeRange | None) -> tuple[tuple[int, datetime | None], dict]:
        """``slice_summary`` of ``head`` and ``slice_versions`` of ``tail`` (None: no tail) in one
        statement: a steady cycle's one look at its stored slices."""
        def where(span: TimeRange):
            return (_slices.c.monitor == monitor, _slices.c.profile_key == profile_key,
                    _slices.c.slice_start >= span.start, _slices.c.slice_start < span.end)

        # type_coerce, not CAST: SQLite's CAST(... AS DATETIME) would read its text timestamps as numbers.
        summary = sa.select(sa.type_coerce(sa.null(), _slices.c.slice_start.type).label("slice_start"),
                            sa.func.count().label("slices"), sa.func.max(_slices.c.counted_at).label("counted_at"),
                            sa.type_coerce(sa.null(), _slices.c.sealed.type).label("sealed")).where(*where(head))
        statement = summary
        if tail is not None:
            statement = sa.union_all(summary, sa.select(
                _slices.c.slice_start, sa.type_coerce(sa.null(), sa.Integer), _slices.c.counted_at,
                _slices.c.sealed).where(*where(tail)))
        found: tuple[int, datetime | None] = (0, None)
        listed = {}
        for start, slices, counted, sealed in connection.execute(statement):
            if start is None:
                found = (slices, None if counted is None else stored_utc(counted))
            else:
                listed[stored_utc(start)] = (sealed, stored_utc(counted))
        return found, listed

    def slice_summary(self, connection: Connection, monitor: str, profile_key: str,
                      span: TimeRange) -> tuple[int, datetime | None]:
        """How many slices start in ``span``, and when the newest of them was counted."""
        statement = sa.select(sa.func.count(), sa.func.max(_slices.c.counted_at)).where(
            _slices.c.monitor == monitor,
            _slices.c.profile_key == profile_key,
            _slices.c.slice_start >= span.start,
            _slices.c.slice_start < span.end,
        )
        count, newest = connection.execute(statement).one()
        return count, (None if newest is None else stored_utc(newest))

    def save_slices(self, connection: Connection, rows: list[dict], *, overwrite_sealed: bool = False) -> None:
        """Insert or update slice rows. A sealed slice is final: it is replaced only by a
        recount (``overwrite_sealed``), and an older count never replaces a newer one."""
        if not rows:
            return
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        connection.execute(run_writes.slice_upsert(dialect, overwrite_sealed), rows)

    def delete_slices(self, connection: Connection, monitor: str, ended_by: datetime, keep_profile: str) -> int:
        """Drop slices no window needs: those ended by ``ended_by``, and other profiles' slices."""
        statement = _slices.delete().where(
            _slices.c.monitor == monitor,
            sa.or_(_slices.c.slice_end <= ended_by, _slices.c.profile_key != keep_profile),
        )
        return connection.execute(statement).rowcount

def _between(statement, column, start: datetime | None, end: datetime | None):
    """``statement`` limited to ``start < column <= end``, either bound left open when None."""
    if start is not None:
        statement = statement.where(column > start)
    return statement if end is None else statement.where(column <= end)


@dataclass(frozen=True)
class StoredSlice:
    counts: list | dict
    rows: int
    sealed: bool
    counted_at: datetime


def _segments_row(monitor: str, profile: ReferenceProfile, now: datetime) -> dict:
    """A profile's segments, stored as a row of kind "segments" beside its columns."""
    segments = profile.segments
    size = len(segments.members)
    return {
        "monitor": monitor, "column": SEGMENT_PSEUDO_COLUMN, "kind": SEGMENTS_KIND, "role": "segment",
        "reference_start": profile.range.start, "reference_end": profile.range.end,
        "config_hash": segments.config_hash, "edges": [], "categories": [list(m) for m in segments.members],
        "labels": segments.keys[:size], "counts": list(segments.rows[:size]),
        "other": segments.rows[size], "missing": segments.rows[size + 1], "total": float(sum(segments.rows)),
        "error": None, "created_at": now, "complete": segments.complete,
        "segment_counts": {"by": list(segments.by), "distinct": segments.distinct},
    }


def _segment_profile(row) -> SegmentProfile:
    extra = row["segment_counts"] or {}
    return SegmentProfile(
        by=tuple(extra.get("by", ())), members=tuple(tuple(m) for m in row["categories"]),
        rows=(*row["counts"], row["other"], row["missing"]), distinct=int(extra.get("distinct", 0)),
        config_hash=row["config_hash"], complete=row["complete"])


def _column_profile(row) -> ColumnProfile:
    return ColumnProfile(
        column=row["column"],
        role=row["role"],
        kind=row["kind"],
        config_hash=row["config_hash"],
        edges=tuple(row["edges"]),
        categories=tuple(row["categories"]),
        labels=tuple(row["labels"]),
        counts=tuple(row["counts"]),
        other=row["other"],
        missing=row["missing"],
        error=row["error"],
        complete=row["complete"],
        segment_counts=tuple(tuple(c) for c in row["segment_counts"] or ()),
    )
