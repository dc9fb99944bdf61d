"""Benchmark of rolling references that roll from slices (issue #25): the daily move against a steady cycle.

Not a timed test: run it by hand (see bench/README.md).

    python bench/bench_rolling.py [--sqlite-rows 1000000] [--pg-rows 0] [--reuse]

On the 24-column table of bench_sources.py (8 days), two monitors with the README's default
rolling reference (7 days, moving daily), a 5-minute schedule and 1 h windows, side by side in
one process, tick by tick through the hour that ends with the reference's daily move:

- slices: the default, ``rebin: 7d`` at the monitor's own phase (not in this hour): the move
  sums the new range's stored slices and reads nothing from the source;
- re-cut: ``rebin: 1d`` at phase 0, so its bins are re-cut at the move: what every daily move
  cost before issue #25 (a new profile, and the whole range counted again).

Reported per monitor: the first run (bins cut, every slice of the range counted), the steady
cycle (median of the hour's ticks), the run at the move, and its ratio to the steady cycle
(target: at most 2x for the default).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_incremental as incremental  # noqa: E402  the table, its generators, Clock and timed_run
import bench_seasonal as seasonal  # noqa: E402  the 24 watched columns
import bench_sources as table_bench  # noqa: E402

from driftmon.config import ComputeConfig, RollingReference  # noqa: E402
from driftmon.config_file import parse_config  # noqa: E402
from driftmon.pipeline import Pipeline  # noqa: E402
from driftmon.store.database import EngineRegistry  # noqa: E402
from driftmon.windows import rebin_phase  # noqa: E402

START, DAY, HOUR, MINUTE = table_bench.START, timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)
MOVE = START + 7 * DAY + HOUR  # the tick whose window is the first after midnight: the reference moves


def _named(rebin: timedelta, wanted) -> str:
    return next(name for name in (f"bench_rolling_{i}" for i in range(10_000))
                if wanted(rebin_phase(RollingReference(rebin=rebin), name)))


def settings(url: str, name: str, rebin: str):
    raw = seasonal.settings(url, "rolling").model_dump(mode="json")
    config = {"database": {"url": url},
              "defaults": {"schedule": {"every": "5m"}, "window": {"size": "1h"}, "lateness": "5m"},
              "monitors": [{"name": name, "features": raw["features"], "source": raw["source"],
                            "reference": {"kind": "rolling", "size": "7d", "refresh": "1d", "rebin": rebin}}]}
    return parse_config(config, {}).resolved_monitors()[0]


def bench(url, engine) -> dict:
    # The default: any phase but this hour's; the re-cut: phase 0 with daily re-cuts (the old daily cost).
    quiet = _named(timedelta(days=7), lambda p: timedelta(days=1) <= p < timedelta(days=6))
    every_midnight = _named(timedelta(days=1), lambda p: p == timedelta(0))
    monitors = {"slices (default)": settings(url, quiet, "7d"), "re-cut daily": settings(url, every_midnight, "1d")}
    clock = incremental.Clock(MOVE - HOUR + timedelta(seconds=1))
    pipe = Pipeline(engine, ComputeConfig(device="cpu"), EngineRegistry(), clock=clock)
    found = {kind: {"first": incremental.timed_run(pipe, m, url, MOVE - HOUR)[0], "steady": []}
             for kind, m in monitors.items()}
    for k in range(1, 13):
        end = MOVE - HOUR + k * 5 * MINUTE
        clock.now = end + timedelta(seconds=1)
        for kind, monitor in monitors.items():
            source = pipe.source_for(monitor, url)
            before = source.statements
            elapsed, outcome = incremental.timed_run(pipe, monitor, url, end)
            if end == MOVE:
                found[kind].update(move=elapsed, move_statements=source.statements - before,
                                   move_read=outcome.rows_scanned)
            else:
                found[kind]["steady"].append(elapsed)
    return found


def report(title: str, found: dict) -> None:
    print(f"\n{title}\n")
    print("| monitor | first run | steady cycle | run at the daily move | move / steady | "
          "source statements at the move |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind, f in found.items():
        steady = statistics.median(f["steady"])
        print(f"| {kind} | {f['first'] * 1000:,.0f} ms | {steady * 1000:,.1f} ms | {f['move'] * 1000:,.1f} ms | "
              f"{f['move'] / steady:.1f}x | {f['move_statements']} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", default=table_bench.DEFAULT_URL)
    parser.add_argument("--pg-rows", type=int, default=0, help="0 skips PostgreSQL")
    parser.add_argument("--sqlite-rows", type=int, default=1_000_000, help="0 skips SQLite")
    parser.add_argument("--sqlite-path", default="/tmp/driftmon_bench_seasonal.db")
    parser.add_argument("--reuse", action="store_true", help="keep a table that already has the rows")
    args = parser.parse_args(argv)
    for title, url, engine in incremental.databases(args):
        report(title, bench(url, engine))
    print(f"\n(measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")


if __name__ == "__main__":
    main()
