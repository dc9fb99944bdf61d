"""Times as the results database hands them back, made aware UTC datetimes: SQLite returns
aggregates such as ``max()`` as text, having lost the column type."""

from __future__ import annotations

from datetime import UTC, datetime


def stored_utc(moment) -> datetime:
    # Aggregates such as max() lose the column type, so SQLite hands back text.
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def with_utc(row) -> dict:
    """A row with its times as aware UTC datetimes (SQLite hands aggregates back as text)."""
    return {k: (stored_utc(v) if k.endswith(("_start", "_end", "_at")) and v is not None else v)
            for k, v in dict(row).items()}
