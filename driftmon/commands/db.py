"""`driftmon db …`: the results database."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from driftmon.commands.options import EXIT_USAGE, Timestamp, config_option, handle_errors, load_config
from driftmon.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from driftmon.config import Config


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
    engine = create_db_engine(config.database.url, "database.url")
    try:
        migrate.upgrade(engine)
        click.echo(
            f"results database {safe_url(engine.url)} is at revision "
            f"{migrate.current_revision(engine)} (head)"
        )
    finally:
        engine.dispose()



@contextmanager
def _results_database(config_path: str | None) -> Iterator[tuple[Config, Engine]]:
    """The config and its results database, which must exist and be at the latest revision.

    Nothing is created or migrated here: these commands look at, or repair, what exists.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from driftmon.store import migrate
    from driftmon.store.database import create_db_engine, safe_url

    config = load_config(config_path)
    url = make_url(config.database.url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        raise ConfigError(f"database.url: {safe_url(url)} does not exist yet: nothing is stored")
    engine = create_db_engine(url, "database.url")
    try:
        if not migrate.is_at_head(engine):
            raise ConfigError(f"database.url: the results database {safe_url(url)} is at revision "
                              f"{migrate.current_revision(engine)}, not {migrate.head_revision(engine)}: "
                              f"run `driftmon db upgrade` first")
        yield config, engine
    except SQLAlchemyError as exc:
        raise StoreError(f"the results database {safe_url(url)} failed") from exc
    finally:
        engine.dispose()


def _confirm(plan: list[str], yes: bool) -> None:
    """Print what a repair deletes; without --yes, stop there (exit 2)."""
    for line in plan:
        click.echo(line)
    if not yes:
        click.echo("nothing deleted: run the same command with --yes to delete it", err=True)
        sys.exit(EXIT_USAGE)


@db.command("status")
@config_option
@click.option("--monitor", "monitor_name", default=None, metavar="NAME", help="Only this monitor.")
@handle_errors
def db_status(config_path: str | None, monitor_name: str | None) -> None:
    """What is stored per monitor, and whether the current config still matches it.

    Lists the reference profiles and slice ranges with their fingerprints, and the
    stored windows by the fingerprint of the settings that made them. A stale
    profile or slice is never used (the next run counts afresh); stale windows are
    recomputed by `driftmon backfill`.
    """
    from driftmon.counting.stored_state import stored_state

    with _results_database(config_path) as (config, engine), engine.connect() as connection:
        states = stored_state(config, connection, datetime.now(UTC), monitor_name)
    click.echo("\n".join(line for state in states for line in _describe_state(state)))


def _describe_state(state) -> list[str]:
    lines = [f"monitor {state.monitor}" + ("" if state.configured else " (not in the config)")]
    lines.append("  reference profiles:" if state.profiles else "  reference profiles: none")
    for group in state.profiles:
        lines.append(f"    {_span(group.reference)}  {len(group.columns)} column(s)  {group.rows:,.0f} rows  "
                     f"{'complete' if group.complete else 'INCOMPLETE (recounted)'}  {group.fingerprint[:12]}  "
                     f"{_verdict(group.matches)}")
    lines.append("  slices:" if state.slices else "  slices: none")
    for group in state.slices:
        lines.append(f"    {_span(group.span)}  {group.slices} slice(s), {group.sealed} sealed  "
                     f"{group.profile_key[:12]}  {_verdict(group.matches)}")
    lines.append("  windows:" if state.results else "  windows: none")
    for group in state.results:
        lines.append(f"    ends {group.first_end.isoformat()} .. {group.last_end.isoformat()}  "
                     f"{group.windows} window(s), {group.rows} row(s)  {(group.fingerprint or '-')[:12]}  "
                     f"{_verdict(group.matches, unknown='stored before fingerprints')}")
    if state.future_windows:
        lines.append(f"  {state.future_windows} window(s) end in the future: `driftmon db delete-windows "
                     f"--monitor {state.monitor} --after <now>` removes them")
    return lines


def _verdict(matches: bool | None, unknown: str = "monitor not configured") -> str:
    if matches is None:
        return unknown
    return "matches the config" if matches else "STALE: other settings"


def _span(span) -> str:
    return f"[{span.start.isoformat()}, {span.end.isoformat()})"


@db.command("delete-windows")
@config_option
@click.option("--monitor", "monitor_name", required=True, metavar="NAME", help="The monitor.")
@click.option("--after", type=Timestamp(), required=True,
              help="Delete the windows ending after this time (ISO 8601, UTC if naive).")
@click.option("--yes", is_flag=True, help="Delete; without it, only print what would be deleted.")
@handle_errors
def db_delete_windows(config_path: str | None, monitor_name: str, after: datetime, yes: bool) -> None:
    """Delete a monitor's stored windows (results, runs, leases) that end after --after.

    E.g. windows of a backfill into the future, or of a wrong setup; `backfill`
    computes them again. Slices and reference profiles are kept.
    """
    from driftmon.store import inventory

    with _results_database(config_path) as (_, engine):
        with engine.connect() as connection:
            found = inventory.windows_after(connection, monitor_name, after)
        if not found["results"] and not found["runs"]:
            click.echo(f"monitor {monitor_name}: no window ends after {after.isoformat()}; nothing to delete")
            return
        span = f" (ending {found['first_end'].isoformat()} .. {found['last_end'].isoformat()})" \
            if found["first_end"] else ""
        _confirm([f"monitor {monitor_name}: {found['windows']} window(s){span}: {found['results']} result row(s) "
                  f"and {found['runs']} run row(s) ending after {after.isoformat()}"], yes)
        with engine.begin() as connection:
            deleted = inventory.delete_windows_after(connection, monitor_name, after)
    click.echo(f"deleted {deleted['results']} result row(s), {deleted['runs']} run row(s), "
               f"{deleted['health']} health row(s), {deleted['multivariate']} multivariate result(s) and "
               f"{deleted['leases']} lease(s) of monitor {monitor_name}")


@db.command("reset-reference")
@config_option
@click.option("--monitor", "monitor_name", required=True, metavar="NAME", help="The monitor.")
@click.option("--yes", is_flag=True, help="Delete; without it, only print what would be deleted.")
@handle_errors
def db_reset_reference(config_path: str | None, monitor_name: str, yes: bool) -> None:
    """Drop a monitor's reference profiles and slices, so that the next run counts them again.

    Stored windows are kept; `backfill --recount` recomputes them from fresh counts.
    """
    from driftmon.store import inventory

    with _results_database(config_path) as (_, engine):
        with engine.connect() as connection:
            profiles = inventory.profile_inventory(connection, monitor_name)
            slices = inventory.slice_inventory(connection, monitor_name)
        if not profiles and not slices:
            click.echo(f"monitor {monitor_name}: no reference profile or slice is stored; nothing to delete")
            return
        ranges = sorted({(p["reference_start"], p["reference_end"]) for p in profiles})
        plan = [f"monitor {monitor_name}: {len(profiles)} column profile(s) of {len(ranges)} reference range(s)"]
        plan += [f"  reference [{start.isoformat()}, {end.isoformat()})" for start, end in ranges]
        plan.append(f"monitor {monitor_name}: {sum(s['slices'] for s in slices)} slice(s) under "
                    f"{len(slices)} profile key(s)")
        _confirm(plan, yes)
        with engine.begin() as connection:
            deleted = inventory.delete_reference_state(connection, monitor_name)
    click.echo(f"deleted {deleted['profiles']} column profile(s) and {deleted['slices']} slice(s) of monitor "
               f"{monitor_name}; the next run counts them again")
