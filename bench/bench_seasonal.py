"""Benchmark of seasonal references (issue #24): what the same hour of past days costs a cycle.

Not a timed test: run it by hand (see bench/README.md).

    python bench/bench_seasonal.py [--sqlite-rows 1000000] [--pg-rows 0] [--cycles 7]

On the 24-column table of bench_sources.py (8 days), a monitor on a 5-minute schedule with
1 h windows, side by side in one process, interleaved per tick:

- rolling: the README's default reference, the 7 days before the window (refreshed daily);
- seasonal: ``{kind: seasonal, period: 1d, lags: 7}``, the same hour of each of the last 7 days.

Reported: the first run (profile cut, and for the seasonal reference every lag's slices
counted), the steady cycle (median over ``--cycles`` ticks, after the first run) and the
source rows each reads per cycle: a steady seasonal cycle must read no more of the source
than a rolling one, as the lags come from stored slices.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_incremental as incremental  # noqa: E402  the table, its generators, Clock and timed_run
import bench_sources as table_bench  # noqa: E402

from driftmon.config import ComputeConfig  # noqa: E402
from driftmon.config_file import parse_config  # noqa: E402
from driftmon.pipeline import Pipeline  # noqa: E402
from driftmon.store.database import EngineRegistry  # noqa: E402

START, DAY, HOUR, MINUTE = table_bench.START, timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)
REFERENCES = {"rolling": {"kind": "rolling", "size": "7d"},
              "seasonal": {"kind": "seasonal", "period": "1d", "lags": 7}}


def settings(url: str, kind: str):
    features = (
        [{"column": c} for c in table_bench.NUMERIC]
        + [{"column": c, "type": "categorical", "top_k": 20} for c in table_bench.CATEGORICAL]
        + [{"column": table_bench.SCORE, "role": "prediction", "binning": "uniform", "range": [0, 1]}]
    )
    raw = {"database": {"url": url},
           "defaults": {"schedule": {"every": "5m"}, "window": {"size": "1h"}, "lateness": "5m"},
           "monitors": [{"name": f"bench_{kind}", "reference": REFERENCES[kind], "features": features,
                         "source": {"kind": "events", "table": "inference_log", "timestamp_column": "ts"}}]}
    return parse_config(raw, {}).resolved_monitors()[0]


def bench(url, engine, cycles: int) -> dict:
    end0 = START + 8 * DAY - 2 * HOUR
    clock = incremental.Clock(end0 + timedelta(seconds=1))
    pipe = Pipeline(engine, ComputeConfig(device="cpu"), EngineRegistry(), clock=clock)
    monitors = {kind: settings(url, kind) for kind in REFERENCES}
    found = {kind: {"first": incremental.timed_run(pipe, m, url, end0)[0], "cycles": [], "read": [],
                    "statements": []} for kind, m in monitors.items()}
    for k in range(1, cycles + 1):
        end = end0 + k * 5 * MINUTE
        clock.now = end + timedelta(seconds=1)
        for kind, monitor in monitors.items():
            source = pipe.source_for(monitor, url)
            before = source.statements
            elapsed, outcome = incremental.timed_run(pipe, monitor, url, end)
            found[kind]["cycles"].append(elapsed)
            found[kind]["read"].append(outcome.rows_scanned)
            found[kind]["statements"].append(source.statements - before)
    return {kind: {"first": f["first"], "cycle": statistics.median(f["cycles"]),
                   "read": statistics.median(f["read"]), "statements": max(f["statements"])}
            for kind, f in found.items()}


def report(title: str, found: dict) -> None:
    print(f"\n{title}\n")
    print("| reference | first run | steady cycle | source rows read per cycle | source statements per cycle |")
    print("| --- | --- | --- | --- | --- |")
    for kind, f in found.items():
        print(f"| {kind} | {f['first'] * 1000:,.0f} ms | {f['cycle'] * 1000:,.1f} ms | {f['read']:,.0f} | "
              f"{f['statements']} |")
    ratio = found["seasonal"]["cycle"] / found["rolling"]["cycle"]
    print(f"\nseasonal / rolling steady cycle: {ratio:.2f}x")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", default=table_bench.DEFAULT_URL)
    parser.add_argument("--pg-rows", type=int, default=0, help="0 skips PostgreSQL")
    parser.add_argument("--sqlite-rows", type=int, default=1_000_000, help="0 skips SQLite")
    parser.add_argument("--sqlite-path", default="/tmp/driftmon_bench_seasonal.db")
    parser.add_argument("--cycles", type=int, default=7)
    parser.add_argument("--reuse", action="store_true", help="keep a table that already has the rows")
    args = parser.parse_args(argv)
    for title, url, engine in incremental.databases(args):
        report(title, bench(url, engine, args.cycles))
    print(f"\n(measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")


if __name__ == "__main__":
    main()
