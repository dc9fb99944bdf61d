"""What ``check-config`` checks beyond the file's own validation.

Offline (no database): the compute device, URLs and their drivers, each monitor's
slice grid and fixed reference. With ``--connect`` (driftmon/commands/connect_checks.py):
the results database and each source opened, read-only, and their tables,
columns, types and rows checked as a run would meet them, so a setup that would
fail, or run blind, at 3 a.m. fails here, naming the key path of each problem.

Nothing here creates a file, a table or a row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from driftmon.config import Config, FixedReference, MonitorSettings, RollingReference, SeasonalReference


@dataclass
class CheckReport:
    problems: list[str] = field(default_factory=list)  # exit 2
    warnings: list[str] = field(default_factory=list)  # runs, but likely not as meant: printed, exit 0
    notes: list[str] = field(default_factory=list)  # what was found: printed


def offline_checks(config: Config, now: datetime | None = None) -> CheckReport:
    """Every check that needs no database; ``now`` places the current windows (default: now)."""
    from driftmon.counting.slices import grid_problem, lateness, slice_length
    from driftmon.stats.divergence import DeviceUnavailableError, resolve_device

    report = CheckReport()
    try:
        resolve_device(config.compute.device)
    except (DeviceUnavailableError, ValueError) as exc:  # ValueError: a device torch does not know
        report.problems.append(f"compute.device: {exc}")
    report.problems.extend(url_problems(config))
    if not config.monitors:
        report.warnings.append("monitors: none configured: `serve` and `run-once` would monitor nothing")
    now = now or datetime.now(UTC)
    for index, monitor in enumerate(config.resolved_monitors()):
        problem = grid_problem(monitor)
        if problem and monitor.slice not in ("auto", "off"):
            report.problems.append(f"monitors[{index}].slice: {problem}")
        elif problem:
            report.notes.append(f"{monitor.name}: {problem}: each cycle counts its whole window")
        else:
            report.notes.append(f"{monitor.name}: slices of {slice_length(monitor)}, "
                                f"late rows counted for {lateness(monitor)}")
        report.warnings.extend(fixed_reference_warnings(index, monitor, now))
        report.notes.extend(health_notes(index, monitor, problem, report))
    return report


def health_notes(index: int, monitor: MonitorSettings, grid: str | None, report: CheckReport) -> list[str]:
    """How a rolling reference moves, what a seasonal one compares with, and the volume check;
    a seasonal reference whose slices do not fit is a problem: it is summed from slices."""
    notes = []
    reference = monitor.reference
    if isinstance(reference, RollingReference) and monitor.source.kind == "events":
        from driftmon.counting.rolling import grid_length
        from driftmon.windows import rebin_phase

        moves = ("summed from stored slices (no source read)" if grid_length(monitor)
                 else "counted from the source (its refresh, size or offset is not whole slices)")
        notes.append(f"{monitor.name}: rolling reference: moves every {reference.refresh}, {moves}; bins re-cut "
                     f"every {reference.rebin}, {rebin_phase(reference, monitor.name)} into each period")
    if isinstance(reference, SeasonalReference):
        if grid:
            report.problems.append(f"monitors[{index}].reference: a seasonal reference is summed from slices, "
                                   f"but {grid}")
        notes.append(f"{monitor.name}: seasonal reference: the same window of each of the last {reference.lags} "
                     f"period(s) of {reference.period}, bins re-cut every {reference.effective_refresh}"
                     + (f", {len(reference.exclude)} exclusion(s)" if reference.exclude else ""))
    notes.extend(multivariate_notes(index, monitor, report))
    volume = monitor.volume
    notes.append(f"{monitor.name}: volume check off" if volume is None else
                 f"{monitor.name}: volume check: warning at {volume.warning:.0%}, critical at {volume.critical:.0%} "
                 f"more or fewer rows than expected (rate test at {volume.significance})")
    return notes


def multivariate_notes(index: int, monitor: MonitorSettings, report: CheckReport) -> list[str]:
    """What the multivariate drift compares, and whether its thresholds can be calibrated: they
    need at least two window-sized chunks in the range the fit comes from."""
    settings = monitor.multivariate
    if settings is None:
        return []
    reference = monitor.reference
    if isinstance(reference, SeasonalReference):
        span = reference.lags * reference.period
    elif isinstance(reference, RollingReference):
        span = reference.size
    else:
        span = reference.end - reference.start
    columns = settings.columns or [f.column for f in monitor.features]
    categorical = [f.column for f in monitor.features if f.type == "categorical" and f.column in columns]
    chunks = span // monitor.window.size
    calibrated = [name for name, given in (("reconstruction_error", settings.thresholds.reconstruction_error),
                                           ("gaussian_kl", settings.thresholds.gaussian_kl)) if given is None]
    if calibrated and chunks < 2:
        report.warnings.append(
            f"monitors[{index}].multivariate: the reference ({span}) holds {chunks} window-sized chunk(s) of "
            f"{monitor.window.size}; calibrated thresholds need at least 2, so every window would be "
            f"insufficient_data: give multivariate.thresholds.{calibrated[0]} or a longer reference")
    how = (f"{', '.join(calibrated)} thresholds calibrated on {chunks} reference chunk(s) "
           f"(mean ± {settings.thresholds.sigmas:g} sd)" if calibrated else "explicit thresholds")
    return [f"{monitor.name}: multivariate drift over {len(columns)} columns ({', '.join(columns)}"
            + (f"; count-encoded: {', '.join(categorical)}" if categorical else "")
            + f"), n_components {settings.n_components}, {how}"]


def url_problems(config: Config) -> list[str]:
    """Each URL parses and its dialect and driver are installed.

    That each has a scheme, and database.url a backend that can hold the results,
    the configuration's own validation says (driftmon/urls.py).
    """
    from driftmon.errors import ConfigError
    from driftmon.store.database import check_url

    urls = [("database.url", config.database.url)] + [
        (f"monitors[{i}].source.url", m.source.url) for i, m in enumerate(config.monitors) if m.source.url]
    problems = []
    for key, url in urls:
        try:
            check_url(url, key)
        except ConfigError as exc:
            problems.extend(exc.problems)
    return problems


def fixed_reference_warnings(index: int, monitor: MonitorSettings, now: datetime) -> list[str]:
    """A fixed reference that ends in the future or overlaps the current window.

    Rows inside both are counted on both sides of the comparison: a window lying
    half in the reference shows about half its drift, one wholly inside shows none.
    """
    from driftmon.windows import current_window

    reference = monitor.reference
    if not isinstance(reference, FixedReference):
        return []
    window = current_window(monitor.schedule, monitor.window.size, now)
    span = f"[{reference.start.isoformat()}, {reference.end.isoformat()})"
    fix = f"end it at or before {window.start.isoformat()}, the start of the current window"
    if reference.end > now:
        return [f"monitors[{index}].reference: the fixed reference {span} ends in the future: until then "
                f"every window's rows are also reference rows, which dilutes the drift measured; {fix}"]
    if reference.end > window.start and reference.start < window.end:
        return [f"monitors[{index}].reference: the fixed reference {span} overlaps the current window "
                f"{window}: its rows count on both sides, which dilutes the drift measured; {fix}"]
    return []


def connect_checks(config: Config, now: datetime | None = None) -> CheckReport:
    """Open the results database and every source, read-only; see driftmon/commands/connect_checks.py."""
    from driftmon.commands import connect_checks as connecting

    return connecting.run(config, now or datetime.now(UTC))
