"""The results queries behind segmented monitors' gauges (serving/segment_metrics.py).

The daemon's gauges mirror each monitor's newest window, read back from the
results database at start-up and once per cycle. A segmented monitor's window
holds a row per (segment, column): 51 segments x 24 columns is 1,224 rows at
the defaults, so a refresh reads them only for the monitors whose newest
window changed since (a new window end, or the same window stored again: a
newer ``computed_at``). Every row of a window is stored by one run, with one
``computed_at``, so the whole population's rows (read anyway) tell which.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection

from driftmon.store.models import Result

_results = Result.__table__
# What the gauges need of a segment row: no bins, no counts.
FIELDS = ("monitor", "column", "role", "segment_key", "statistic", "status", "kl", "psi", "js",
          "p_value", "q_value", "window_end", "computed_at")
_CHUNK = 200  # monitors per statement: (monitor, window_end) pairs, within any database's parameter limit


def newest_windows(whole_rows: Iterable[dict], monitors: Iterable[str]) -> dict[str, tuple[datetime, datetime]]:
    """Per monitor of ``monitors``, its newest stored window (of ``Repository.latest_results``'
    rows) and when that window was computed."""
    wanted, newest = set(monitors), {}
    for row in whole_rows:
        if row["monitor"] in wanted:
            mark = (row["window_end"], row["computed_at"])
            newest[row["monitor"]] = max(mark, newest.get(row["monitor"], mark))
    return newest


def changed_segment_rows(connection: Connection, whole_rows: list[dict], monitors: Iterable[str],
                         known: dict[str, tuple[datetime, datetime | None]]) -> list[dict]:
    """The segment rows of the newest window of each of ``monitors`` (the segmented ones) whose
    (window end, computed at) is not ``known``: the state holds the others already."""
    wanted = {monitor: end for monitor, (end, computed) in newest_windows(whole_rows, monitors).items()
              if known.get(monitor) != (end, computed)}
    return window_segment_rows(connection, wanted)


def window_segment_rows(connection: Connection, windows: dict[str, datetime]) -> list[dict]:
    """Every segment row (no bins) of one window per monitor: ``{monitor: window end}``."""
    columns = [_results.c[name] for name in FIELDS]
    pairs = sorted(windows.items())
    rows: list[dict] = []
    for first in range(0, len(pairs), _CHUNK):
        which = sa.or_(*(sa.and_(_results.c.monitor == monitor, _results.c.window_end == end)
                         for monitor, end in pairs[first:first + _CHUNK]))
        statement = sa.select(*columns).where(which, _results.c.segment_key != "")
        rows += [dict(row) for row in connection.execute(statement).mappings()]
    return rows
