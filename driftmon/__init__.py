"""driftmon: a data-drift monitoring daemon, and its numbers from Python.

Reads feature and prediction distributions out of a SQL database, compares each
current window with a reference window (KL divergence, PSI, Jensen-Shannon),
stores the results and exposes them to Prometheus.

From Python (README, "From Python"):

- ``compare(reference, current, ...)``: two pandas DataFrames through the daemon's
  own binning and engine, a ``Comparison`` (``to_df()``, ``explain(feature)``, shown
  inline in Jupyter);
- ``results(config, monitor, ...)`` and ``runs(...)``: the stored history as DataFrames;
- ``Monitor.from_config(path, name).run(at=None)``: one monitor's ``run-once``;
- the errors: ``DriftmonError`` and its ``ConfigError``, ``SourceError``, ``StoreError``.

``import driftmon`` stays light: torch, SQLAlchemy and pandas load on the first use
of a name that needs them (the command line's ``--help`` needs none).
"""

# No `from __future__ import annotations` and only private helper names: every public name
# of this module is in __all__ (tests/test_api_surface.py checks it).
import importlib as _importlib
import typing as _typing

from driftmon.errors import ConfigError, DriftmonError, SourceError, StoreError

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "compare",
    "Comparison",
    "ConfigError",
    "DriftmonError",
    "Monitor",
    "results",
    "runs",
    "SourceError",
    "StoreError",
]

# The names that load a module of their own on first use.
_LAZY = {
    "compare": "driftmon.api.compare",
    "Comparison": "driftmon.api.comparison",
    "results": "driftmon.api.history",
    "runs": "driftmon.api.history",
    "Monitor": "driftmon.api.monitor",
}

if _typing.TYPE_CHECKING:
    from driftmon.api.compare import compare
    from driftmon.api.comparison import Comparison
    from driftmon.api.history import results, runs
    from driftmon.api.monitor import Monitor


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'driftmon' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
