"""Shared fixtures: a clean results database per test, on SQLite and on PostgreSQL.

Every test that takes ``db_url``/``engine`` runs once per backend: always on
SQLite, and on PostgreSQL when DRIFTMON_TEST_DATABASE_URL names a server
(``.ci/run`` sets it). PostgreSQL tests clone a migrated template database, so
each test starts clean without paying for the migrations again.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from driftmon.store import migrate
from driftmon.store.database import create_db_engine

POSTGRES_URL_ENV = "DRIFTMON_TEST_DATABASE_URL"
BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=[
            pytest.mark.postgresql,
            pytest.mark.skipif(
                not os.environ.get(POSTGRES_URL_ENV), reason=f"{POSTGRES_URL_ENV} is not set"
            ),
        ],
    ),
]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own driftmon settings."""
    for name in ("DRIFTMON_DATABASE_URL", "DRIFTMON_CONFIG", "DRIFTMON_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)


class PostgresServer:
    """Creates and drops throw-away databases on the test server."""

    def __init__(self, url: str):
        self.url = make_url(url).set(drivername="postgresql+psycopg")
        self._admin = create_engine(self.url, isolation_level="AUTOCOMMIT")

    def create(self, template: str | None = None) -> str:
        name = f"driftmon_test_{uuid.uuid4().hex[:12]}"
        clause = f' TEMPLATE "{template}"' if template else ""
        with self._admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"{clause}'))
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        with self._admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def dispose(self) -> None:
        self._admin.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_URL_ENV} is not set")
    server = PostgresServer(url)
    yield server
    server.dispose()


def _migrate(url: str) -> None:
    engine = create_db_engine(url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create()
    _migrate(url)
    yield make_url(url).database
    postgres_server.drop(url)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("template") / "results.db"
    _migrate(f"sqlite:///{path}")
    return str(path)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def empty_db_url(backend: str, request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A database with no tables at all."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'results.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    url = server.create()
    yield url
    server.drop(url)


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A results database migrated to head, fresh for this test."""
    if backend == "sqlite":
        path = tmp_path / "results.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    server = request.getfixturevalue("postgres_server")
    url = server.create(template=request.getfixturevalue("postgres_template"))
    yield url
    server.drop(url)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


# --- report: how many tests ran on each backend --------------------------------

_outcomes: Counter = Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        for name in ("sqlite", "postgresql"):
            if f"[{name}" in report.nodeid or f"-{name}]" in report.nodeid or f"-{name}-" in report.nodeid:
                _outcomes[(name, report.outcome)] += 1


def pytest_terminal_summary(terminalreporter) -> None:
    if not _outcomes:
        return
    terminalreporter.section("tests per results-database backend")
    for name in ("sqlite", "postgresql"):
        counts = ", ".join(
            f"{_outcomes[(name, outcome)]} {outcome}" for outcome in ("passed", "failed", "skipped")
        )
        terminalreporter.line(f"{name}: {counts}")
