"""Start-up shared by every command that runs monitors: checks, engines, migrations."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine
from tqdm import tqdm

from driftmon.config import Config, MonitorSettings
from driftmon.errors import ConfigError
from driftmon.fingerprints import results_fingerprint
from driftmon.logs import above_progress_bar
from driftmon.outcomes import RunOutcome
from driftmon.pipeline import Pipeline
from driftmon.serving.signals import stop_on_signals
from driftmon.stats.divergence import DeviceUnavailableError, resolve_device, set_threads
from driftmon.store import migrate
from driftmon.store.database import EngineRegistry
from driftmon.store.health_queries import stale_health_ends
from driftmon.window_health import health_fingerprint
from driftmon.windows import TimeRange, backfill_windows, current_window

log = logging.getLogger(__name__)

# Where no progress bar shows (stderr is not a terminal), a backfill logs its progress this often.
PROGRESS_EVERY_SECONDS = 30.0


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
    # Every worker holds a results and a source connection while it runs; the heartbeat, the
    # gauges' refresh and the lease keeper one results connection each.
    engines = EngineRegistry(pool_size=config.compute.worker_count + 3)
    results = engines.get(config.database.url, "database.url")
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
    return [run_window(app, m, current_window(m.schedule, m.window.size, now), trigger="run_once")
            for m in monitors]


def pending_windows(app: App, monitor: MonitorSettings, start: datetime, end: datetime) -> list[TimeRange]:
    """The monitor's historical windows in [start, end] with no results yet, or with results
    (or a volume check) that other settings made (their fingerprint differs: driftmon/fingerprints.py)."""
    windows = backfill_windows(monitor.schedule, monitor.window.size, start, end)
    if not windows:
        return []
    span = TimeRange(windows[0].end - monitor.window.size, windows[-1].end)
    made_by = results_fingerprint(monitor, app.config.source_url(monitor.source))
    with app.results.connect() as connection:
        stored = app.pipeline.repository.stored_window_ends(connection, monitor.name, span, made_by)
        stored -= stale_health_ends(connection, monitor.name, span, health_fingerprint(monitor, made_by))
    return [w for w in windows if w.end not in stored]


def plan_backfill(app: App, monitors: list[MonitorSettings], start: datetime, end: datetime, *,
                  recount: bool = False) -> list[tuple[MonitorSettings, TimeRange]]:
    """Every pending historical window of the monitors, oldest first (``recount``: every
    window in the range, stored or not)."""
    def windows(monitor: MonitorSettings) -> list[TimeRange]:
        if recount:
            return backfill_windows(monitor.schedule, monitor.window.size, start, end)
        return pending_windows(app, monitor, start, end)

    work = [(m, w) for m in monitors for w in windows(m)]
    return sorted(work, key=lambda pair: (pair[1].end, pair[0].name))


def run_window(app: App, monitor: MonitorSettings, window: TimeRange, *, trigger: str,
               recount: bool = False) -> RunOutcome:
    return app.pipeline.run(monitor, app.config.source_url(monitor.source), window,
                            trigger=trigger, recount=recount)


@dataclass
class Backfill:
    """What a backfill did: its runs, and the windows it left undone if a signal stopped it."""

    outcomes: list[RunOutcome] = field(default_factory=list)
    left: list[tuple[MonitorSettings, TimeRange]] = field(default_factory=list)
    signal_exit_code: int | None = None  # 128 + the signal's number when one stopped it

    @property
    def interrupted(self) -> bool:
        return self.signal_exit_code is not None


def backfill_with_progress(app: App, monitors: list[MonitorSettings], start: datetime,
                           end: datetime, *, recount: bool = False) -> Backfill:
    """plan_backfill + run_window, with a progress bar on a terminal.

    Each window's own "run finished" line is DEBUG (driftmon.pipeline.BULK_TRIGGERS): the bar,
    or where it does not show a ``backfill.progress`` line every PROGRESS_EVERY_SECONDS, and
    the command's closing summary stand for them. A failed window is logged at ERROR.

    SIGINT (Ctrl-C) or SIGTERM stops it after the window in flight, which is
    finished and stored; a second one abandons that window (its transaction is
    rolled back) with a KeyboardInterrupt.
    """
    work = plan_backfill(app, monitors, start, end, recount=recount)
    trigger = "recount" if recount else "backfill"
    bar = tqdm(total=len(work), unit="window", disable=not sys.stderr.isatty(), file=sys.stderr)
    progress = _ProgressLines(len(work), trigger) if bar.disable else None
    done = Backfill()
    with bar, above_progress_bar(bar), stop_on_signals(event="backfill.stop_requested") as stop:
        for position, (monitor, window) in enumerate(work):
            if stop.requested:
                done.left, done.signal_exit_code = work[position:], stop.exit_code
                break
            bar.set_postfix_str(f"{monitor.name} {window.end:%Y-%m-%d %H:%M}", refresh=False)
            done.outcomes.append(run_window(app, monitor, window, trigger=trigger, recount=recount))
            bar.update()
            if progress is not None:
                progress.update(done.outcomes)
    return done


class _ProgressLines:
    """The progress bar's stand-in off a terminal: an INFO line as a backfill starts, then one
    every PROGRESS_EVERY_SECONDS while it runs."""

    def __init__(self, total: int, trigger: str):
        self.total, self.trigger = total, trigger
        self.next_at = time.monotonic() + PROGRESS_EVERY_SECONDS
        log.info("%s of %d window(s) started", trigger, total,
                 extra={"event": "backfill.started", "trigger": trigger, "windows": total})

    def update(self, outcomes: list[RunOutcome]) -> None:
        if time.monotonic() < self.next_at:
            return
        self.next_at = time.monotonic() + PROGRESS_EVERY_SECONDS
        failed = sum(o.status != "ok" for o in outcomes)
        log.info("%s: %d of %d window(s) done", self.trigger, len(outcomes), self.total,
                 extra={"event": "backfill.progress", "trigger": self.trigger, "done": len(outcomes),
                        "windows": self.total, "failed": failed})
