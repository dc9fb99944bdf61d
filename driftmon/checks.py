"""What ``check-config`` checks beyond the file's own validation.

Offline (no database): the compute device, and each monitor's slice grid.
With ``--connect``: each source opened, its table, columns and their types
checked as a run would check them, so a setup that would fail at 3 a.m.
fails here, naming the key path of each problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from driftmon.config import Config


@dataclass
class CheckReport:
    problems: list[str] = field(default_factory=list)  # exit 2
    notes: list[str] = field(default_factory=list)  # printed, not failures


def offline_checks(config: Config) -> CheckReport:
    """Every check that needs no database."""
    from driftmon.divergence import DeviceUnavailableError, resolve_device
    from driftmon.errors import ConfigError
    from driftmon.slices import grid_problem, lateness, slice_length
    from driftmon.store.database import check_url, results_backend_problem

    report = CheckReport()
    try:
        resolve_device(config.compute.device)
    except DeviceUnavailableError as exc:
        report.problems.append(f"compute.device: {exc}")
    urls = [("database.url", config.database.url)] + [
        (f"monitors[{i}].source.url", m.source.url) for i, m in enumerate(config.monitors) if m.source.url]
    for key, url in urls:
        try:
            check_url(url, key)
        except ConfigError as exc:
            report.problems.extend(exc.problems)
        else:
            problem = results_backend_problem(url) if key == "database.url" else None
            if problem:
                report.problems.append(f"database.url: {problem}")
    for index, monitor in enumerate(config.resolved_monitors()):
        problem = grid_problem(monitor)
        if problem and monitor.slice not in ("auto", "off"):
            report.problems.append(f"monitors[{index}].slice: {problem}")
        elif problem:
            report.notes.append(f"{monitor.name}: {problem}: each cycle counts its whole window")
        else:
            report.notes.append(f"{monitor.name}: slices of {slice_length(monitor)}, "
                                f"late rows counted for {lateness(monitor)}")
    return report


def connect_checks(config: Config) -> list[str]:
    """Open every source and check its table, columns and their types; one line per problem."""
    from sqlalchemy.exc import SQLAlchemyError

    from driftmon.errors import ConfigError, SourceError
    from driftmon.sources import open_source
    from driftmon.store.database import EngineRegistry

    engines, problems = EngineRegistry(), []
    try:
        for index, monitor in enumerate(config.resolved_monitors()):
            try:
                engine = engines.get(config.source_url(monitor.source))
            except (ConfigError, SQLAlchemyError, ValueError, ImportError) as exc:
                problems.append(f"monitors[{index}].source.url: cannot open it: {exc}")
                continue
            try:
                with open_source(monitor, engine).reader.reading("check-config --connect"):
                    pass
            except SourceError as exc:
                problems.append(f"monitors[{index}].source: {exc}")
    finally:
        engines.dispose()
    return problems
