"""The ``driftmon`` command line: the group that assembles the commands of ``driftmon.commands``.

Exit codes (``driftmon.commands.options``): 0 success (run-once: nothing critical),
1 drift is critical, 2 bad configuration or usage, 3 a run or the database failed.
"""

from __future__ import annotations

import click

import driftmon
from driftmon.commands.checks import check_config, healthcheck
from driftmon.commands.db import db
from driftmon.commands.inspect import explain, report
from driftmon.commands.options import CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH
from driftmon.commands.runs import backfill, demo, run_once, serve
from driftmon.logs import configure_logging

__all__ = ["CONFIG_PATH_ENV", "DEFAULT_CONFIG_PATH", "main"]


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



for command in (check_config, db, run_once, backfill, serve, demo, healthcheck, explain, report):
    main.add_command(command)
