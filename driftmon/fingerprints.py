"""Fingerprints of everything that shapes stored numbers (README, "Stored state you can trust").

A stored artefact (reference profile, slice, result) carries the fingerprint of
the settings that shaped its numbers and is reused only while that fingerprint
matches the current config. Forgetting a setting must be impossible, so the
fingerprints dump each config model WHOLE, less the few settings named below
with the reason they cannot change a number; tests/test_fingerprints.py fails
when a model gains a field that is neither fingerprinted nor named here.

Secrets never enter a fingerprint: a source URL counts as the database it names
(backend, host, port, user, database, non-secret query parameters), so a
rotated password reuses what was counted, while another database does not.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import TYPE_CHECKING

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from driftmon.config import Feature, MonitorSettings, Segments

# Settings of a source that cannot change a count.
SOURCE_HARMLESS = {
    "timeout": "bounds how long a read may take, never what it counts",
}
# Settings of a watched column that cannot change its bins or counts (none today).
FEATURE_HARMLESS: dict[str, str] = {}
# Settings of a resolved monitor that cannot change a stored window's statistics or status.
# Its source and features are fingerprinted by source_fingerprint and column_fingerprint.
MONITOR_HARMLESS = {
    "name": "the key everything is stored under, not a number",
    "schedule": "decides which windows exist; a stored window is keyed by its own range",
    "catch_up": "how many missed windows the daemon computes, not their numbers",
    "slice": "a window summed from slices equals its full count",
    "lateness": "when a slice stops being recounted, not how it is counted",
    "volume": "the volume check's thresholds: its __volume__ rows carry their own fingerprint",
    "multivariate": "its __multivariate__ rows carry their own fingerprint (driftmon/multivariate/stage.py)",
}
# Settings of a monitor's segments that cannot change a number (the rest, ``by`` and ``max``, decide
# which rows each segment holds).
SEGMENTS_HARMLESS = {
    "top_k": "how many segments the metrics export, not their statistics",
}
# Query parameters whose values are secrets (as driftmon.store.database.safe_url hides them).
_SECRET_WORDS = ("pass", "pwd", "secret", "token", "key", "credential", "auth")


def fingerprint(document: object) -> str:
    """A stable sha256 of a JSON-able document (values that JSON lacks are written as text)."""
    text = json.dumps(document, sort_keys=True, default=str, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def url_identity(url: str | URL) -> dict:
    """The database a URL names, without its password or secret parameters.

    The driver is left out (psycopg and psycopg2 read the same database), and a
    relative SQLite path is made absolute, as SQLite opens it.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        return {"unparsed": hashlib.sha256(str(url).encode()).hexdigest()}
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:" \
            and not database.startswith("file:"):
        database = os.path.abspath(database)
    query = {name: value for name, value in parsed.query.items()
             if not any(word in name.lower() for word in _SECRET_WORDS)}
    return {"backend": parsed.get_backend_name(), "host": parsed.host, "port": parsed.port,
            "user": parsed.username, "database": database, "query": query}


def _settings(model: BaseModel, harmless: dict[str, str]) -> dict:
    return model.model_dump(mode="json", exclude=set(harmless))


def source_fingerprint(source: BaseModel, url: str | URL) -> str:
    """Every setting of a source that shapes its counts, with the database its URL names."""
    settings = _settings(source, {**SOURCE_HARMLESS, "url": "fingerprinted as url_identity"})
    return fingerprint({"source": settings, "database": url_identity(url)})


def column_fingerprint(source: str, feature: Feature | None, segments: Segments | None = None) -> str:
    """What shapes one column's profile and slice counts: its source and its own settings,
    and for a segmented monitor the segments its counts are split by.

    Histogram sources also count columns that the config does not list (``None``).
    An unsegmented column's fingerprint is the one it had before segments existed.
    """
    document = {"source": source, "feature": _settings(feature, FEATURE_HARMLESS) if feature else None}
    if segments is not None:
        document["segments"] = _settings(segments, SEGMENTS_HARMLESS)
    return fingerprint(document)


def results_fingerprint(monitor: MonitorSettings, url: str | URL) -> str:
    """What shapes a monitor's stored results: its columns' counts and every statistic setting."""
    source = source_fingerprint(monitor.source, url)
    settings = _settings(monitor, {**MONITOR_HARMLESS, "source": "", "features": "", "segments": ""})
    columns = [column_fingerprint(source, feature, monitor.segments) for feature in monitor.features]
    return fingerprint({"columns": columns, "source": source, "settings": settings})
