"""``driftmon.results`` and ``driftmon.runs``: the stored history as DataFrames.

Read-only, through the repository's queries (driftmon/store/repository.py), from
the results database the config names (``database.url``, or
``DRIFTMON_DATABASE_URL``, as every command reads it). Times are tz-aware UTC;
naive ``start``/``end`` are UTC, as everywhere in driftmon.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from driftmon.api.comparison import typed_frame
from driftmon.errors import StoreError

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from driftmon.config import Config

UTC_TIME = "datetime64[us, UTC]"
# driftmon.results' columns and dtypes (README, "From Python"): one row per (window, segment, feature).
RESULT_HISTORY_COLUMNS: dict[str, str] = {
    "monitor": "string", "window_start": UTC_TIME, "window_end": UTC_TIME,
    "reference_start": UTC_TIME, "reference_end": UTC_TIME, "segment": "string", "feature": "string",
    "role": "string", "status": "string", "statistic": "string", "kl": "float64", "psi": "float64",
    "js": "float64", "p_value": "float64", "q_value": "float64", "threshold_warning": "float64",
    "threshold_critical": "float64", "samples_reference": "float64", "samples_current": "float64",
    "missing_current": "float64", "missing_ratio": "float64", "computed_at": UTC_TIME, "run_id": "Int64",
}
# driftmon.runs' columns and dtypes: one row per run (a window computed, or a failure).
RUN_COLUMNS: dict[str, str] = {
    "run_id": "Int64", "monitor": "string", "window_start": UTC_TIME, "window_end": UTC_TIME,
    "reference_start": UTC_TIME, "reference_end": UTC_TIME, "status": "string", "error": "string",
    "trigger": "string", "scheduled_at": UTC_TIME, "started_at": UTC_TIME, "finished_at": UTC_TIME,
    "duration_seconds": "float64", "columns": "Int64", "rows_scanned": "Int64",
}

Moment = datetime | str | None


def results(config: str | os.PathLike[str] | Config, monitor: str, start: Moment = None,
            end: Moment = None) -> pd.DataFrame:
    """The stored results of ``monitor``'s windows ending after ``start`` and at or before ``end``.

    One row per (window, segment, feature), oldest window first (columns and dtypes:
    ``RESULT_HISTORY_COLUMNS``; ``segment`` is <NA> for the whole population).
    ``config``: a config file's path or a loaded ``Config``; ``start``/``end``: datetimes
    or ISO 8601 text (naive ones are UTC), None for no bound.

    >>> history = driftmon.results(config_path, "shop")
    >>> history[["window_end", "feature", "status"]].head(2)
                     window_end feature    status
    0 2024-03-08 12:00:00+00:00  amount  critical
    1 2024-03-08 12:00:00+00:00    plan        ok
    >>> str(history.window_end.dtype)
    'datetime64[us, UTC]'
    """
    loaded = _config(config, monitor)
    with _results_connection(loaded) as connection:
        from driftmon.store.repository import Repository

        rows = Repository().results_between(connection, monitor, _moment(start, "start"), _moment(end, "end"))
    return typed_frame([{**row, "feature": row["column"], "segment": row["segment_key"] or None}
                        for row in rows], RESULT_HISTORY_COLUMNS)


def runs(config: str | os.PathLike[str] | Config, monitor: str, start: Moment = None,
         end: Moment = None) -> pd.DataFrame:
    """The stored runs of ``monitor`` whose windows end after ``start`` and at or before ``end``.

    One row per run, oldest window first (columns and dtypes: ``RUN_COLUMNS``): its
    ``status`` (``ok`` or ``failed``, with the ``error``), ``trigger`` (schedule, backfill,
    run_once, late_data, recount), timings and rows scanned.

    >>> driftmon.runs(config_path, "shop")[["window_end", "status", "trigger"]]
                     window_end status   trigger
    0 2024-03-08 12:00:00+00:00     ok  backfill
    """
    loaded = _config(config, monitor)
    with _results_connection(loaded) as connection:
        from driftmon.store.repository import Repository

        rows = Repository().runs_between(connection, monitor, _moment(start, "start"), _moment(end, "end"))
    return typed_frame([{**row, "run_id": row["id"]} for row in rows], RUN_COLUMNS)


def load(config: str | os.PathLike[str] | Config) -> Config:
    """A loaded config as it is; a path read and validated as every command reads it."""
    from driftmon.config import Config
    from driftmon.config_file import load_config

    if isinstance(config, Config):
        return config
    if not isinstance(config, str | os.PathLike):
        raise TypeError(f"config must be a path or a driftmon Config, not {type(config).__name__}")
    return load_config(config)


def _config(config: str | os.PathLike[str] | Config, monitor: str) -> Config:
    """The config, having checked that it names ``monitor`` (a typo would read an empty history)."""
    from driftmon.app import select_monitors

    loaded = load(config)
    select_monitors(loaded, [monitor])
    return loaded


def _moment(value: Moment, key: str) -> datetime | None:
    from driftmon import limits
    from driftmon.errors import ConfigError

    if value is None:
        return None
    if not isinstance(value, datetime | str):
        raise TypeError(f"{key} must be a datetime or ISO 8601 text, not {type(value).__name__}")
    try:
        return limits.parse_moment(value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


@contextmanager
def _results_connection(config: Config) -> Iterator[Connection]:
    """A read connection to the results database; a missing one is a StoreError, never a new empty file."""
    from sqlalchemy.exc import SQLAlchemyError

    from driftmon.store.database import create_db_engine, parse_url, safe_url

    url = config.database.url
    parsed = parse_url(url, "database.url")
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
            and not Path(parsed.database).exists():
        raise StoreError(f"database.url: there is no results database at {parsed.database} yet: "
                         "`driftmon run-once` or `driftmon backfill` create it")
    engine = create_db_engine(url, "database.url")
    try:
        with engine.connect() as connection:
            yield connection
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StoreError(f"reading the results database {safe_url(url)} failed: {reason} "
                         "(`driftmon db upgrade` creates its tables)") from exc
    finally:
        engine.dispose()
