"""Source engines under test, beyond SQLite and PostgreSQL (issue 17).

``source_engine`` (tests/test_engines*.py) is one fresh, empty source database
per test on each engine below, while the results store stays SQLite. An engine
whose driver is not installed is skipped with the extra to install, or fails
when CI=true, where every engine must run; so does a server that does not answer.

- ``mariadb``: a throw-away database on the server named by
  DRIFTMON_TEST_MYSQL_URL (``.ci/run`` starts it and sets it), through PyMySQL.
  MariaDB's DOUBLE holds no NaN or ±inf (the server and the driver refuse
  them), so what a writer must store instead, NULL, is what the test tables get:
  driftmon counts both as missing, so every expected count stays the same.
- ``duckdb``: a database file in the test's folder, through duckdb-engine.
- ``clickhouse``: embedded chDB through chdb-sqlalchemy; one embedded server
  per process, so one database for every test, emptied after each.
- ``spark``: a Spark Thrift Server from the pyspark wheel (tests/spark_server.py),
  one per session, through PyHive's ``hive://`` dialect; a throw-away database
  per test. PyHive writes bound values into the statement text with escaping
  that Spark reads differently (``'b''q'`` is ``bq``, backslashes escape), so
  the TEST ROWS are written as literals of Spark's own syntax (``_spark_literals``);
  driftmon's own statements never rely on it (dialects.exact_literal, dialects.double).
"""

from __future__ import annotations

import importlib
import math
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from driftmon.store.database import create_db_engine
from tests.spark_server import SPARK_URL_ENV, SparkStartError, SparkThriftServer

MYSQL_URL_ENV = "DRIFTMON_TEST_MYSQL_URL"
_CLICKHOUSE: sa.Engine | None = None


@dataclass(frozen=True)
class EngineKind:
    name: str
    modules: tuple[str, ...]  # what the dialect imports
    extra: str  # pip install '.[extra]' in the checkout
    finite_only: bool = False  # a double column holds no NaN/±inf


ENGINES = {
    "mariadb": EngineKind("mariadb", ("pymysql",), "mysql", finite_only=True),
    "duckdb": EngineKind("duckdb", ("duckdb", "duckdb_engine"), "duckdb"),
    "clickhouse": EngineKind("clickhouse", ("chdb", "chdb_sqlalchemy"), "clickhouse"),
    "spark": EngineKind("spark", ("pyhive.hive", "thrift", "thrift_sasl", "puresasl"), "spark"),
}
NAMES = list(ENGINES)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """Skip, saying what to install or start; in CI every engine must run, so fail."""
    if in_ci():
        pytest.fail(f"CI runs every engine: {reason}")
    pytest.skip(reason)


def require_driver(kind: EngineKind) -> None:
    for module in kind.modules:
        try:
            importlib.import_module(module)
        except ImportError:
            unavailable(f"{kind.name} tests need driftmon's {kind.extra} extra, `pip install '.[{kind.extra}]'` "
                        f"({module} is missing)")


def mysql_server_url() -> str:
    url = os.environ.get(MYSQL_URL_ENV)
    if not url:
        unavailable(f"{MYSQL_URL_ENV} is not set (e.g. mysql+pymysql://root@127.0.0.1:3306/test)")
    return url


class _Server:
    """Throw-away databases on a MariaDB/MySQL server."""

    def __init__(self, url: str):
        self.url = make_url(url)
        self.admin = sa.create_engine(self.url, isolation_level="AUTOCOMMIT")

    def create(self) -> str:
        name = f"driftmon_src_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE `{name}`")
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS `{make_url(url).database}`")


def _no_non_finite(engine: sa.Engine) -> None:
    """NaN and ±inf written as NULL, as a writer to MariaDB must (see the module docstring)."""
    def clean(value):
        return None if isinstance(value, float) and not math.isfinite(value) else value

    def row(parameters):
        if isinstance(parameters, dict):
            return {k: clean(v) for k, v in parameters.items()}
        return type(parameters)(clean(v) for v in parameters)

    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def _clean(connection, cursor, statement, parameters, context, executemany):
        if statement.lstrip()[:6].upper() != "INSERT":
            return statement, parameters
        if executemany:
            return statement, [row(p) for p in parameters]
        return statement, row(parameters) if parameters else parameters


def _spark_literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "CAST('NaN' AS DOUBLE)"
        if math.isinf(value):
            return f"CAST('{'' if value > 0 else '-'}Infinity' AS DOUBLE)"
        return f"{value!r}D"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"  # Spark's escapes
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.strftime('%Y-%m-%d %H:%M:%S.%f')}'"
    raise TypeError(f"no Spark literal for {value!r}")


def _spark_literals(engine: sa.Engine) -> None:
    """The test rows' INSERTs rendered in Spark's literal syntax, not PyHive's (module docstring)."""
    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def _render(connection, cursor, statement, parameters, context, executemany):
        if statement.lstrip()[:6].upper() != "INSERT" or not isinstance(parameters, dict) or not parameters:
            return statement, parameters  # an insertmanyvalues batch is one dict
        return statement % {k: _spark_literal(v) for k, v in parameters.items()}, None

    # Spark's many-rows INSERT: one statement (one Spark job) per table, not one per row.
    engine.dialect.use_insertmanyvalues = engine.dialect.use_insertmanyvalues_wo_returning = True
    # PyHive's has_table reads Hive's "Table not found" message; Spark 4 words it otherwise.
    engine.dialect.has_table = _spark_has_table


def _spark_has_table(connection, table_name, schema=None, **kw) -> bool:
    database = schema or connection.engine.url.database or "default"
    rows = connection.exec_driver_sql(f"SHOW TABLES IN `{database}`").all()
    return any(row[1] == table_name for row in rows)


class EngineFactory:
    """Fresh source databases of every kind, for one test session."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory):
        self.tmp = tmp_path_factory
        self._servers: dict[str, _Server] = {}
        self._spark_url: str | None = None
        self._spark_server: SparkThriftServer | None = None

    def open(self, name: str) -> Iterator[sa.Engine]:
        kind = ENGINES[name]
        require_driver(kind)
        if name == "mariadb":
            yield from self._mariadb()
        elif name == "duckdb":
            path = self.tmp.mktemp("duckdb") / "source.duckdb"
            engine = create_db_engine(f"duckdb:///{path}")
            yield engine
            engine.dispose()
        elif name == "clickhouse":
            yield from self._chdb()
        elif name == "spark":
            yield from self._spark()

    def _mariadb(self) -> Iterator[sa.Engine]:
        url = mysql_server_url()
        server = self._servers.get(url)
        if server is None:
            server = self._servers[url] = _Server(url)
        try:
            database = server.create()
        except sa.exc.OperationalError as exc:
            unavailable(f"the MariaDB/MySQL server of {MYSQL_URL_ENV} does not answer: {exc.orig}")
        engine = create_db_engine(database)
        _no_non_finite(engine)
        try:
            yield engine
        finally:
            engine.dispose()
            server.drop(database)

    def _chdb(self) -> Iterator[sa.Engine]:
        # chDB allows one embedded server, at one path, per process: one engine
        # for every test module, emptied after each test.
        global _CLICKHOUSE
        if _CLICKHOUSE is None:
            path = self.tmp.mktemp("chdb")
            _CLICKHOUSE = create_db_engine(f"chdb:///{path}")
            # The test tables' rows in one multi-row INSERT each, not one INSERT per row (13 s per test).
            dialect = _CLICKHOUSE.dialect
            dialect.use_insertmanyvalues = dialect.use_insertmanyvalues_wo_returning = True
            # chDB's driver writes bound floats with 15 significant digits: the test rows
            # would not be the rows the other engines hold. driftmon's own statements
            # do not rely on this (dialects.double).
            from chdb.dbapi import converters

            converters.encoders[float] = lambda value, mapping=None: repr(value)
        engine = _CLICKHOUSE
        yield engine
        with engine.connect() as connection:
            for (table,) in connection.exec_driver_sql(
                    "SELECT name FROM system.tables WHERE database = currentDatabase()").all():
                connection.exec_driver_sql(f"DROP TABLE IF EXISTS `{table}`")

    def _spark(self) -> Iterator[sa.Engine]:
        if self._spark_url is None:
            self._spark_url = os.environ.get(SPARK_URL_ENV)
        if self._spark_url is None:
            try:
                importlib.import_module("pyspark")
            except ImportError:
                unavailable(f"Spark tests start a local Thrift Server from pyspark (`pip install pyspark`, "
                            f"with Java 17), or use the one that {SPARK_URL_ENV} names")
            self._spark_server = SparkThriftServer(self.tmp.mktemp("spark"))
            try:
                self._spark_url = self._spark_server.start()
            except SparkStartError as exc:
                unavailable(str(exc))
        admin = sa.create_engine(self._spark_url)
        name = f"driftmon_src_{uuid.uuid4().hex[:12]}"
        with admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE `{name}`")
        engine = create_db_engine(make_url(self._spark_url).set(database=name))
        _spark_literals(engine)
        try:
            yield engine
        finally:
            engine.dispose()
            with admin.connect() as connection:
                connection.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}` CASCADE")
            admin.dispose()

    def dispose(self) -> None:
        if self._spark_server is not None:
            self._spark_server.stop()
        for server in self._servers.values():
            server.admin.dispose()
        if _CLICKHOUSE is not None:
            _CLICKHOUSE.dispose()  # connections close; the embedded server stays for the process


@pytest.fixture(scope="session")
def engine_factory(tmp_path_factory) -> Iterator[EngineFactory]:
    factory = EngineFactory(tmp_path_factory)
    yield factory
    factory.dispose()


@pytest.fixture(params=NAMES)
def engine_name(request) -> str:
    return request.param


@pytest.fixture
def source_engine(engine_factory, engine_name) -> Iterator[sa.Engine]:
    """A fresh, empty source database on the engine under test."""
    yield from engine_factory.open(engine_name)


@pytest.fixture
def backend() -> str:
    """The results store of engine tests: SQLite (conftest's ``db_url``/``engine``)."""
    return "sqlite"


@pytest.fixture
def results_engine(engine) -> sa.Engine:
    """The results store (conftest's SQLite ``engine``)."""
    return engine


@pytest.fixture
def results_store(monkeypatch, results_engine, source_engine) -> None:
    """The SQLite results store wherever a test body hands its source engine to the store.

    The SQLite and PostgreSQL bodies keep a test's source table and results in
    one database; DuckDB and ClickHouse are sources only, so the slices and
    profiles they would store go to the SQLite results database instead.
    """
    from driftmon.counting import incremental, profiles
    from tests import test_slices

    def results(candidate):
        return results_engine if candidate is source_engine else candidate

    class Counter(incremental.SliceCounter):
        def __init__(self, repository, store, clock):
            super().__init__(repository, results(store), clock)

    def reference_profile(repository, store, *args):
        return profiles.reference_profile(repository, results(store), *args)

    monkeypatch.setattr(incremental, "SliceCounter", Counter)
    monkeypatch.setattr(test_slices, "SliceCounter", Counter)
    monkeypatch.setattr(test_slices, "reference_profile", reference_profile)
