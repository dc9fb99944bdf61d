"""`driftmon run-once`, `backfill`, `serve` and `demo`: the commands that run monitors."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click

from driftmon.commands.options import (
    EXIT_CODES_HELP,
    EXIT_CRITICAL,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Timestamp,
    config_option,
    handle_errors,
    load_config,
    monitor_option,
)
from driftmon.errors import ConfigError


@click.command("run-once", epilog=EXIT_CODES_HELP)
@config_option
@monitor_option
@click.option("--at", "at", type=Timestamp(past=True), default=None,
              help="Run as if it were this time, not after now (ISO 8601, UTC if naive) [default: now].")
@click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@handle_errors
def run_once(config_path: str | None, monitor_names: tuple[str, ...], at: datetime | None,
             output: str) -> None:
    """Run every (or each named) monitor once for its latest complete window."""
    from driftmon import app as application
    from driftmon.commands import outputs

    config = load_config(config_path)
    monitors = application.select_monitors(config, monitor_names)
    app = application.open_app(config)
    try:
        outcomes = application.run_latest(app, monitors, at or datetime.now(UTC))
    finally:
        app.close()
    click.echo(outputs.as_json(outcomes, monitors) if output == "json" else outputs.as_table(outcomes))
    sys.exit(_exit_code(outcomes))


def _exit_code(outcomes) -> int:
    if any(o.status != "ok" for o in outcomes):
        return EXIT_FAILED
    return EXIT_CRITICAL if any(o.critical or _volume_critical(o) for o in outcomes) else EXIT_OK


def _volume_critical(outcome) -> bool:
    """A critical volume (``__volume__`` in the JSON) exits 1 as a critical column does: a feed
    that lost 40 % of its rows is what a CI gate or cron job is there to catch."""
    return outcome.volume is not None and outcome.volume.status == "critical"


@click.command("backfill", epilog=EXIT_CODES_HELP + " 130: interrupted (Ctrl-C).")
@config_option
@monitor_option
@click.option("--start", type=Timestamp(), required=True, help="Earliest window start (ISO 8601).")
@click.option("--end", type=Timestamp(past=True), required=True,
              help="Latest window end (ISO 8601), not after now.")
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

    It ends with each monitor's summary: every column's status in the latest
    window and its first alarm. A line per window is logged at DEBUG
    (DRIFTMON_LOG_LEVEL=debug shows them); a failed window always at ERROR.
    """
    from driftmon import app as application
    from driftmon.commands.demo_summary import backfill_summary

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
    volume = sum(_volume_critical(o) for o in done.outcomes)
    if done.outcomes:
        click.echo(backfill_summary(done.outcomes) + "\n")
    click.echo(f"backfilled {len(done.outcomes)} window(s): {failed} failed, {critical} with critical drift"
               + (f", {volume} with critical volume" if volume else ""))
    if done.interrupted:
        click.echo(f"backfill interrupted: {len(done.left)} window(s) not computed", err=True)
        click.echo(_resume_hint(recount, min(window.start for _, window in done.left)), err=True)
        sys.exit(done.signal_exit_code)
    sys.exit(EXIT_FAILED if failed else (EXIT_CRITICAL if critical or volume else EXIT_OK))


def _resume_hint(recount: bool, next_start: datetime | None) -> str:
    if not recount:
        return "to resume, run the same command again: windows already stored are skipped"
    if next_start is None:
        return "to resume, run the same command again (with --start at the window where it stopped)"
    return f"to resume, run the same command again with --start {next_start.isoformat()}"


@click.command("serve")
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

    from driftmon.serving.daemon import Daemon

    daemon = Daemon(load_config(config_path), CollectorRegistry())
    code = daemon.serve()
    if daemon.stuck:
        # A run is blocked in a driver call; its transaction is uncommitted, so
        # ending the process loses nothing, while waiting would hang `docker stop`.
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


@click.command("demo")
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
    from driftmon.commands import demo as demo_data
    from driftmon.commands.demo_summary import summary
    from driftmon.serving.daemon import Daemon

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
    click.echo(summary(done.outcomes, timeline.drift_at))
    if no_serve:
        return
    click.echo(serving_banner(host, port, config_path))
    feed = demo_data.TrafficFeed(Path(directory), timeline.drift_at, timeline.now, rng)
    feed.start()
    try:
        sys.exit(Daemon(config, CollectorRegistry()).serve())
    finally:
        feed.stop()


def serving_banner(host: str, port: int, config_path) -> str:
    """What the demo prints once it serves: where to look, its monitor's report first."""
    from driftmon.commands.demo import MONITOR

    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"  # an IPv6 address
    pages = [(f"/report/{MONITOR}", "the drift report: each column over time, the bins that moved"),
             ("/report", "every monitor's status, each linking its report"),
             ("/metrics", "Prometheus metrics (/healthz and /readyz: the health checks)"),
             ("/", "an index of these pages")]
    width = max(len(base + path) for path, _ in pages)
    return "\n".join([f"\nServing {base}/ (config: {config_path}); Ctrl-C stops.",
                      *(f"  {base + path:<{width}}  {what}" for path, what in pages)])
