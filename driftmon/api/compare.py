"""``driftmon.compare``: the daemon's numbers on two pandas DataFrames.

Not a second implementation: the two frames are registered in an in-process
DuckDB (one of the daemon's source engines) as one events table, the
reference's rows stamped with one day and the current's with the next, and a
monitor with a fixed reference on that day runs the daemon's own code on it:
``EventsSource.profile`` cuts the bins and counts the reference inside DuckDB,
``EventsSource.counts`` counts the current window, and
``window_results.window_statistics`` makes the one engine call, the G-test and
Benjamini-Hochberg and the statuses. The same rows in a source table give the
same bins, counts and statistics (tests/test_api_history.py checks it against
``driftmon backfill`` to 1e-12, tests/test_api.py against numpy and scipy to 1e-9).

The frames are read where they lie (DuckDB scans pandas memory): nothing is
copied into a database, and nothing is stored; no results database is needed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from driftmon.errors import ConfigError
from driftmon.windows import TimeRange

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from driftmon.api.comparison import Comparison
    from driftmon.config import ComputeConfig, MonitorSettings

MONITOR = "compare"
TABLE = "driftmon_frames"
REFERENCE_FRAME, CURRENT_FRAME = "driftmon_reference_frame", "driftmon_current_frame"
# The reference's rows are stamped with second 0 since the epoch, the current's with DAY: the
# reference range is the first day of 1970, the current window the second (numeric timestamps,
# as the daemon reads any events table whose timestamps are numbers).
DAY = 86_400
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REFERENCE = TimeRange(_EPOCH, _EPOCH + timedelta(seconds=DAY))
CURRENT = TimeRange(_EPOCH + timedelta(seconds=DAY), _EPOCH + timedelta(seconds=2 * DAY))
# What compare() takes as keywords: the monitor's settings, and the engine's.
MONITOR_SETTINGS = ("smoothing", "kl_direction", "thresholds", "significance", "min_samples")
COMPUTE_SETTINGS = ("device", "dtype")


def compare(reference: pd.DataFrame, current: pd.DataFrame,
            features: Sequence[str | Mapping[str, Any]] | None = None, *,
            segments: str | Sequence[str] | Mapping[str, Any] | None = None, **settings: Any) -> Comparison:
    """Compare two DataFrames column by column, as a driftmon monitor would: KL, PSI, JS, p and q.

    ``features``: column names, or the config's feature entries
    (``{"column": "amount", "type": "numeric", "bins": 10, "binning": "quantile"}``,
    ``{"column": "country", "type": "categorical", "top_k": 20}``); an entry without
    ``type`` takes it from the column's dtype. Default: every column of ``reference``,
    numbers (nullable ones too) numeric, everything else (text, ``category``, booleans)
    categorical, dates and durations left out. ``segments``: a column (or list, or the
    config's ``segments`` mapping) to split both frames by. Any monitor setting is a
    keyword: ``smoothing``, ``kl_direction``, ``thresholds``, ``significance``,
    ``min_samples`` (with the config file's defaults), and the engine's ``device`` and ``dtype``.

    NULL, None, NaN and ±inf are missing values (the ``__missing__`` bin). DuckDB (installed with
    driftmon) holds the frames; no results database, no network.

    >>> import numpy as np, pandas as pd, driftmon
    >>> rng = np.random.default_rng(7)
    >>> reference = pd.DataFrame({"amount": rng.normal(100, 20, 5_000),
    ...                           "country": rng.choice(["DE", "FR", "US"], 5_000)})
    >>> current = pd.DataFrame({"amount": rng.normal(130, 20, 5_000),
    ...                         "country": rng.choice(["DE", "FR", "US"], 5_000)})
    >>> comparison = driftmon.compare(reference, current)
    >>> comparison.to_df()[["feature", "status"]]
       feature    status
    0   amount  critical
    1  country        ok
    >>> comparison.status("amount")
    'critical'
    """
    from driftmon.api.comparison import Comparison
    from driftmon.sources import open_source
    from driftmon.window_results import window_statistics

    reference, current = _frame("reference", reference), _frame("current", current)
    by = _segment_columns(segments)
    for name, frame in (("reference", reference), ("current", current)):
        absent = [column for column in by if column not in frame.columns]
        if absent:
            raise ConfigError(f"segments: the {name} DataFrame has no column(s) {', '.join(map(repr, absent))}")
    entries = feature_entries(reference, current, features, by)
    monitor, compute = monitor_settings(entries, segments, settings)
    watched = [*(entry["column"] for entry in entries), *(monitor.segments.by if monitor.segments else ())]
    with frames_engine(reference, current, watched, monitor.source.timestamp_column) as engine:
        source = open_source(monitor, engine)
        profile = source.profile(REFERENCE)
        counts = source.counts(profile, CURRENT)
    results = window_statistics(monitor, counts, REFERENCE, compute)
    described = f"reference DataFrame ({len(reference):,} rows) vs current DataFrame ({len(current):,} rows)"
    return Comparison(monitor, tuple(results), window=CURRENT, reference=REFERENCE, dtype=compute.dtype,
                      description=described)


# --- the frames and their columns ------------------------------------------------------------


def _frame(name: str, frame: Any) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"compare(): {name} must be a pandas DataFrame, not {type(frame).__name__}")
    if frame.columns.has_duplicates:
        twice = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise ConfigError(f"{name}: column(s) named twice: {', '.join(twice)}")
    if not all(isinstance(c, str) for c in frame.columns):
        frame = frame.rename(columns=str)  # a lazy copy (copy-on-write): no data moves
    return frame


def column_kind(series: pd.Series) -> str | None:
    """``numeric`` or ``categorical`` by dtype; None for dates and durations (not binned)."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return "categorical"
    if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype) \
            or isinstance(dtype, pd.PeriodDtype):
        return None
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        return "numeric"
    return "categorical"


def feature_entries(reference: pd.DataFrame, current: pd.DataFrame,
                    features: Sequence[str | Mapping[str, Any]] | None, segment_by: Sequence[str] = ()) -> list[dict]:
    """The config's feature entries for these frames, every one with its ``type``."""
    if features is None:
        chosen: list[str | Mapping[str, Any]] = [c for c in reference.columns
                                                 if c not in segment_by and column_kind(reference[c]) is not None]
    elif isinstance(features, str | Mapping):
        chosen = [features]
    else:
        chosen = list(features)
    entries = []
    for i, feature in enumerate(chosen):
        entry = {"column": feature} if isinstance(feature, str) else dict(feature)
        column = entry.get("column")
        for name, frame in (("reference", reference), ("current", current)):
            if isinstance(column, str) and column not in frame.columns:
                where = f"features[{i}]" if features is not None else "compare()"
                raise ConfigError(f"{where}: the {name} DataFrame has no column {column!r}"
                                  f" (its columns: {', '.join(map(str, frame.columns))})")
        if isinstance(column, str):
            _check_type(entry, reference[column], f"features[{i}]" if features is not None else "compare()")
        entries.append(entry)
    return entries


def _check_type(entry: dict, series: pd.Series, where: str) -> None:
    """The entry's ``type`` from the column's dtype where it has none; a dtype the type cannot bin is a
    ConfigError naming the feature here, before DuckDB would name its internal table."""
    kind, column, dtype = column_kind(series), entry["column"], series.dtype
    if "type" not in entry:
        if kind is None:
            raise ConfigError(f"{where}: column {column!r} holds {dtype} values, which compare() does not bin "
                              "by default: give it `type: categorical`, or convert it first (e.g. `.dt.hour`)")
        entry["type"] = kind
    elif entry["type"] == "numeric" and kind != "numeric":
        raise ConfigError(f"{where}: column {column!r} is declared numeric but its dtype is {dtype}: "
                          "declare it `type: categorical`, or convert it first")


def _segment_columns(segments: str | Sequence[str] | Mapping[str, Any] | None) -> list[str]:
    if segments is None:
        return []
    if isinstance(segments, str):
        return [segments]
    if isinstance(segments, Mapping):
        by = segments.get("by")
        return [by] if isinstance(by, str) else list(by or [])
    return list(segments)


# --- the monitor ---------------------------------------------------------------------------


def monitor_settings(entries: list[dict], segments, settings: dict[str, Any]) -> tuple[MonitorSettings, ComputeConfig]:
    """The monitor that reads the frames, validated as a config file is; errors name the keyword."""
    from driftmon.config_file import parse_config

    unknown = sorted(set(settings) - {*MONITOR_SETTINGS, *COMPUTE_SETTINGS})
    if unknown:
        raise ConfigError(f"compare(): unknown setting(s) {', '.join(unknown)} (settings: "
                          f"{', '.join((*MONITOR_SETTINGS, *COMPUTE_SETTINGS))})")
    monitor: dict[str, Any] = {
        "name": MONITOR,
        "source": {"kind": "events", "table": TABLE, "timestamp_column": timestamp_column(entries, segments)},
        "features": entries,
        "reference": {"kind": "fixed", "start": REFERENCE.start, "end": REFERENCE.end},
        "window": {"size": f"{DAY}s"}, "schedule": {"every": f"{DAY}s"},
        **{key: settings[key] for key in MONITOR_SETTINGS if key in settings},
    }
    if segments is not None:
        monitor["segments"] = dict(segments) if isinstance(segments, Mapping) else {"by": _segment_columns(segments)}
    raw = {"monitors": [monitor], "compute": {key: settings[key] for key in COMPUTE_SETTINGS if key in settings}}
    try:
        config = parse_config(raw, environ={})
    except ConfigError as exc:
        raise ConfigError([_as_keyword(problem) for problem in exc.problems]) from None
    return config.resolved_monitors()[0], config.compute


def _as_keyword(problem: str) -> str:
    """``monitors[0].smoothing.alpha: ...`` as the keyword says it: ``smoothing.alpha: ...``."""
    problem = re.sub(r"^monitors\[0\]\s*(\(compare\))?:", "compare():", problem)
    return re.sub(r"^(monitors\[0\]|compute)\.", "", problem)


def timestamp_column(entries: list[dict], segments) -> str:
    """A name for the rows' stamps that no watched column has."""
    taken = {str(entry.get("column")) for entry in entries} | set(_segment_columns(segments))
    name = "driftmon_time"
    while name in taken:
        name = f"_{name}"
    return name


# --- the frames in DuckDB ---------------------------------------------------------------------


@contextmanager
def frames_engine(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str],
                  timestamp: str) -> Iterator[Engine]:
    """An in-process DuckDB whose table ``TABLE`` holds both frames' ``columns``, stamped.

    The frames are registered (DuckDB scans their memory); the table is a view of the two.
    """
    import sqlalchemy as sa
    from sqlalchemy.pool import StaticPool

    try:
        import duckdb_engine  # noqa: F401  the dialect, imported here to say what is missing
    except ImportError as exc:
        raise ImportError("driftmon.compare reads the DataFrames through DuckDB, a dependency of driftmon "
                          "that is missing here: pip install duckdb duckdb-engine") from exc
    engine = sa.create_engine("duckdb:///:memory:", poolclass=StaticPool)
    try:
        with engine.connect() as connection:
            raw = connection.connection.dbapi_connection
            raw.register(REFERENCE_FRAME, reference)
            raw.register(CURRENT_FRAME, current)
            text = [c for c in columns if _enum(reference[c]) or _enum(current[c])]
            connection.exec_driver_sql(_view_sql(connection.dialect, dict.fromkeys(columns), timestamp, text))
            connection.commit()
        yield engine
    finally:
        engine.dispose()


def _enum(series: pd.Series) -> bool:
    """A ``category`` column of text, which DuckDB reads as an ENUM: ordered by its categories' order,
    where the daemon breaks ties between equally frequent categories by their text."""
    dtype = series.dtype
    return isinstance(dtype, pd.CategoricalDtype) and not pd.api.types.is_numeric_dtype(dtype.categories.dtype)


def _view_sql(dialect, columns, timestamp: str, text: list[str]) -> str:
    """``CREATE TEMPORARY VIEW`` of both frames' columns, each row stamped with its window's second;
    the ``text`` ones as VARCHAR."""
    import sqlalchemy as sa

    def column(name: str) -> sa.ColumnElement:
        return sa.cast(sa.column(name), sa.String).label(name) if name in text else sa.column(name)

    def rows(frame: str, second: int) -> sa.Select:
        stamp = sa.cast(sa.literal(second), sa.BigInteger).label(timestamp)
        return sa.select(stamp, *(column(c) for c in columns)).select_from(sa.table(frame))

    both = sa.union_all(rows(REFERENCE_FRAME, 0), rows(CURRENT_FRAME, DAY))
    body = both.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    return f"CREATE TEMPORARY VIEW {dialect.identifier_preparer.quote(TABLE)} AS {body}"
