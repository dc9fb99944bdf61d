"""``source.timeout`` on every other engine: a read that would take minutes stops at the timeout.

Each engine gets a view over the inference log that is slow in its own way
(MariaDB sleeps, the others cross-join a large range of numbers), and a source
with a 500 ms timeout on it: the read must fail with the engine's timeout
error, naming the monitor and table, long before the view could finish.
"""

from __future__ import annotations

import time

import pytest

from driftmon.errors import SourceError
from driftmon.sources import open_source
from tests.engines import backend, engine_factory, engine_name, results_engine, results_store, source_engine  # noqa: F401
from tests.test_sources import REFERENCE, log, monitor  # noqa: F401  fixture

pytestmark = pytest.mark.usefixtures("results_store")

# Each about a minute on this machine's 2 cores without a timeout (a broken one fails, it does not hang).
SLOW_VIEWS = {
    "mariadb": "SELECT l.* FROM inference_log l JOIN (SELECT SLEEP(60) AS pause) p",
    "duckdb": "SELECT l.* FROM range(200000000) r, inference_log l",
    "clickhouse": "SELECT l.* FROM numbers(200000000) r CROSS JOIN inference_log l",
    "spark": "SELECT l.* FROM range(30000000) r CROSS JOIN inference_log l",
}
# What each engine says when the timeout strikes.
TIMEOUT_WORDS = {
    "mariadb": "max_statement_time",
    "duckdb": "INTERRUPT",
    "clickhouse": "TIMEOUT_EXCEEDED",
    "spark": "TIMEDOUT",
}
BOUND_S = 20.0


def test_a_source_timeout_stops_a_slow_read(source_engine, engine_name, log):  # noqa: F811
    with source_engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE VIEW slow_log AS {SLOW_VIEWS[engine_name]}")
    source = {"kind": "events", "table": "slow_log", "timestamp_column": "ts", "timeout": "500ms"}
    src = open_source(monitor([{"column": "amount", "binning": "uniform", "bins": 4}], source=source),
                      source_engine)
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"monitor 'm', table 'slow_log'") as raised:
        src.profile(REFERENCE)
    elapsed = time.monotonic() - started
    assert TIMEOUT_WORDS[engine_name].lower() in str(raised.value).lower(), str(raised.value)[:500]
    assert elapsed < BOUND_S, f"the read ran {elapsed:.1f} s under a 500 ms timeout"
    # The connection's next read is not bounded by the old deadline any more.
    fast = open_source(monitor([{"column": "amount", "binning": "uniform", "bins": 4}]), source_engine)
    assert sum(fast.profile(REFERENCE).columns[0].counts) > 0
