"""What every command shares: options, exit codes, and the mapping of errors to them.

Exit codes: 0 success (run-once: nothing critical), 1 drift is critical,
2 bad configuration or usage, 3 a run or the database failed.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import TYPE_CHECKING

import click

from driftmon import limits
from driftmon.errors import ConfigError, DriftmonError
from driftmon.textsafe import visible
from driftmon.urls import mask_credentials

if TYPE_CHECKING:
    from driftmon.config import Config

# Imports stay inside the commands that need them: the config models (pydantic)
# cost 0.16 s, SQLAlchemy and Alembic 0.3 s and torch 2 s, and `driftmon --help`
# or `--version` need none of them. For the same reason these two are spelled
# here rather than imported from driftmon.config_file (tests/test_cli.py checks that
# they agree).
CONFIG_PATH_ENV = "DRIFTMON_CONFIG"
DEFAULT_CONFIG_PATH = "config.yaml"

EXIT_OK, EXIT_CRITICAL, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's code for Ctrl-C
# Set to 1, an unexpected error shows its traceback (it is a defect: see handle_errors).
DEBUG_ENV = "DRIFTMON_DEBUG"
EXIT_CODES_HELP = (
    "Exit codes: 0 nothing critical, 1 at least one column (or a window's volume) critical, "
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
    """Turn driftmon's errors into a message and an exit code, without a traceback.

    Every message is masked (driftmon/urls.py): a driver's error may quote a URL
    with its password; and shown with control and bidi characters escaped
    (driftmon/textsafe.py): it may quote the data, a table or column name. Bad
    input is caught where it is read (the config's validation, the options'
    types) and is a ConfigError, exit 2. Anything else
    that escapes a command is a defect: one line naming it and exit 3 ("failed"),
    never Python's exit 1, which reads as critical drift to a CI gate, and no
    traceback unless DRIFTMON_DEBUG=1. It is deliberately not exit 2: mapping
    unknown errors to "bad configuration" would hide defects behind the user's input.
    """

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ConfigError as exc:
            click.echo("driftmon: configuration error:", err=True)
            for problem in exc.problems:
                click.echo(f"  {_shown(problem)}", err=True)
            sys.exit(EXIT_USAGE)
        except DriftmonError as exc:
            click.echo(f"driftmon: {_shown(_cause_chain(exc))}", err=True)
            sys.exit(EXIT_FAILED)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # usage errors and exits, which click reports itself
        except Exception as exc:
            if os.environ.get(DEBUG_ENV) == "1":
                raise
            click.echo(f"driftmon: unexpected error (a defect in driftmon, please report it; "
                       f"{DEBUG_ENV}=1 shows the traceback): {type(exc).__name__}: "
                       f"{_shown(_first_line(exc))}", err=True)
            sys.exit(EXIT_FAILED)

    return wrapper


def _shown(text: str) -> str:
    return visible(mask_credentials(text))


class Timestamp(click.ParamType):
    """An ISO 8601 time; naive values are UTC. ``past``: a time after now is a usage error.

    A window that has not ended yet is not a window: stored, it would hide the
    live ones from /metrics, explain and the report (e.g. a backfill with a typo
    in the year).
    """

    name = "timestamp"

    def __init__(self, past: bool = False):
        self.past = past

    def convert(self, value, param, ctx) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return limits.parse_moment(value, past=self.past)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


monitor_option = click.option(
    "--monitor", "monitor_names", multiple=True, metavar="NAME",
    help="Only this monitor (repeatable); default: every monitor.",
)


def _cause_chain(exc: BaseException) -> str:
    """The message and each cause's first line that it does not already say, joined by ': '."""
    parts = [str(exc)]
    cause = exc.__cause__
    while cause is not None and _first_line(cause) not in parts[-1]:
        parts.append(_first_line(cause))
        cause = cause.__cause__
    return ": ".join(parts)


def _first_line(exc: BaseException) -> str:
    # SQLAlchemy prefixes the driver's message with "(module.Class) ", which the
    # message that translated it does not repeat: without it, a cause whose text
    # was already given is recognised and not printed twice.
    text = str(exc).strip()
    return re.sub(r"^\([\w.]+\) ", "", text.splitlines()[0]) if text else type(exc).__name__



def load_config(path: str | None) -> Config:
    """driftmon.config_file.load_config, imported when a command first needs the config."""
    from driftmon.config_file import load_config as load

    return load(path)

