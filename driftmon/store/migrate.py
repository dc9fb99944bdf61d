"""Run Alembic migrations from inside driftmon (`driftmon db upgrade`)."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from driftmon.errors import ConfigError, StoreError
from driftmon.store.database import results_backend_problem, safe_url

_MIGRATION_LOCK_KEY = 0x647269667401  # "drift" + 1: any constant unique to driftmon


def alembic_config(engine: Engine) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(files("driftmon.migrations")))
    config.attributes["driftmon"] = True
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the results database to ``revision``; a no-op when already there."""
    problem = results_backend_problem(engine.url)
    if problem:
        raise ConfigError(f"database.url: {problem}")
    require_sqlite_folder(engine)
    config = alembic_config(engine)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Replicas starting together: one migrates, the others wait, then
                # find nothing to do. Transaction-scoped, so pooling cannot leak it.
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except SQLAlchemyError as exc:
        raise StoreError(f"migrating {safe_url(engine.url)} failed: {exc.orig or exc}") from exc


def require_sqlite_folder(engine: Engine) -> None:
    """A SQLite results file needs a folder that exists and takes new files (WAL, its lock)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:") or database.startswith("file:"):
        return
    folder = Path(database).resolve().parent
    if not folder.is_dir():
        raise ConfigError(f"database.url: folder {folder} does not exist (for {database})")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"database.url: folder {folder} is not writable (SQLite writes {database}, "
                          f"its -wal and -shm files there)")


def downgrade(engine: Engine, revision: str) -> None:
    config = alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_at_head(engine: Engine) -> bool:
    return current_revision(engine) == head_revision(engine)
