"""Engines for the results and source databases, and URL rendering without secrets."""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, NoSuchModuleError

from driftmon.errors import ConfigError, StoreError
from driftmon.urls import HIDDEN, SECRET_PARAMETER, backend_problem, mask_credentials, respelled, scheme_problem


def parse_url(url: str | URL, key: str = "database URL") -> URL:
    """A parsed URL, or a ConfigError naming ``key`` (never echoing a password)."""
    problem = scheme_problem(url) if isinstance(url, str) else None
    if problem:  # SQLAlchemy's "could not parse" would be the message, the URL shown whole
        raise ConfigError(f"{key}: {problem}")
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018  make_url parses the port lazily on some versions
    except (ArgumentError, ValueError) as exc:
        # Their messages echo the URL or its parts, password included.
        reason = "bad port" if isinstance(exc, ValueError) else "not a URL"
        raise ConfigError(f"{key}: not a valid database URL ({reason}): {safe_url(url)}") from None
    return parsed


def check_url(url: str | URL, key: str) -> None:
    """That the URL parses and names a dialect and driver that are installed (no connection).

    SQLAlchemy imports a driver only when an engine is created, so a missing one
    (``mssql+pyodbc://`` without pyodbc) would pass here and fail the first run:
    the driver module is imported now, and the message names what to install.
    """
    parsed = parse_url(url, key)
    try:
        dialect = parsed.get_dialect()
    except (NoSuchModuleError, ImportError) as exc:
        spelling = respelled(parsed.drivername)
        if spelling:
            raise ConfigError(f"{key}: SQLAlchemy has no {parsed.drivername}:// scheme; "
                              f"did you mean {spelling}://?") from None
        raise ConfigError(f"{key}: no SQLAlchemy dialect or driver {parsed.drivername!r} is installed "
                          f"({type(exc).__name__}){_dialect_hint(parsed)}") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        module = (exc.name or "").split(".")[0] or str(exc)
        raise ConfigError(f"{key}: the driver of {parsed.drivername!r} is not installed (no module {module!r}): "
                          f"{_driver_hint(parsed, module)}") from None


# What to install for a driver module, where its pip name differs or driftmon has an extra for it. The
# extras are named by their packages: PyPI's "driftmon" is another project, and no release exists yet
# under this one's distribution name (driftmon-daemon) to name an extra of.
_MYSQL, _DUCKDB = "pymysql (driftmon's mysql extra)", "duckdb duckdb-engine (driftmon's duckdb extra)"
_CLICKHOUSE = "chdb chdb-sqlalchemy (driftmon's clickhouse extra)"
_SPARK = "pyhive thrift thrift-sasl pure-sasl (driftmon's spark extra)"
_DRIVER_PACKAGES = {
    "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient", "pymysql": _MYSQL,
    "psycopg": "'psycopg[binary]'", "cx_Oracle": "cx_Oracle", "duckdb": _DUCKDB,
    "chdb": _CLICKHOUSE, "pyhive": _SPARK, "thrift": _SPARK, "thrift_sasl": _SPARK, "sasl": _SPARK,
}
# What to install for a dialect that SQLAlchemy does not ship.
_DIALECT_PACKAGES = {
    "duckdb": _DUCKDB, "chdb": _CLICKHOUSE, "hive": _SPARK,
    "snowflake": "snowflake-sqlalchemy", "bigquery": "sqlalchemy-bigquery", "trino": "trino",
    "databricks": "databricks-sqlalchemy", "redshift": "sqlalchemy-redshift",
}
def _driver_hint(parsed: URL, module: str) -> str:
    hint = f"pip install {_DRIVER_PACKAGES.get(module, module)}"
    if parsed.get_backend_name() == "postgresql" and module != "psycopg":
        hint += " (or use postgresql+psycopg://, the driver installed with driftmon)"
    return hint


def _dialect_hint(parsed: URL) -> str:
    """``: pip install ...`` for the dialects driftmon knows of, else nothing."""
    backend = parsed.drivername.split("+")[0]
    return f": pip install {_DIALECT_PACKAGES[backend]}" if backend in _DIALECT_PACKAGES else ""


def results_backend_problem(url: str | URL) -> str | None:
    """Why ``url`` cannot be the results database, or None. Sources may use any engine."""
    return backend_problem(parse_url(url).get_backend_name())


def safe_url(url: str | URL) -> str:
    """The URL as text with its password and secret query parameters hidden.

    What SQLAlchemy does not parse (a URL without its scheme, a bad port) is masked as
    text; what it does is masked again as text too: an unencoded ``@`` in a password
    (``alice:p@ss@host``) leaves the rest of the password in what SQLAlchemy calls the host.
    """
    try:
        parsed = make_url(url)
        secrets = {name: HIDDEN for name in parsed.query if SECRET_PARAMETER.search(name)}
        text = parsed.update_query_dict(secrets).render_as_string(hide_password=True)
        text = text.replace(quote(HIDDEN, safe=""), HIDDEN)
    except (ArgumentError, ValueError):
        text = str(url)
    return mask_credentials(text)


def create_db_engine(url: str | URL, key: str = "database URL", pool_size: int | None = None) -> Engine:
    """A pooled engine; SQLite gets foreign keys and a busy timeout.

    ``key``: where the URL came from (``database.url``, ``monitors[0].source.url``), named by its errors.
    ``pool_size``: connections kept open (SQLAlchemy's default, 5, otherwise). ``serve`` sizes it to its
    workers: past the pool, every checkout opened and closed a connection of its own.
    """
    parsed = parse_url(url, key)
    check_url(parsed, key)
    kwargs: dict = {}
    if pool_size is not None:
        kwargs["pool_size"] = pool_size
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 30}
    elif parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("psycopg", ""):
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        # psycopg 3 switches to a cached generic plan after 5 executions, which
        # ignores session settings and was measured 3.5x slower for bin queries.
        # Naive source timestamps are UTC: make the session say so too.
        # connect_timeout: a server that is down or unreachable fails the connect within
        # 10 s instead of hanging a run or a health check.
        kwargs["connect_args"] = {"prepare_threshold": None, "options": "-c timezone=UTC", "connect_timeout": 10}
    engine = create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "checkout", partial(_ping_if_idle, engine.dialect))
    event.listen(engine, "checkin", _note_checkin)
    return engine


def single_statements(engine: Engine) -> Connection:
    """A connection for statements that stand alone (a claim, a release, a lookup): in
    autocommit, so that each is one round trip, not BEGIN, the statement and COMMIT or
    ROLLBACK (psycopg sends each apart: a steady run made 17 round trips, bench/README.md)."""
    return engine.connect().execution_options(isolation_level="AUTOCOMMIT")


# A pooled connection idle for longer than this is pinged before use (a restarted server
# dropped it); one handed back moments ago is not. SQLAlchemy's pool_pre_ping pinged at every
# checkout: five round trips in a steady run of thousands a minute (bench/README.md, capacity).
PING_AFTER_IDLE_SECONDS = 1.0


def _note_checkin(_dbapi_connection, record) -> None:
    if record is not None:
        record.info["checked_in"] = time.monotonic()


def _ping_if_idle(dialect, dbapi_connection, record, _proxy) -> None:
    """Ping a connection that sat idle; a dead one is replaced (the pool retries the checkout)."""
    idle_since = record.info.get("checked_in")
    if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
        return  # new, or in use a moment ago
    try:
        alive = dialect.do_ping(dbapi_connection)
    except Exception as exc:  # noqa: BLE001  any driver's "connection closed"
        raise DisconnectionError(str(exc)) from exc
    if alive is False:
        raise DisconnectionError("the connection did not answer a ping")


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets a writer and readers (the daemon, a feed, a dashboard query)
    # work side by side; NORMAL sync is durable at checkpoints, which is what a
    # monitoring store needs, and spares an fsync per committed run.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # A window count's GROUP BY per column keeps a sorter per column until the
    # statement ends, each sized from the page cache: at the default 2 MiB a
    # 50-column reference count peaked at 103 MB, at 512 KiB at 53 MB, in the
    # same time (smaller sizes gain nothing more). The OS caches the file anyway.
    cursor.execute("PRAGMA cache_size=-512")
    cursor.close()


class EngineRegistry:
    """One pooled engine per distinct database URL, shared by every monitor using it."""

    def __init__(self, pool_size: int | None = None) -> None:
        self._engines: dict[str, Engine] = {}
        self.pool_size = pool_size

    def get(self, url: str, key: str = "database URL") -> Engine:
        """The URL's engine, created on first use; ``key`` names the URL's config key in its errors."""
        if url not in self._engines:
            self._engines[url] = create_db_engine(url, key, self.pool_size)
        return self._engines[url]

    def dispose(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()


@contextmanager
def sqlite_daemon_lock(url: str) -> Iterator[None]:
    """One daemon per SQLite file: a second one fails fast instead of racing the first.

    PostgreSQL needs no such lock: replicas coordinate through lease rows.
    """
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        yield
        return
    path = Path(parsed.database).resolve()
    try:
        handle = open(f"{path}.lock", "a+")  # noqa: SIM115  closed by the with below
    except OSError as exc:
        raise ConfigError(f"database.url: cannot create {path}.lock: {exc.strerror} "
                          f"(the SQLite file's folder must be writable)") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                f"another driftmon daemon already serves {path}: SQLite supports one daemon "
                f"per database file (use PostgreSQL for replicas)"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
