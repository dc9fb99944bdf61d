"""URLs as driftmon shows them: no secret in any form, and clear errors for bad ones."""

from __future__ import annotations

import os
import time

import pytest

from driftmon.errors import ConfigError
from driftmon.store.database import check_url, create_db_engine, parse_url, safe_url, sqlite_daemon_lock
from driftmon.urls import mask_credentials

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
    f"user:{SECRET}@db:5432/x",  # the scheme forgotten
    f"user:{SECRET}@db/x?sslpassword={SECRET}",
    f"postgresql://user:p@{SECRET}@db/x",  # an unencoded @ in the password
    f"postgresql://user@server:{SECRET}@db/x",  # Azure's user@server
])
def test_safe_url_hides_every_form_of_secret(url):
    shown = safe_url(url)
    assert SECRET not in shown and "***" in shown


@pytest.mark.parametrize("text, masked", [
    (f"alice:{SECRET}@host/db", "alice:***@host/db"),
    (f"could not connect to alice:{SECRET}@db.internal:5432: refused",
     "could not connect to alice:***@db.internal:5432: refused"),
    (f"host name '{'alice:' + SECRET}@db' unknown", "host name 'alice:***@db' unknown"),
    (f'{{"url": "alice:{SECRET}@h", "mail": "bob@example.com"}}', '{"url": "alice:***@h", "mail": "bob@example.com"}'),
    (f"x=postgresql+psycopg://alice:{SECRET}@h/db", "x=postgresql+psycopg://alice:***@h/db"),
    (f"postgresql://:{SECRET}@h/db", "postgresql://:***@h/db"),
    (f"(alice:{SECRET}/with/slashes@h)", "(alice:***@h)"),
    (f"postgresql://u@h/x?password={SECRET}&sslmode=require", "postgresql://u@h/x?password=***&sslmode=require"),
])
def test_credentials_are_masked_in_any_text(text, masked):
    assert mask_credentials(text) == masked


@pytest.mark.parametrize("text", [
    "sqlite:////data/a:b@c/results.db",  # a path, not credentials
    "postgresql://u@db:5432/x?application_name=driftmon",
    "window [2024-03-01T12:00:00+00:00, 2024-03-01T13:00:00+00:00): mail bob@example.com",
])
def test_text_without_credentials_is_left_as_it_is(text):
    assert mask_credentials(text) == text


@pytest.mark.parametrize("text", ["/" + "a" * 200_000 + ":x@", "'a:" * 200_000 + "@", "?a" * 200_000,
                                  "?" + "pass" * 100_000])
def test_masking_stays_linear_on_long_text(text):
    """Log lines and driver errors go through it: no backtracking blow-up (these took minutes)."""
    started = time.perf_counter()
    mask_credentials(text)
    assert time.perf_counter() - started < 2


def test_safe_url_keeps_what_is_not_secret():
    assert safe_url("postgresql://u@db/x?application_name=driftmon&sslmode=require") == \
        "postgresql://u@db/x?application_name=driftmon&sslmode=require"


def test_a_bad_port_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"^database.url: not a valid database URL \(bad port\)") as info:
        parse_url(f"postgresql://u:{SECRET}@db:abc/x", "database.url")
    assert SECRET not in str(info.value)


def test_a_url_without_scheme_is_a_config_error_naming_the_key_not_the_url():
    with pytest.raises(ConfigError, match=r"^monitors\[0\].source.url: is not a database URL: it has no "
                                          r"scheme") as info:
        parse_url(f"alice:{SECRET}@db/x", "monitors[0].source.url")
    assert SECRET not in str(info.value) and "alice" not in str(info.value)


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
    from driftmon.commands.setup_checks import offline_checks
    from driftmon.config_file import parse_config
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
    monitors = [{"name": "m", "features": [{"column": "x"}],
                 "source": {"kind": "events", "table": "t", "timestamp_column": "ts", "url": url}}]
    # Refused where the config is loaded, so that explain, report and db status refuse it too.
    with pytest.raises(ConfigError) as info:
        parse_config({"database": {"url": url}, "monitors": monitors}, {})
    assert [p for p in info.value.problems if p.startswith("database.url: driftmon keeps its results")]
    config = parse_config({"monitors": monitors}, {})
    assert not offline_checks(config).problems  # a fine source


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
