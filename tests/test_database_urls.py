"""URLs as driftmon shows them: no secret in any form, and clear errors for bad ones."""

from __future__ import annotations

import os

import pytest

from driftmon.errors import ConfigError
from driftmon.store.database import check_url, create_db_engine, parse_url, safe_url, sqlite_daemon_lock

SECRET = "s3cr3t-value"


@pytest.mark.parametrize("url", [
    f"postgresql://user:{SECRET}@db:5432/x",
    f"postgresql://user@db/x?password={SECRET}",
    f"postgresql+psycopg://user@db/x?sslpassword={SECRET}&sslmode=require",
    f"snowflake://user@account/db?private_key_passphrase={SECRET}",
    f"trino://user@host:8080/hive?access_token={SECRET}",
    f"bigquery://project?credentials_base64={SECRET}",
    f"postgresql://user:{SECRET}@db:abc/x",  # unparseable: a bad port
    f"postgresql://user:{SECRET}@db:abc/x?api_key={SECRET}",
])
def test_safe_url_hides_every_form_of_secret(url):
    shown = safe_url(url)
    assert SECRET not in shown and "***" in shown


def test_safe_url_keeps_what_is_not_secret():
    assert safe_url("postgresql://u@db/x?application_name=driftmon&sslmode=require") == \
        "postgresql://u@db/x?application_name=driftmon&sslmode=require"


def test_a_bad_port_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"^database.url: not a valid database URL \(bad port\)") as info:
        parse_url(f"postgresql://u:{SECRET}@db:abc/x", "database.url")
    assert SECRET not in str(info.value)


def test_an_unknown_driver_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="monitors\\[0\\].source.url: no SQLAlchemy dialect or driver "
                                          "'postgresql\\+nodriver' is installed"):
        check_url("postgresql+nodriver://u@db/x", "monitors[0].source.url")
    with pytest.raises(ConfigError, match="no SQLAlchemy dialect or driver"):
        create_db_engine("postgresql+nodriver://u@db/x")


@pytest.mark.skipif(os.geteuid() == 0 and not os.environ.get("DRIFTMON_TEST_AS_ROOT_UNWRITABLE"),
                    reason="root writes anywhere: see test_unwritable_sqlite_folder_via_a_file")
def test_unwritable_sqlite_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    with pytest.raises(ConfigError, match="database.url: cannot create"), sqlite_daemon_lock(f"sqlite:///{folder}/r.db"):
        pass


def test_unwritable_sqlite_folder_via_a_file(tmp_path):
    # Root ignores permission bits; a path under a regular file fails for everyone.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="database.url: cannot create .*not-a-folder/r.db.lock: Not a directory"):
        with sqlite_daemon_lock(f"sqlite:///{blocker}/r.db"):
            pass


def test_a_missing_sqlite_folder_is_a_config_error_naming_it(tmp_path):
    from driftmon.store import migrate

    engine = create_db_engine(f"sqlite:///{tmp_path}/absent/results.db")
    try:
        with pytest.raises(ConfigError, match=f"database.url: folder {tmp_path}/absent does not exist"):
            migrate.upgrade(engine)
    finally:
        engine.dispose()


def test_a_mariadb_results_database_is_refused_naming_why_and_what_works():
    """MariaDB/MySQL is a source engine, not a results store (README, "Source engines")."""
    from driftmon.checks import offline_checks
    from driftmon.config import parse_config
    from driftmon.store import migrate

    url = "mysql+pymysql://root@127.0.0.1:3306/test"
    engine = create_db_engine(url)
    try:
        with pytest.raises(ConfigError, match=r"database.url: driftmon keeps its results in SQLite or PostgreSQL "
                                              r"\(MariaDB/MySQL upsert with ON DUPLICATE KEY UPDATE.*mysql works "
                                              r"as a source: monitors\[\].source.url"):
            migrate.upgrade(engine)  # before any connection: nothing is created there
    finally:
        engine.dispose()
    config = parse_config({"database": {"url": url}, "monitors": [{
        "name": "m", "features": [{"column": "x"}],
        "source": {"kind": "events", "table": "t", "timestamp_column": "ts", "url": url}}]}, {})
    problems = offline_checks(config).problems
    assert [p for p in problems if p.startswith("database.url: driftmon keeps its results")], problems
    assert not [p for p in problems if p.startswith("monitors[0].source.url")], problems  # a fine source


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent is missing
        return False


@pytest.mark.parametrize("url, module, install", [
    (f"mssql+pyodbc://u:{SECRET}@db/x", "pyodbc", "pip install pyodbc"),
    (f"postgresql+psycopg2://u:{SECRET}@db/x", "psycopg2", "pip install psycopg2-binary"),
])
def test_a_driver_that_is_not_installed_names_the_package_to_install(url, module, install):
    """SQLAlchemy imports a driver only at the first connection: the run failed, not check-config."""
    if _installed(module):
        pytest.skip(f"{module} is installed here")
    with pytest.raises(ConfigError) as info:
        check_url(url, "monitors[0].source.url")
    message = str(info.value)
    assert message.startswith(f"monitors[0].source.url: the driver of '{url.split(':')[0]}' is not installed "
                              f"(no module '{module}'): {install}"), message
    assert SECRET not in message


def test_postgres_scheme_suggests_postgresql():
    with pytest.raises(ConfigError, match=r"^database.url: SQLAlchemy has no postgres:// scheme; "
                                          r"did you mean postgresql://\?$") as info:
        check_url(f"postgres://u:{SECRET}@db/x", "database.url")
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigError, match=r"did you mean postgresql\+psycopg://\?"):
        check_url("postgres+psycopg://u@db/x", "database.url")


def test_a_dialect_driftmon_knows_of_names_its_package():
    if _installed("snowflake.sqlalchemy"):
        pytest.skip("snowflake-sqlalchemy is installed here")
    with pytest.raises(ConfigError, match=r"no SQLAlchemy dialect or driver 'snowflake' is installed "
                                          r"\(NoSuchModuleError\): pip install snowflake-sqlalchemy"):
        check_url("snowflake://u@account/db", "monitors[0].source.url")
