"""Schema watch: a monitor's source table compared with the table its reference was counted on.

A run reflects its table once (SourceReader) and then trusts that reflection, so a column
dropped later only shows as failing runs, and a retyped or new column not at all. SchemaWatch
reflects the table again now and then, compares it with a stored baseline and stores a
``source_schemas`` row per monitor: ``ok``, ``changed`` (columns added: news, not harm) or
``broken`` (a watched column dropped or retyped), with each change named. Watched columns are
those the reader needs: timestamp, ``where`` filters, features, segment columns.

The baseline rule: the baseline is the table as it was when the monitor's current reference was
counted, and ``baseline_at`` is the end of that reference. A check compares the table now with
the baseline and renews the baseline (the table now becomes it, status ``ok``) only when the
reference range has moved on (its end differs from ``baseline_at``), the run succeeded and no
watched column is missing: what that run counted its new reference on is the table now. Hence
a retyped watched column stays ``broken`` until the reference moves on and a run succeeds with
the new reference; a dropped one stays ``broken`` for as long as it is absent (a missing table
drops every watched column); an added column stays ``changed`` until the baseline is renewed.
The first check of a monitor takes the table as its baseline (a baseline of an absent table is
empty and is replaced by the first reflection that finds the table).

When to check (``due``): after a run that failed (to name the cause), when the reference range
moved since this process last checked the monitor, or once ``every`` has passed; otherwise a
steady cycle pays no metadata query.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import Engine

from driftmon.errors import SourceError
from driftmon.sources.sql import dbapi_errors, reflect_columns, source_errors, statement_timeout
from driftmon.store import health_queries
from driftmon.windows import TimeRange

log = logging.getLogger(__name__)

OK, CHANGED, BROKEN = "ok", "changed", "broken"
DROPPED, RETYPED, ADDED = "dropped", "retyped", "added"


def type_text(column_type: sa.types.TypeEngine, dialect: sa.Dialect | None = None) -> str:
    """A stable text for a reflected type, equal for equal types across reflections.

    Compiled with the dialect that reflected it where given: the generic compiler drops
    details such as PostgreSQL's ``WITH TIME ZONE``. Types that do not compile (engine
    types unknown to the compiler) fall back to their repr, which names class and arguments.
    """
    for compile_with in (dialect, None):
        try:
            return column_type.compile(dialect=compile_with) if compile_with is not None else str(column_type)
        except Exception:  # noqa: BLE001  any compiler's refusal; the next form still names the type
            continue
    text = repr(column_type)
    # A default object repr carries an address, different every reflection: the class is stabler.
    return type(column_type).__name__ if " at 0x" in text else text


def compare(baseline: dict[str, str], now: dict[str, str], watched: list[str]) -> tuple[str, list[dict]]:
    """The status and the changes of the table ``now`` against ``baseline`` ({column: type text}).

    Dropped and retyped are reported for watched columns only (another column's fate does not
    touch the monitor's counts); a watched column absent now is dropped even when the baseline
    lacked it too, so it stays broken for as long as it is absent. Added: any column absent
    from the baseline. Status: broken > changed > ok.
    """
    changes = []
    for column in dict.fromkeys(watched):
        if column not in now:
            changes.append({"column": column, "change": DROPPED, "was": baseline.get(column), "now": None})
        elif column in baseline and baseline[column] != now[column]:
            changes.append({"column": column, "change": RETYPED, "was": baseline[column], "now": now[column]})
    changes += [{"column": column, "change": ADDED, "was": None, "now": kind}
                for column, kind in now.items() if column not in baseline]
    changes.sort(key=lambda change: (change["change"], change["column"]))
    kinds = {change["change"] for change in changes}
    status = BROKEN if kinds & {DROPPED, RETYPED} else CHANGED if kinds else OK
    return status, changes


@dataclass(frozen=True)
class _Checked:
    """What this process saw at a monitor's last check: due() decides from it alone."""

    at: datetime
    reference: TimeRange
    baseline_at: datetime


class SchemaWatch:
    """Reflects monitors' source tables when due and stores their schema status (module docstring)."""

    def __init__(self, results: Engine, clock: Callable[[], datetime], every: timedelta = timedelta(minutes=10)):
        self.results = results
        self.clock = clock
        self.every = every
        self._checked: dict[str, _Checked] = {}
        self._lock = threading.Lock()  # monitors may run on several threads

    def due(self, monitor: str, *, failed: bool, reference: TimeRange) -> bool:
        """Whether this run should check the schema (module docstring, "When to check")."""
        if failed:
            return True
        with self._lock:
            last = self._checked.get(monitor)
        if last is None:
            return True
        # A reference that moved, or whose baseline a failed run could not renew yet.
        moved = reference != last.reference or reference.end != last.baseline_at
        return moved or self.clock() - last.at >= self.every

    def check(self, monitor: str, source, reference: TimeRange, *, failed: bool) -> dict:
        """Reflect ``source``'s table now, compare, store and return the monitor's schema row.

        Raises SourceError when the source cannot be read (unreachable, timed out): that says
        nothing about the schema, so nothing is stored.
        """
        reader = source.reader
        watched = [name for name in dict.fromkeys(reader.columns) if name]
        now = self._reflect(reader)
        checked_at = self.clock()
        fingerprint = getattr(source, "fingerprint", None)
        with self.results.begin() as connection:
            stored = health_queries.load_schema(connection, monitor)
            if stored is not None and stored.get("fingerprint") != fingerprint:
                stored = None  # another table or database: its baseline says nothing of this one
            row = {**self._next_row(monitor, stored, now, watched, reference, failed, checked_at),
                   "fingerprint": fingerprint}
            health_queries.save_schema(connection, row)
        with self._lock:
            self._checked[monitor] = _Checked(checked_at, reference, row["baseline_at"])
        if row["status"] == BROKEN:
            # The reader's cached types are stale: its next read reflects again and fails
            # naming the missing column, not with the engine's error about the statement.
            reader.column_types = None
        if stored is None or (stored["status"], stored["changes"]) != (row["status"], row["changes"]):
            level = logging.WARNING if row["status"] == BROKEN else logging.INFO
            log.log(level, "monitor %r: source schema %s%s", monitor, row["status"],
                    "".join(f"; {c['column']} {c['change']}" for c in row["changes"]),
                    extra={"event": "schema.changed", "monitor": monitor, "status": row["status"],
                           "changes": row["changes"]})
        return row

    @staticmethod
    def _next_row(monitor: str, stored: dict | None, now: dict[str, str], watched: list[str],
                  reference: TimeRange, failed: bool, checked_at: datetime) -> dict:
        """The row to store: the baseline rule of the module docstring."""
        if stored is None or not stored["baseline"]:
            baseline, baseline_at = now, reference.end  # first sight of the table
        else:
            baseline, baseline_at = stored["baseline"], stored["baseline_at"]
            missing = any(name not in now for name in watched)
            if reference.end != baseline_at and not failed and not missing:
                baseline, baseline_at = now, reference.end  # what the new reference was counted on
        status, changes = compare(baseline, now, watched)
        return {"monitor": monitor, "baseline": baseline, "baseline_at": baseline_at, "status": status,
                "changes": changes, "checked_at": checked_at}

    @staticmethod
    def _reflect(reader) -> dict[str, str]:
        """The table's columns now, {} when the table is gone; on a connection of its own."""
        label = f"monitor {reader.monitor!r}, table {reader.table!r}, schema check"
        with source_errors(label, dbapi_errors(reader.engine)), reader.engine.connect() as connection, \
                statement_timeout(connection, reader.timeout):
            try:
                types = reflect_columns(connection, reader.table, reader.schema)
            except SourceError:  # reflect_columns' own: the table does not exist
                return {}
            return {name: type_text(kind, connection.dialect) for name, kind in types.items()}


def schema_note(row: dict | None) -> str:
    """What a broken schema row adds to a failed run's error: the changes, named."""
    if row is None or row["status"] != BROKEN:
        return ""
    named = [f"column {c['column']!r} {c['change']}"
             + (f" ({c['was']} -> {c['now']})" if c["change"] == RETYPED else "")
             for c in row["changes"] if c["change"] != ADDED]
    return f" [source schema broken: {'; '.join(named)}]"
