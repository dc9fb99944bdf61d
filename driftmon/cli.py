"""The ``driftmon`` command line: parses, calls, maps errors to exit codes.

Exit codes: 0 success (run-once: nothing critical), 1 drift is critical,
2 bad configuration or usage, 3 a run or the database failed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import TYPE_CHECKING

import click

import driftmon
from driftmon.errors import ConfigError, DriftmonError
from driftmon.logs import configure_logging

if TYPE_CHECKING:
    from driftmon.config import Config

# Imports stay inside the commands that need them: the config models (pydantic)
# cost 0.16 s, SQLAlchemy and Alembic 0.3 s and torch 2 s, and `driftmon --help`
# or `--version` need none of them. For the same reason these two are spelled
# here rather than imported from driftmon.config (tests/test_cli.py checks that
# they agree).
CONFIG_PATH_ENV = "DRIFTMON_CONFIG"
DEFAULT_CONFIG_PATH = "config.yaml"

EXIT_OK, EXIT_CRITICAL, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's code for Ctrl-C
EXIT_CODES_HELP = (
    "Exit codes: 0 nothing critical, 1 at least one column critical, "
    "2 bad configuration or usage, 3 a monitor run failed."
)

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


class Timestamp(click.ParamType):
    """An ISO 8601 time; naive values are UTC."""

    name = "timestamp"

    def convert(self, value, param, ctx) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 time such as 2024-03-01T12:00:00Z", param, ctx)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


monitor_option = click.option(
    "--monitor", "monitor_names", multiple=True, metavar="NAME",
    help="Only this monitor (repeatable); default: every monitor.",
)


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
    from importlib.metadata import PackageNotFoundError, version

    try:  # the installed distribution's version: the same string as torch.__version__, without
        torch_version = version("torch")  # the 2 s that importing torch takes
    except PackageNotFoundError:
        torch_version = "not installed"
    click.echo(f"driftmon {driftmon.__version__} (torch {torch_version})")
    ctx.exit()


def load_config(path: str | None) -> Config:
    """driftmon.config.load_config, imported when a command first needs the config."""
    from driftmon.config import load_config as load

    return load(path)


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
@click.option("--connect", is_flag=True, help="Also open every source and check its table, columns and types.")
@handle_errors
def check_config(config_path: str | None, connect: bool) -> None:
    """Validate the configuration file; exit 0 if valid, 2 naming each problem.

    Runs every check that needs no database (the file, the compute device, URLs,
    slice grids); --connect also opens each source and checks its table, columns
    and their types.
    """
    from driftmon.checks import connect_checks, offline_checks

    config = load_config(config_path)
    report = offline_checks(config)
    problems = report.problems + (connect_checks(config) if connect and not report.problems else [])
    if problems:
        raise ConfigError(problems)
    click.echo(_describe_config(config))
    click.echo("  slices:")
    for note in report.notes:
        click.echo(f"    {note}")
    if connect:
        click.echo(f"  sources: {len(config.monitors)} opened; tables, columns and types as configured")


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


@main.group("db")
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


@main.command("run-once", epilog=EXIT_CODES_HELP)
@config_option
@monitor_option
@click.option("--at", "at", type=Timestamp(), default=None,
              help="Run as if it were this time (ISO 8601, UTC if naive) [default: now].")
@click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@handle_errors
def run_once(config_path: str | None, monitor_names: tuple[str, ...], at: datetime | None,
             output: str) -> None:
    """Run every (or each named) monitor once for its latest complete window."""
    from driftmon import app as application
    from driftmon import outputs

    config = load_config(config_path)
    monitors = application.select_monitors(config, monitor_names)
    app = application.open_app(config)
    try:
        outcomes = application.run_latest(app, monitors, at or datetime.now(UTC))
    finally:
        app.close()
    click.echo(outputs.as_json(outcomes) if output == "json" else outputs.as_table(outcomes))
    sys.exit(_exit_code(outcomes))


def _exit_code(outcomes) -> int:
    if any(o.status != "ok" for o in outcomes):
        return EXIT_FAILED
    return EXIT_CRITICAL if any(o.critical for o in outcomes) else EXIT_OK


@main.command("backfill", epilog=EXIT_CODES_HELP + " 130: interrupted (Ctrl-C).")
@config_option
@monitor_option
@click.option("--start", type=Timestamp(), required=True, help="Earliest window start (ISO 8601).")
@click.option("--end", type=Timestamp(), required=True, help="Latest window end (ISO 8601).")
@click.option("--recount", is_flag=True,
              help="Recount the windows' source rows, sealed slices included, and recompute windows "
                   "already stored: for rows that arrived later than `lateness`.")
@handle_errors
def backfill(config_path: str | None, monitor_names: tuple[str, ...], start: datetime,
             end: datetime, recount: bool) -> None:
    """Compute every historical window in [START, END] that has no results yet.

    Windows already stored are skipped, so an interrupted backfill resumes
    where it stopped and a repeated one adds nothing. Ctrl-C stops it after
    the window in flight (a second Ctrl-C abandons that window) and exits 130.
    """
    from driftmon import app as application

    if start >= end:
        raise ConfigError("--start must be before --end")
    config = load_config(config_path)
    monitors = application.select_monitors(config, monitor_names)
    app = application.open_app(config)
    try:
        done = application.backfill_with_progress(app, monitors, start, end, recount=recount)
    except KeyboardInterrupt:  # the second Ctrl-C: the run in flight rolled its transaction back
        click.echo("\nbackfill interrupted: the window in flight was abandoned, nothing of it stored",
                   err=True)
        click.echo(_resume_hint(recount, None), err=True)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        app.close()
    failed = sum(o.status != "ok" for o in done.outcomes)
    critical = sum(o.critical for o in done.outcomes)
    click.echo(f"backfilled {len(done.outcomes)} window(s): {failed} failed, {critical} with critical drift")
    if done.interrupted:
        click.echo(f"backfill interrupted: {len(done.left)} window(s) not computed", err=True)
        click.echo(_resume_hint(recount, min(window.start for _, window in done.left)), err=True)
        sys.exit(done.signal_exit_code)
    sys.exit(EXIT_FAILED if failed else (EXIT_CRITICAL if critical else EXIT_OK))


def _resume_hint(recount: bool, next_start: datetime | None) -> str:
    if not recount:
        return "to resume, run the same command again: windows already stored are skipped"
    if next_start is None:
        return "to resume, run the same command again (with --start at the window where it stopped)"
    return f"to resume, run the same command again with --start {next_start.isoformat()}"


@main.command("serve")
@config_option
@handle_errors
def serve(config_path: str | None) -> None:
    """Run the daemon: monitors on their schedules, /metrics, /healthz and /readyz.

    SIGTERM or SIGINT stops it: no new runs, runs in flight get
    server.shutdown_grace to finish (else they are abandoned, writing nothing),
    then it exits 0. A second Ctrl-C stops at once.
    """
    import logging
    import os

    from prometheus_client import CollectorRegistry

    from driftmon.daemon import Daemon

    daemon = Daemon(load_config(config_path), CollectorRegistry())
    code = daemon.serve()
    if daemon.stuck:
        # A run is blocked in a driver call; its transaction is uncommitted, so
        # ending the process loses nothing, while waiting would hang `docker stop`.
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


@main.command("demo")
@click.option("--dir", "directory", default="demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the demo's databases and config file: a new or empty one, or one "
                   "an earlier demo made (its files are replaced).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve metrics on.")
@click.option("--port", default=9847, show_default=True, type=click.IntRange(1, 65535))
@click.option("--no-serve", is_flag=True, help="Exit after the summary instead of serving.")
@click.option("--seed", default=42, show_default=True, help="Random seed of the synthetic traffic.")
@handle_errors
def demo(directory: str, host: str, port: int, no_serve: bool, seed: int) -> None:
    """Seed a synthetic inference log with a known drift, backfill it, then serve.

    Needs no set-up: everything lives in --dir, including the config file the
    demo ran with, ready to copy. Ctrl-C stops serving.
    """
    from pathlib import Path

    import numpy as np
    from prometheus_client import CollectorRegistry

    from driftmon import app as application
    from driftmon import demo as demo_data
    from driftmon.daemon import Daemon

    rng = np.random.default_rng(seed)
    timeline = demo_data.Timeline.around(datetime.now(UTC))
    click.echo(f"Seeding a week of synthetic inference traffic in {directory}/ ...", err=True)
    config_path = demo_data.seed(Path(directory), timeline, host, port, rng)
    config = load_config(config_path)
    app = application.open_app(config)
    try:
        done = application.backfill_with_progress(
            app, config.resolved_monitors(), timeline.now - demo_data.BACKFILL, timeline.now)
    except KeyboardInterrupt:  # a second Ctrl-C
        done = application.Backfill(signal_exit_code=EXIT_INTERRUPTED)
    finally:
        app.close()
    if done.interrupted:
        click.echo(f"demo interrupted; `driftmon demo --dir {directory}` starts it afresh", err=True)
        sys.exit(done.signal_exit_code)
    click.echo(demo_data.summary(done.outcomes, timeline.drift_at))
    if no_serve:
        return
    click.echo(f"\nServing http://{host}:{port}/metrics (config: {config_path}); Ctrl-C stops.")
    feed = demo_data.TrafficFeed(Path(directory), timeline.drift_at, timeline.now, rng)
    feed.start()
    try:
        sys.exit(Daemon(config, CollectorRegistry()).serve())
    finally:
        feed.stop()


@main.command("healthcheck")
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


from driftmon.inspect_commands import explain, report  # noqa: E402 (they use the helpers above)

main.add_command(explain)
main.add_command(report)
