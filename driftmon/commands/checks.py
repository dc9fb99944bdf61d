"""`driftmon check-config` and `driftmon healthcheck`: is the setup right, is the daemon up."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from driftmon.commands.options import config_option, handle_errors, load_config
from driftmon.errors import ConfigError

if TYPE_CHECKING:
    from driftmon.config import Config


@click.command("check-config")
@config_option
@click.option("--connect", is_flag=True,
              help="Also open the results database and every source, read-only, and check their tables, "
                   "columns, types and rows.")
@handle_errors
def check_config(config_path: str | None, connect: bool) -> None:
    """Validate the configuration file; exit 0 if valid, 2 naming each problem.

    Runs every check that needs no database (the file, the compute device, URLs
    and drivers, slice grids, fixed references); --connect also opens the results
    database and each source, read-only, and checks their tables, columns, types,
    and the rows of each reference range and latest window. Warnings (on stderr)
    name setups that run but likely not as meant. Nothing is created or written.
    """
    from driftmon.commands.setup_checks import connect_checks, offline_checks

    config = load_config(config_path)
    report = offline_checks(config)
    connected = connect_checks(config) if connect and not report.problems else None
    if connected is not None:
        report.problems += connected.problems
        report.warnings += connected.warnings
    for warning in report.warnings:
        click.echo(f"driftmon: warning: {warning}", err=True)
    if report.problems:
        raise ConfigError(report.problems)
    click.echo(_describe_config(config))
    click.echo("  monitors, one by one:")
    for note in report.notes:
        click.echo(f"    {note}")
    if connected is not None:
        click.echo(f"  connected: {len(config.monitors)} source(s) opened; tables, columns and types as configured")
        for note in connected.notes:
            click.echo(f"    {note}")


def _describe_config(config: Config) -> str:
    from driftmon.store.database import safe_url

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


@click.command("healthcheck")
@click.option("--url", default=None, help="Health endpoint [default: http://127.0.0.1:<server.port>/healthz].")
@config_option
@click.option("--timeout", default=3.0, show_default=True, help="Seconds to wait for an answer.")
def healthcheck(url: str | None, config_path: str | None, timeout: float) -> None:
    """Exit 0 if the daemon answers healthy, else 1 (for Docker's HEALTHCHECK)."""
    import urllib.error
    import urllib.request

    if url is None:
        try:
            port = load_config(config_path).server.port
        except ConfigError:
            port = 9847
        url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            click.echo(f"{url}: {response.status} {response.read().decode().strip()}")
            sys.exit(0 if response.status == 200 else 1)
    except urllib.error.HTTPError as exc:
        click.echo(f"{url}: {exc.code} {exc.read().decode().strip()}", err=True)
    except (urllib.error.URLError, OSError) as exc:
        click.echo(f"{url}: {getattr(exc, 'reason', exc)}", err=True)
    sys.exit(1)

