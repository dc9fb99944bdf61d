"""driftmon's exceptions: one root, one subclass per class of failure.

    DriftmonError
    ├── ConfigError        bad configuration or usage (CLI exit code 2)
    ├── StoreError         the results database failed (CLI exit code 3)
    └── SourceError        a source database or table failed (CLI exit code 3)

Driver errors are translated once, at the boundary that talks to the driver,
and chained with ``raise ... from exc`` so the cause is never lost.
"""


class DriftmonError(Exception):
    """Something driftmon could not do: catching it catches every error driftmon raises on purpose.

    >>> import driftmon
    >>> [error.__name__ for error in (driftmon.ConfigError, driftmon.SourceError, driftmon.StoreError)
    ...  if issubclass(error, driftmon.DriftmonError)]
    ['ConfigError', 'SourceError', 'StoreError']
    """


class ConfigError(DriftmonError):
    """The configuration is invalid; the message names every culprit's key path.

    From Python, a setting passed as a keyword is named as the keyword:

    >>> import pandas as pd, driftmon
    >>> frame = pd.DataFrame({"amount": [1.0, 2.0, 3.0]})
    >>> try:
    ...     driftmon.compare(frame, frame, smoothing={"method": "pseudocount", "alpha": -1})
    ... except driftmon.ConfigError as exc:
    ...     print(exc.problems)
    ['smoothing.alpha: Input should be greater than 0']
    """

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class StoreError(DriftmonError):
    """The results database could not be read or written."""


class SourceError(DriftmonError):
    """A source database could not be queried."""
