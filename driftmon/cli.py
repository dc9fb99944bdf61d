"""The ``driftmon`` command line: parses, calls, maps errors to exit codes.

Exit codes: 0 success (run-once: nothing critical), 1 drift is critical,
2 bad configuration or usage, 3 a run or the database failed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps

import click

import driftmon
from driftmon.config import CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH, Config, load_config
from driftmon.errors import ConfigError, DriftmonError
from driftmon.logs import configure_logging
from driftmon.store import migrate
from driftmon.store.database import create_db_engine, safe_url

EXIT_OK, EXIT_CRITICAL, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    envvar=CONFIG_PATH_ENV,
    show_envvar=True,
    help=f"Configuration file [default: {DEFAULT_CONFIG_PATH}].",
)


def handle_errors(command: Callable) -> Callable:
    """Turn driftmon's errors into a message and an exit code, without a traceback."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ConfigError as exc:
            click.echo("driftmon: configuration error:", err=True)
            for problem in exc.problems:
                click.echo(f"  {problem}", err=True)
            sys.exit(EXIT_USAGE)
        except DriftmonError as exc:
            click.echo(f"driftmon: {_cause_chain(exc)}", err=True)
            sys.exit(EXIT_FAILED)

    return wrapper


def _cause_chain(exc: BaseException) -> str:
    parts = [str(exc)]
    cause = exc.__cause__
    while cause is not None and str(cause) not in parts[-1]:
        parts.append(str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__)
        cause = cause.__cause__
    return ": ".join(parts)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    import torch  # only here: importing torch costs a second on every other command

    click.echo(f"driftmon {driftmon.__version__} (torch {torch.__version__})")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show driftmon's and torch's versions and exit.",
)
def main() -> None:
    """driftmon: data-drift monitoring daemon (KL, PSI and Jensen-Shannon on SQL data)."""
    configure_logging()


@main.command("check-config")
@config_option
@handle_errors
def check_config(config_path: str | None) -> None:
    """Validate the configuration file; exit 0 if valid, 2 naming each problem."""
    config = load_config(config_path)
    click.echo(_describe_config(config))


def _describe_config(config: Config) -> str:
    lines = [
        "configuration is valid",
        f"  results database: {safe_url(config.database.url)}",
        f"  compute: device={config.compute.device} dtype={config.compute.dtype} "
        f"threads={config.compute.threads}",
        f"  server: {config.server.host}:{config.server.port}",
        f"  monitors: {len(config.monitors)}",
    ]
    for monitor in config.resolved_monitors():
        lines.append(
            f"    {monitor.name}: {monitor.source.kind} source {monitor.source.table!r} "
            f"({safe_url(config.source_url(monitor.source))}), "
            f"{len(monitor.features) or 'all'} column(s)"
        )
    return "\n".join(lines)


@main.group("db")
def db() -> None:
    """Manage the results database."""


@db.command("upgrade")
@config_option
@handle_errors
def db_upgrade(config_path: str | None) -> None:
    """Create or migrate the results database schema to the latest revision."""
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
