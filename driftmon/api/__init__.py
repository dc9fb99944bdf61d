"""The Python API (README, "From Python"): what ``import driftmon`` exports, one module per role.

- ``compare``: two DataFrames through the daemon's own source and engine code (an
  in-process DuckDB holds the frames), giving a ``Comparison``;
- ``comparison``: ``Comparison``, the results as a DataFrame, per-bin tables and an
  inline report;
- ``history``: the stored history of the results database as DataFrames;
- ``monitor``: one configured monitor's ``run-once`` as objects.

Nothing here is imported by ``import driftmon``: the package's ``__getattr__`` loads
these modules on first use, so the CLI's ``--help`` stays free of torch and SQLAlchemy.
"""
