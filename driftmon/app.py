"""Start-up shared by every command that runs monitors: checks, engines, migrations."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from tqdm import tqdm

from driftmon.config import Config, MonitorSettings
from driftmon.divergence import DeviceUnavailableError, resolve_device, set_threads
from driftmon.errors import ConfigError
from driftmon.pipeline import Pipeline, RunOutcome
from driftmon.store import migrate
from driftmon.store.database import EngineRegistry
from driftmon.windows import TimeRange, backfill_windows, current_window

log = logging.getLogger(__name__)


@dataclass
class App:
    config: Config
    engines: EngineRegistry
    results: Engine
    pipeline: Pipeline

    def close(self) -> None:
        self.engines.dispose()


def open_app(config: Config) -> App:
    """Check the device, set torch's threads, migrate the results database."""
    try:
        device = resolve_device(config.compute.device)
    except DeviceUnavailableError as exc:
        raise ConfigError(f"compute.device: {exc}") from exc
    set_threads(config.compute.threads)
    engines = EngineRegistry()
    results = engines.get(config.database.url)
    migrate.upgrade(results)
    log.info("ready", extra={"event": "app.ready", "device": str(device),
                             "monitors": len(config.monitors)})
    return App(config, engines, results, Pipeline(results, config.compute, engines))


def select_monitors(config: Config, names: Iterable[str] = ()) -> list[MonitorSettings]:
    """The named monitors (all when none are named); unknown names are a usage error."""
    monitors = config.resolved_monitors()
    names = list(names)
    unknown = sorted(set(names) - {m.name for m in monitors})
    if unknown:
        known = ", ".join(m.name for m in monitors) or "none"
        raise ConfigError(f"--monitor: no monitor named {', '.join(unknown)} (configured: {known})")
    return [m for m in monitors if not names or m.name in names]


def run_latest(app: App, monitors: list[MonitorSettings], now: datetime) -> list[RunOutcome]:
    """Every monitor once, for its latest complete window at ``now``."""
    return [run_window(app, m, current_window(m.schedule, m.window.size, now)) for m in monitors]


def pending_windows(app: App, monitor: MonitorSettings, start: datetime, end: datetime) -> list[TimeRange]:
    """The monitor's historical windows in [start, end] that have no results yet."""
    windows = backfill_windows(monitor.schedule, monitor.window.size, start, end)
    if not windows:
        return []
    span = TimeRange(windows[0].end - monitor.window.size, windows[-1].end)
    with app.results.connect() as connection:
        stored = app.pipeline.repository.stored_window_ends(connection, monitor.name, span)
    return [w for w in windows if w.end not in stored]


def plan_backfill(app: App, monitors: list[MonitorSettings], start: datetime,
                  end: datetime) -> list[tuple[MonitorSettings, TimeRange]]:
    """Every pending historical window of the monitors, oldest first."""
    work = [(m, w) for m in monitors for w in pending_windows(app, m, start, end)]
    return sorted(work, key=lambda pair: (pair[1].end, pair[0].name))


def run_window(app: App, monitor: MonitorSettings, window: TimeRange) -> RunOutcome:
    return app.pipeline.run(monitor, app.config.source_url(monitor.source), window)


def backfill_with_progress(app: App, monitors: list[MonitorSettings], start: datetime,
                           end: datetime) -> list[RunOutcome]:
    """plan_backfill + run_window, with a progress bar on a terminal."""
    work = plan_backfill(app, monitors, start, end)
    # A bar on a terminal; elsewhere each run's own log line is the progress.
    bar = tqdm(total=len(work), unit="window", disable=not sys.stderr.isatty(), file=sys.stderr)
    outcomes = []
    with bar:
        for monitor, window in work:
            bar.set_postfix_str(f"{monitor.name} {window.end:%Y-%m-%d %H:%M}", refresh=False)
            outcomes.append(run_window(app, monitor, window))
            bar.update()
    return outcomes
