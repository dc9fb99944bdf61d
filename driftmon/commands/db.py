"""`driftmon db …`: the results database."""

from __future__ import annotations

import click

from driftmon.commands.options import config_option, handle_errors, load_config


@click.group("db")
def db() -> None:
    """Manage the results database."""


@db.command("upgrade")
@config_option
@handle_errors
def db_upgrade(config_path: str | None) -> None:
    """Create or migrate the results database schema to the latest revision."""
    from driftmon.store import migrate
    from driftmon.store.database import create_db_engine, safe_url

    config = load_config(config_path)
    engine = create_db_engine(config.database.url)
    try:
        migrate.upgrade(engine)
        click.echo(
            f"results database {safe_url(engine.url)} is at revision "
            f"{migrate.current_revision(engine)} (head)"
        )
    finally:
        engine.dispose()

