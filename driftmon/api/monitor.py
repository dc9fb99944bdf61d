"""``driftmon.Monitor``: one configured monitor's ``run-once`` from Python.

``run`` is ``driftmon run-once --monitor NAME [--at T]``: the same start-up
(driftmon/app.py: device check, torch threads, migrations), the same pipeline
run for the latest complete window, stored in the results database as the
command stores it. It returns the window's ``Comparison`` instead of printing
it, and raises where the command exits 3.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from driftmon.errors import ConfigError, DriftmonError, SourceError, StoreError

if TYPE_CHECKING:
    from driftmon.api.comparison import Comparison
    from driftmon.config import Config
    from driftmon.outcomes import RunOutcome

# A failed run's reason (pipeline._reason) as the error it is raised as.
_ERRORS: dict[str | None, type[DriftmonError]] = {"source": SourceError, "store": StoreError}


class Monitor:
    """One monitor of a config file, run on demand.

    >>> monitor = driftmon.Monitor.from_config(config_path, "shop")
    >>> comparison = monitor.run(at="2024-03-08T12:00:00Z")
    >>> str(comparison.window)
    '[2024-03-08T11:00:00+00:00, 2024-03-08T12:00:00+00:00)'
    >>> comparison.status("amount")
    'critical'
    """

    def __init__(self, config: Config, name: str):
        from driftmon.app import select_monitors

        (self.settings,) = select_monitors(config, [name])
        self.config = config

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | Config, name: str) -> Monitor:
        """The monitor named ``name`` of the config file at ``path`` (or of a loaded ``Config``),
        validated as every command validates it: a ``ConfigError`` names each culprit."""
        from driftmon.api.history import load

        return cls(load(path), name)

    @property
    def name(self) -> str:
        return self.settings.name

    def run(self, at: datetime | str | None = None) -> Comparison:
        """Compute and store the latest complete window at ``at`` (default: now; naive is UTC), as
        ``driftmon run-once`` does; the window's results come back as a ``Comparison``.

        A failed run is stored as a failed run row, as the command stores it, and raised:
        ``SourceError`` (the source table or database), ``StoreError`` (the results
        database) or ``DriftmonError`` (anything else).
        """
        from driftmon.api.comparison import Comparison
        from driftmon.app import open_app, run_latest

        moment = _at(at)
        app = open_app(self.config)
        try:
            (outcome,) = run_latest(app, [self.settings], moment)
        finally:
            app.close()
        _raise_if_failed(outcome)
        return Comparison(self.settings, tuple(outcome.results), window=outcome.window,
                          reference=outcome.reference or outcome.window, dtype=self.config.compute.dtype)

    def __repr__(self) -> str:
        features = len(self.settings.features)
        return f"<Monitor {self.name!r}: {features} feature(s), source table {self.settings.source.table!r}>"


def _at(at: datetime | str | None) -> datetime:
    """``--at``'s rules: ISO 8601 text or a datetime, naive is UTC, never after now."""
    from driftmon import limits

    if at is None:
        return datetime.now(UTC)
    if not isinstance(at, datetime | str):
        raise TypeError(f"at must be a datetime or ISO 8601 text, not {type(at).__name__}")
    try:
        return limits.parse_moment(at, past=True)
    except ValueError as exc:
        raise ConfigError(f"at: {exc}") from None


def _raise_if_failed(outcome: RunOutcome) -> None:
    if outcome.status == "ok":
        return
    raise _ERRORS.get(outcome.reason, DriftmonError)(outcome.error or f"monitor {outcome.monitor!r}: run failed")
