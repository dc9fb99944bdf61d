"""`driftmon explain` and `driftmon report`: look at stored windows, never at the source.

Both read the results database only; they neither migrate it nor write to it.
Their heavy imports (torch, matplotlib) happen inside the commands, so that
`driftmon --help` stays fast. ``driftmon.cli`` registers them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from driftmon.commands.options import Timestamp, config_option, handle_errors
from driftmon.errors import ConfigError, StoreError
from driftmon.textsafe import visible

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from driftmon.config import Config, MonitorSettings

monitor_argument = click.option("--monitor", "monitor_name", required=True, metavar="NAME",
                                help="The monitor to look at.")


@click.command("explain")
@config_option
@monitor_argument
@click.option("--column", "columns", multiple=True, metavar="NAME",
              help="Only this column (repeatable); default: every column of the window.")
@click.option("--at", "at", type=Timestamp(), default=None,
              help="Explain the window ending at or before this time (ISO 8601, UTC if naive) "
                   "[default: the newest stored].")
@click.option("--top", default=5, show_default=True, type=click.IntRange(min=1),
              help="Bins shown per column, the ones that moved most (largest PSI term) first.")
@click.option("--statistic", type=click.Choice(["kl", "psi", "js"]), default=None,
              help="Show this statistic's signed per-bin terms beside the ranking [default: the one "
                   "each column's status is judged on]. It does not change the ranking, which is "
                   "always by PSI term.")
@click.option("--segment", default=None, metavar="COLUMN=VALUE[,...]",
              help="Explain this segment of a segmented monitor (e.g. country=DE; country=DE,app=web when "
                   "it segments by both) instead of the whole population.")
@click.option("--top-segments", default=10, show_default=True, type=click.IntRange(min=1),
              help="Segmented monitors: segments shown per column, those that moved most first.")
@click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@handle_errors
def explain(config_path: str | None, monitor_name: str, columns: tuple[str, ...], at: datetime | None,
            top: int, statistic: str | None, segment: str | None, top_segments: int, output: str) -> None:
    """Which bins drove a stored window's statistics, read from the results database.

    For each column: its status, statistic, p- and q-value, then the bins that
    moved most, in either direction: ranked by their PSI term (q - p) ln(q/p),
    never negative, with its share of the column's PSI (these sum to 100 %).
    Beside it, the bin's signed term of the column's statistic (or of
    --statistic); those terms sum to the statistic but a KL term can be negative.
    Each bin shows its label and reference and current count and smoothed share.

    A segmented monitor's columns each list the segments that moved most (by the
    column's statistic) with their share of the traffic; --segment explains one
    segment's columns the same way as the whole population's.

    A monitor with multivariate drift adds, below the columns, the window's
    reconstruction error (sampling error, band), Gaussian KL (threshold) and
    status, with the columns whose residuals moved most and those contributing
    most to the KL (JSON: the "multivariate" key).
    """
    from driftmon.config_file import load_config
    from driftmon.inspect import explain as explaining
    from driftmon.inspect import multivariate_explain

    config = load_config(config_path)
    monitor = _monitor(config, monitor_name)
    if monitor.segments is None and segment is None:
        with _results(config) as connection:
            explanation = explaining.require_explanation(connection, monitor, at, statistic,
                                                         dtype=config.compute.dtype)
            multivariate = multivariate_explain.load_section(connection, monitor, explanation.window)
        explanation = explaining.only_columns(explanation, columns)
        if output == "json":
            click.echo(multivariate_explain.as_json(explaining.as_dict(explanation, top), multivariate))
        else:
            click.echo(multivariate_explain.as_table(explaining.as_table(explanation, top), multivariate))
        return
    _explain_segmented(config, monitor, columns, at, top, statistic, segment, top_segments, output)


def _explain_segmented(config: Config, monitor: MonitorSettings, columns: tuple[str, ...], at: datetime | None,
                       top: int, statistic: str | None, segment: str | None, top_segments: int,
                       output: str) -> None:
    """``explain`` of a segmented monitor: one segment's window, or the whole population's with,
    per column, the segments that drove it."""
    from driftmon.inspect import explain as explaining
    from driftmon.inspect import multivariate_explain, segment_explain

    if segment is not None:
        segment_explain.segment_of(monitor, segment)  # a usage error before any database is read
    dtype = config.compute.dtype
    multivariate = None  # drift between columns is the whole population's: not shown for one segment
    with _results(config) as connection:
        if segment is not None:
            explanation, segments = segment_explain.require_segment(connection, monitor, segment, at, statistic,
                                                                    dtype), None
        else:
            explanation = explaining.require_explanation(connection, monitor, at, statistic, dtype=dtype)
            segments = segment_explain.window_segments(connection, monitor, explanation)
            multivariate = multivariate_explain.load_section(connection, monitor, explanation.window)
    explanation = explaining.only_columns(explanation, columns)
    if output == "json":
        document = segment_explain.as_dict(explanation, segments, top, top_segments)
        click.echo(multivariate_explain.as_json(document, multivariate))
    else:
        click.echo(multivariate_explain.as_table(segment_explain.as_table(explanation, segments, top, top_segments),
                                                 multivariate))


def _in_existing_folder(ctx: click.Context, param: click.Parameter, out: str) -> str:
    """``--out`` as given, refused (a usage error, exit 2) before any work when its folder is missing:
    the page would be rendered and then fail to be written."""
    folder = Path(out).parent
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise click.BadParameter(f"the folder {str(folder)!r} {problem}: create it first", ctx, param)
    return out


@click.command("report")
@config_option
@monitor_argument
@click.option("--start", type=Timestamp(), default=None,
              help="History from this time (ISO 8601) [default: 7 days before the chosen window].")
@click.option("--end", type=Timestamp(), default=None,
              help="Show the window ending at or before this time [default: the newest stored].")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, writable=True),
              callback=_in_existing_folder,
              help="The HTML file to write, in an existing folder (self-contained: opens offline in any browser).")
@handle_errors
def report(config_path: str | None, monitor_name: str, start: datetime | None, end: datetime | None,
           out: str) -> None:
    """Write a self-contained HTML drift report of one monitor.

    A summary of the chosen window's columns, then per column the reference and
    current shares of its bins (the ones that moved most marked, by PSI term)
    and the statistic over time with its thresholds and each window's status.
    A segmented monitor's page adds a segments x columns heat map (each cell the
    column's statistic in that segment, coloured by its status) and a section per
    segment with its columns.
    """
    from driftmon.config_file import load_config
    from driftmon.inspect.report import build_report
    from driftmon.windows import TimeRange

    if start is not None and end is not None:
        try:
            TimeRange(start, end)
        except ValueError:
            raise ConfigError("--start must be before --end") from None
    config = load_config(config_path)
    monitor = _monitor(config, monitor_name)
    began = time.perf_counter()
    with _results(config) as connection:
        page = build_report(connection, monitor, start, end, dtype=config.compute.dtype)
    try:
        Path(out).write_text(page, encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"cannot write {out}: {exc.strerror or exc}", param_hint="'--out'") from exc
    size = Path(out).stat().st_size
    click.echo(f"wrote {out} ({size / 1024:.0f} KiB) in {time.perf_counter() - began:.1f} s")


def _monitor(config: Config, name: str) -> MonitorSettings:
    for monitor in config.resolved_monitors():
        if monitor.name == name:
            return monitor
    known = ", ".join(m.name for m in config.monitors) or "none"
    # The name is echoed to the terminal: as typed, or as a script took it from somewhere.
    raise ConfigError(f"--monitor: no monitor named {visible(name)} (configured: {known})")


@contextmanager
def _results(config: Config) -> Iterator[Connection]:
    """A read-only look at the results database: it must exist and be migrated already."""
    from sqlalchemy.exc import SQLAlchemyError

    from driftmon.store import migrate
    from driftmon.store.database import create_db_engine, parse_url, safe_url

    url = parse_url(config.database.url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
            and not Path(url.database).exists():
        raise StoreError(f"no results database at {url.database}: nothing has been stored yet")
    engine = create_db_engine(url, "database.url")
    try:
        if not migrate.is_at_head(engine):
            raise StoreError(f"results database {safe_url(url)} is not at the latest schema: "
                             "run `driftmon db upgrade` (or any monitor run) first")
        with engine.connect() as connection:
            yield connection
    except SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__]
        raise StoreError(f"reading the results database {safe_url(url)} failed: {cause[0]}") from exc
    finally:
        engine.dispose()
