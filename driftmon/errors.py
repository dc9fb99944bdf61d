"""driftmon's exceptions: one root, one subclass per class of failure.

    DriftmonError
    ├── ConfigError        bad configuration or usage (CLI exit code 2)
    ├── StoreError         the results database failed (CLI exit code 3)
    └── SourceError        a source database or table failed (CLI exit code 3)

Driver errors are translated once, at the boundary that talks to the driver,
and chained with ``raise ... from exc`` so the cause is never lost.
"""


class DriftmonError(Exception):
    """Something driftmon could not do."""


class ConfigError(DriftmonError):
    """The configuration is invalid; the message names every culprit's key path."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class StoreError(DriftmonError):
    """The results database could not be read or written."""


class SourceError(DriftmonError):
    """A source database could not be queried."""
