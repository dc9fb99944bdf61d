"""Benchmark of multivariate drift (issue #27): the steady cycle with ``multivariate`` on against
off, side by side, and NannyML's calculator on the same rows pulled into pandas.

Not a timed test: run it by hand (see bench/README.md).

    python bench/bench_multivariate.py [--pg-rows 10000000] [--reuse] [--cycles 12]
                                       [--nannyml-python /tmp/nmlbench/bin/python]

On the 24-column table of bench_sources.py (20 numeric columns with ~2 % NULLs, 3 categorical
columns of ~50 levels, a score; 8 days) two monitors with the same 24 features, a fixed 7-day
reference (the first 7 days), 1 h windows on a 5-minute schedule, one of them with
``multivariate: {}`` over all 24 columns, run tick by tick alternately through the 8th day's
hours: the first run (profile, fit and reference chunks, the window's slices) and the steady
cycle (median). The target: the steady cycle with multivariate on at most 1.5x the one without.

NannyML (only in its own virtualenv, never a driftmon dependency: ``python3 -m venv
/tmp/nmlbench && /tmp/nmlbench/bin/pip install nannyml statsmodels 'psycopg[binary]'``) reads the
reference and one 1 h window out of PostgreSQL with COPY into pandas, fits its
DataReconstructionDriftCalculator on the reference and calculates that window as one chunk; its
value is compared with driftmon's for the same window.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_incremental as incremental  # noqa: E402  Clock, timed_run, databases
import bench_sources as table_bench  # noqa: E402

from driftmon.config import ComputeConfig  # noqa: E402
from driftmon.config_file import parse_config  # noqa: E402
from driftmon.pipeline import Pipeline  # noqa: E402
from driftmon.stats.divergence import set_threads  # noqa: E402
from driftmon.store.database import EngineRegistry  # noqa: E402

START, DAY, HOUR, MINUTE = table_bench.START, timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)
REFERENCE_END = START + 7 * DAY
COLUMNS = [*table_bench.NUMERIC, *table_bench.CATEGORICAL, table_bench.SCORE]


def settings(url: str, multivariate: bool):
    features = ([{"column": c} for c in table_bench.NUMERIC]
                + [{"column": c, "type": "categorical", "top_k": 100} for c in table_bench.CATEGORICAL]
                + [{"column": table_bench.SCORE, "role": "prediction", "binning": "uniform", "range": [0, 1]}])
    monitor = {"name": "bench_mv_on" if multivariate else "bench_mv_off", "features": features,
               "source": {"kind": "events", "table": "inference_log", "timestamp_column": "ts"}}
    if multivariate:
        monitor["multivariate"] = {}
    raw = {"database": {"url": url},
           "defaults": {"schedule": {"every": "5m"}, "window": {"size": "1h"}, "lateness": "5m",
                        "reference": {"kind": "fixed", "start": START.isoformat(), "end": REFERENCE_END.isoformat()}},
           "monitors": [monitor]}
    return parse_config(raw, {}).resolved_monitors()[0]


def bench(url, engine, cycles: int) -> dict:
    end0 = START + 7 * DAY + 12 * HOUR
    clock = incremental.Clock(end0 + timedelta(seconds=1))
    pipe = Pipeline(engine, ComputeConfig(device="cpu"), EngineRegistry(), clock=clock)
    monitors = {"off": settings(url, False), "on": settings(url, True)}
    found = {}
    for kind, monitor in monitors.items():
        elapsed, outcome = incremental.timed_run(pipe, monitor, url, end0)
        found[kind] = {"first": elapsed, "steady": [], "statements": [], "rows": outcome.rows_scanned}
    for k in range(1, cycles + 1):
        end = end0 + k * 5 * MINUTE
        clock.now = end + timedelta(seconds=1)
        for kind in (("off", "on") if k % 2 else ("on", "off")):
            source = pipe.source_for(monitors[kind], url)
            before = source.statements
            elapsed, outcome = incremental.timed_run(pipe, monitors[kind], url, end)
            found[kind]["steady"].append(elapsed)
            found[kind]["statements"].append(source.statements - before)
            if kind == "on":
                found["last"] = {"end": end.isoformat(), "value": outcome.multivariate.reconstruction_error,
                                 "kl": outcome.multivariate.gaussian_kl}
    return found


NANNYML_SCRIPT = r"""
import io, json, sys, time
import pandas as pd, psycopg
from nannyml.drift.multivariate.data_reconstruction import DataReconstructionDriftCalculator
url, columns, reference, window = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
categorical = set(json.loads(sys.argv[5]))

def pull(connection, start, end):
    buffer = io.BytesIO()
    query = ("COPY (SELECT " + ", ".join(columns) + " FROM inference_log WHERE ts >= '" + start +
             "' AND ts < '" + end + "') TO STDOUT WITH (FORMAT csv, HEADER)")
    with connection.cursor().copy(query) as copy:
        for block in copy:
            buffer.write(block)
    buffer.seek(0)
    frame = pd.read_csv(buffer, dtype={c: "object" for c in categorical})
    return frame

with psycopg.connect(url) as connection:
    began = time.perf_counter()
    ref = pull(connection, *reference)
    read_reference = time.perf_counter() - began
    began = time.perf_counter()
    calc = DataReconstructionDriftCalculator(column_names=columns, chunk_number=1)
    calc.fit(ref)
    fit = time.perf_counter() - began
    began = time.perf_counter()
    cur = pull(connection, *window)
    read_window = time.perf_counter() - began
    began = time.perf_counter()
    result = calc.calculate(cur).filter(period="analysis").to_df()
    calculate = time.perf_counter() - began
value = float(result[("reconstruction_error", "value")].iloc[0])
print(json.dumps({"read_reference": read_reference, "fit": fit, "read_window": read_window,
                  "calculate": calculate, "value": value, "rows_reference": len(ref), "rows_window": len(cur)}))
"""


def nannyml(python: str, url: str, end: str) -> dict:
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    window_end = datetime.fromisoformat(end)
    arguments = [plain, json.dumps(COLUMNS), json.dumps([START.isoformat(), REFERENCE_END.isoformat()]),
                 json.dumps([(window_end - HOUR).isoformat(), window_end.isoformat()]),
                 json.dumps(table_bench.CATEGORICAL)]
    done = subprocess.run([python, "-c", NANNYML_SCRIPT, *arguments], capture_output=True, text=True, timeout=3600)
    if done.returncode:
        raise SystemExit(f"NannyML failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(title: str, found: dict, peer: dict | None) -> None:
    off, on = (statistics.median(found[k]["steady"]) for k in ("off", "on"))
    print(f"\n{title}, 1 h windows of {found['on']['rows']:,} rows, 24 columns\n")
    print("| monitor | first run | steady cycle (median) | source statements per steady cycle |")
    print("| --- | ---: | ---: | ---: |")
    for kind, label in (("off", "multivariate off"), ("on", "multivariate on")):
        f = found[kind]
        print(f"| {label} | {f['first']:,.1f} s | {statistics.median(f['steady']) * 1000:,.1f} ms | "
              f"{statistics.median(f['statements']):g} |")
    print(f"\nsteady cycle, on / off: **{on / off:.2f}x** (target <= 1.5x)")
    if peer:
        print(f"\nNannyML (window ending {found['last']['end']}): read reference {peer['read_reference']:.1f} s, "
              f"fit {peer['fit']:.1f} s, read window {peer['read_window'] * 1000:.0f} ms, "
              f"calculate {peer['calculate'] * 1000:.0f} ms; per window {peer['read_window'] + peer['calculate']:.3f} s"
              f" = {(peer['read_window'] + peer['calculate']) / on:.1f}x driftmon's steady cycle with multivariate; "
              f"value {peer['value']!r} against driftmon's {found['last']['value']!r} "
              f"(difference {abs(peer['value'] - found['last']['value']):.1e})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", default=table_bench.DEFAULT_URL)
    parser.add_argument("--pg-rows", type=int, default=10_000_000)
    parser.add_argument("--sqlite-rows", type=int, default=0, help="0 skips SQLite")
    parser.add_argument("--sqlite-path", default="/tmp/driftmon_bench_multivariate.db")
    parser.add_argument("--reuse", action="store_true", help="keep a table that already has the rows")
    parser.add_argument("--cycles", type=int, default=12)
    parser.add_argument("--nannyml-python", default=None, help="an interpreter with nannyml (PostgreSQL only)")
    args = parser.parse_args(argv)
    set_threads(ComputeConfig().threads)  # as the daemon does (app.open_app): one thread by default
    for title, url, engine in incremental.databases(args):
        found = bench(url, engine, args.cycles)
        peer = None
        if args.nannyml_python and engine.dialect.name == "postgresql":
            peer = nannyml(args.nannyml_python, url, found["last"]["end"])
        report(title, found, peer)
    print(f"\n(measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")


if __name__ == "__main__":
    main()
