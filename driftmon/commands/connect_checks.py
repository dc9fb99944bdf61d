"""``check-config --connect``: the results database and each source, opened and read, never written.

The results database: reachable, and at which revision (nothing is created or
migrated: a SQLite file that does not exist yet is left so). Each source: its
table, the columns the config names (a typo is reported at the key that holds
it, with the closest column's name), their types (the timestamp column's too),
then the rows of the reference range and of the latest window
(driftmon/commands/source_rows.py) and, for a segmented monitor, the segments
its reference would make (driftmon/commands/segment_checks.py), so a setup
that would end every run as ``insufficient_data`` is caught before it goes blind.
"""

from __future__ import annotations

import difflib
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from driftmon.commands.setup_checks import CheckReport
from driftmon.config import Config, MonitorSettings
from driftmon.errors import ConfigError, SourceError
from driftmon.store.database import EngineRegistry, safe_url
from driftmon.urls import mask_credentials

_LABEL = "check-config --connect"


def run(config: Config, now: datetime) -> CheckReport:
    """Every --connect check; ``now`` places the latest windows."""
    from driftmon.commands.segment_checks import by_paths, check_segments
    from driftmon.commands.source_rows import check_rows

    report = CheckReport()
    check_results_database(config.database.url, report)
    engines = EngineRegistry()
    try:
        for index, monitor in enumerate(config.resolved_monitors()):
            engine = open_source_engine(config, index, monitor, engines, report)
            if engine is not None and check_columns(index, monitor, engine, report, by_paths(config, index)):
                check_rows(index, monitor, engine, now, report)
                check_segments(config, index, monitor, engine, now, report)
    finally:
        engines.dispose()
    return report


# --- the results database ------------------------------------------------------------


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for other engines, memory and ``file:`` URIs."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def check_results_database(url: str, report: CheckReport) -> None:
    """Connect and read the schema revision; a SQLite file that does not exist is not created."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        folder = path.resolve().parent
        if not folder.is_dir():
            report.problems.append(f"database.url: folder {folder} does not exist (for {path})")
        else:
            report.notes.append(f"results database {path} does not exist yet: `driftmon db upgrade` "
                                f"or the first run creates it")
        return
    engine = _read_only_engine(url, path)
    try:
        report.notes.append(f"results database {safe_url(url)}: {_revision_state(engine)}")
    except SQLAlchemyError as exc:
        report.problems.append(f"database.url: cannot open {safe_url(url)}: {mask_credentials(_first_line(exc))}")
    finally:
        engine.dispose()


def _read_only_engine(url: str, path: Path | None) -> Engine:
    """An engine for reading the schema's revision: driftmon's own, but for SQLite a plain one.

    driftmon's SQLite engine switches the file to WAL on connect; this one opens the
    file with ``mode=rw``, which never creates it, and leaves no -wal or -shm file
    behind when it closes (``mode=ro`` leaves them on a WAL file).
    """
    import sqlalchemy as sa

    from driftmon.store.database import create_db_engine

    if path is None:
        return create_db_engine(url, "database.url")
    return sa.create_engine(f"sqlite:///file:{quote(str(path.resolve()))}?mode=rw&uri=true",
                            poolclass=sa.pool.NullPool)


def _revision_state(engine: Engine) -> str:
    """Where the schema stands against driftmon's head revision; reads alembic_version only."""
    from driftmon.store import migrate

    current = migrate.current_revision(engine)
    head = migrate.head_revision(engine)
    if current == head:
        return f"reachable, at revision {current} (head)"
    if current is None:
        return "reachable, no driftmon tables yet: `driftmon db upgrade` or the first run creates them"
    return f"reachable, at revision {current}: `driftmon db upgrade` or the first run migrates it to {head}"


def _first_line(exc: BaseException) -> str:
    """A driver error's own first line, without SQLAlchemy's ``(module.Class)`` prefix and link."""
    detail = getattr(exc, "orig", None) or exc
    text = str(detail).strip()
    return text.splitlines()[0] if text else type(detail).__name__


# --- sources -------------------------------------------------------------------------


def open_source_engine(config: Config, index: int, monitor: MonitorSettings, engines: EngineRegistry,
                       report: CheckReport) -> Engine | None:
    """The source's engine, or None with a problem; a SQLite file that does not exist is not created."""
    url = config.source_url(monitor.source)
    path = sqlite_file(url)
    if path is not None and not path.exists():  # connecting would create it
        which = "source.url" if monitor.source.url else "database.url, as source.url is unset"
        report.problems.append(f"monitors[{index}].source: table {monitor.source.table!r} does not exist: "
                               f"its SQLite file {path} does not exist ({which})")
        return None
    try:
        return engines.get(url, f"monitors[{index}].source.url")
    except (ConfigError, SQLAlchemyError, ValueError, ImportError) as exc:
        report.problems.append(f"monitors[{index}].source.url: cannot open it: {mask_credentials(str(exc))}")
        return None


def check_columns(index: int, monitor: MonitorSettings, engine: Engine, report: CheckReport,
                  segment_columns: list[tuple[str, str]] = ()) -> bool:
    """The table exists and has every column named, of usable types; False with problems if not.

    ``segment_columns``: (key path, column) of the ``segments.by`` columns, whose key
    may be the defaults' (driftmon/commands/segment_checks.py, ``by_paths``).
    """
    from driftmon.sources.sql import SourceReader

    source = monitor.source
    reader = SourceReader(engine, monitor.name, source.table, source.schema_, [], source.timeout)
    try:
        with reader.reading(_LABEL) as connection:
            dialect = connection.dialect.name
    except SourceError as exc:
        report.problems.append(f"monitors[{index}].source: {mask_credentials(str(exc))}")
        return False
    except Exception as exc:  # noqa: BLE001  a driver's own error, e.g. thrift's TTransportException for Hive
        report.problems.append(f"monitors[{index}].source: {driver_failure(exc)}")
        return False
    problems = column_problems(index, monitor, reader.column_types or {}, dialect, segment_columns)
    report.problems.extend(problems)
    return not problems


def driver_failure(exc: Exception) -> str:
    """``cannot connect: TTransportException: ...``: an error that SQLAlchemy did not translate.

    Drivers that are not DB-API ones (PyHive's thrift transport) raise their own
    exceptions when the server cannot be reached; SQLAlchemy passes them through,
    and check-config --connect printed a traceback. The message is masked: a
    driver may quote the URL it was given.
    """
    return f"cannot connect or read: {type(exc).__name__}: {mask_credentials(_first_line(exc))}"


def column_problems(index: int, monitor: MonitorSettings, types: dict, dialect: str,
                    segment_columns: list[tuple[str, str]] = ()) -> list[str]:
    """Each configured column that the table lacks or holds in a type a run cannot use, at its key path."""
    from driftmon.sources.sql import require_numbers, timestamp_type_problem

    source, key = monitor.source, f"monitors[{index}]"
    table = f"{source.schema_}.{source.table}" if source.schema_ else source.table
    named = [(f"{key}.{path}", name) for path, name in named_columns(monitor)] + list(segment_columns)
    problems = [f"{path}: {missing_column(table, name, types)}" for path, name in named if name not in types]
    timestamp = source.timestamp_column
    if timestamp in types:
        problem = timestamp_type_problem(dialect, timestamp, types[timestamp], source.timestamp_unit, table)
        if problem:
            path = "timestamp_unit" if problem.startswith("source.timestamp_unit") else "timestamp_column"
            problems.append(f"{key}.source.{path}: {problem}")
    for path, name in numeric_columns(monitor):
        try:
            if name in types:
                require_numbers(types, [name])
        except SourceError as exc:
            problems.append(f"{key}.{path}: {exc}")
    return problems


def named_columns(monitor: MonitorSettings) -> list[tuple[str, str]]:
    """(key path below the monitor, column) for every column the monitor's source reads."""
    source = monitor.source
    named = [("source.timestamp_column", source.timestamp_column)]
    named += [(f"source.where.{column}", column) for column in source.where]
    if source.kind == "histograms":
        keys = ("feature_column", "bin_column", "count_column", "role_column")
        return named + [(f"source.{k}", getattr(source, k)) for k in keys if getattr(source, k)]
    return named + [(f"features[{j}].column", f.column) for j, f in enumerate(monitor.features)]


def numeric_columns(monitor: MonitorSettings) -> list[tuple[str, str]]:
    """(key path, column) for every column that must hold numbers."""
    if monitor.source.kind == "histograms":
        return [("source.count_column", monitor.source.count_column)]
    return [(f"features[{j}].type", f.column) for j, f in enumerate(monitor.features) if f.type == "numeric"]


def missing_column(table: str, name: str, types: dict) -> str:
    """``table 't' has no column 'amout'; did you mean 'amount'?`` (or the columns it has)."""
    columns = list(types)
    same = [column for column in columns if column.lower() == name.lower()]
    close = same or difflib.get_close_matches(name, columns, n=1)
    if close:
        return f"table {table!r} has no column {name!r}; did you mean {close[0]!r}?"
    shown = ", ".join(map(repr, columns[:12])) + (", ..." if len(columns) > 12 else "")
    return f"table {table!r} has no column {name!r} (its columns: {shown})"
