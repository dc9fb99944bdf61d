"""Benchmark: ``driftmon.compare`` on two DataFrames against Evidently and a pandas + numpy loop (issue 26).

    .venv/bin/python bench/bench_compare.py [--rows 1000000] [--repeat 5] [--evidently-python PY]

Two seeded DataFrames of ``--rows`` rows x 24 columns (16 numeric with ~2 % NaN,
8 categorical of 5-40 values with ~1 % None; the current frame shifted in half
of its columns), then, side by side, the median of ``--repeat`` timed runs
(after one warm-up) of:

* ``driftmon.compare(reference, current)``: the daemon's binning and engine
  (quantile 10 bins, top 20 categories, KL/PSI/JS, G-test and q-values) with the
  frames registered in an in-process DuckDB;
* a plain pandas + numpy loop over the columns: numpy quantile edges and
  ``searchsorted`` counts (numeric), ``value_counts`` top 20 + other (categorical),
  a missing bin, pseudo-count smoothing and KL, the same rules as driftmon's (its
  KL must agree with driftmon's to 1e-9: the script exits 1 otherwise);
* Evidently's data-drift preset (``DataDriftPreset``, its default per-column
  tests) on the same frames, in Evidently's own interpreter (``--evidently-python``,
  default ``/tmp/evvenv/bin/python`` when it exists: Evidently is never a driftmon
  dependency; it needs pandas < 3), read from Parquet files this script writes.
  Skipped, saying why, where that interpreter or Evidently is missing.

Evidently in its own environment:

    python3 -m venv /tmp/evvenv && /tmp/evvenv/bin/pip install evidently 'pandas<3' pyarrow
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

NUMERIC, CATEGORICAL = 16, 8
DEFAULT_EVIDENTLY = "/tmp/evvenv/bin/python"


def make_frames(rows: int, seed: int = 26) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    sizes = [5 + 5 * i for i in range(CATEGORICAL)]
    weights = [rng.dirichlet(np.ones(size)) for size in sizes]  # the same categories' shares in both frames

    def frame(drifted: bool) -> pd.DataFrame:
        columns = {}
        for i in range(NUMERIC):
            shift = 0.15 * (i % 2) if drifted else 0.0
            values = rng.lognormal(3 + shift, 0.6, rows) if i % 3 == 0 else rng.normal(50 + 10 * shift, 10, rows)
            values[rng.random(rows) < 0.02] = np.nan
            columns[f"num_{i:02d}"] = values
        for i, size in enumerate(sizes):
            shares = np.roll(weights[i], 1) if drifted and i % 2 else weights[i]
            values = rng.choice([f"c{i}_{k}" for k in range(size)], rows, p=shares).astype(object)
            values[rng.random(rows) < 0.01] = None
            columns[f"cat_{i}"] = values
        return pd.DataFrame(columns)

    return frame(False), frame(True)


# --- the peers ----------------------------------------------------------------------------------


def pandas_numpy_kl(reference: pd.DataFrame, current: pd.DataFrame, alpha: float = 0.5) -> dict[str, float]:
    """KL(reference || current) per column, the README's rules in plain pandas + numpy."""
    out = {}
    for column in reference.columns:
        ref, cur = reference[column], current[column]
        if pd.api.types.is_numeric_dtype(ref.dtype):
            ref_values, cur_values = ref.to_numpy(), cur.to_numpy()
            ref_present, cur_present = ref_values[np.isfinite(ref_values)], cur_values[np.isfinite(cur_values)]
            cuts = np.unique(np.quantile(ref_present, np.arange(1, 10) / 10))
            p = np.bincount(np.searchsorted(cuts, ref_present, side="right"), minlength=len(cuts) + 1)
            q = np.bincount(np.searchsorted(cuts, cur_present, side="right"), minlength=len(cuts) + 1)
            extra = [(len(ref_values) - len(ref_present), len(cur_values) - len(cur_present))]
        else:
            counted = ref.value_counts()
            ranked = sorted(counted.items(), key=lambda pair: (-pair[1], pair[0]))[:20]
            top = [value for value, _ in ranked]
            p = np.array([n for _, n in ranked])
            q = cur.value_counts().reindex(top, fill_value=0).to_numpy()
            ref_missing, cur_missing = int(ref.isna().sum()), int(cur.isna().sum())
            extra = [(len(ref) - ref_missing - p.sum(), len(cur) - cur_missing - q.sum()), (ref_missing, cur_missing)]
        for r, c in extra:
            if r or c:
                p, q = np.append(p, r), np.append(q, c)
        p = (p + alpha) / (p.sum() + alpha * len(p))
        q = (q + alpha) / (q.sum() + alpha * len(q))
        out[column] = float(np.sum(p * np.log(p / q)))
    return out


def run_driftmon(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, float]:
    import driftmon

    frame = driftmon.compare(reference, current).to_df()
    return dict(zip(frame.feature, frame.kl, strict=True))


def timed(function, repeat: int, label: str = "") -> tuple[float, list[float], object]:
    value = function()  # warm-up: imports, DuckDB start, torch's first call
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - began)
        if label:  # progress on stderr: one Evidently run takes minutes
            print(f"{label}: run {len(times)} of {repeat}: {times[-1]:.1f} s", file=sys.stderr, flush=True)
    return statistics.median(times), times, value


# --- Evidently, in its own interpreter ---------------------------------------------------------


def evidently_worker(folder: str, repeat: int) -> None:
    import pandas as pd  # Evidently's pandas (< 3)

    reference = pd.read_parquet(Path(folder) / "reference.parquet")
    current = pd.read_parquet(Path(folder) / "current.parquet")
    numeric = [c for c in reference.columns if c.startswith("num_")]
    categorical = [c for c in reference.columns if c.startswith("cat_")]
    try:
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)

        def run():
            Report([DataDriftPreset()]).run(Dataset.from_pandas(current, data_definition=definition),
                                            Dataset.from_pandas(reference, data_definition=definition))
        api = "Report([DataDriftPreset()]) (0.7 API)"
    except ImportError:  # Evidently's legacy API
        from evidently.metric_preset import DataDriftPreset
        from evidently.pipeline.column_mapping import ColumnMapping
        from evidently.report import Report

        mapping = ColumnMapping(numerical_features=numeric, categorical_features=categorical)

        def run():
            Report(metrics=[DataDriftPreset()]).run(reference_data=reference, current_data=current,
                                                    column_mapping=mapping)
        api = "Report(metrics=[DataDriftPreset()]) (legacy API)"
    median, times, _ = timed(run, repeat, "Evidently")
    from importlib.metadata import version

    print("EVIDENTLY-RESULT " + json.dumps({"median_s": median, "times_s": times, "api": api,
                                            "evidently": version("evidently"), "pandas": pd.__version__}))


def run_evidently(python: str, reference: pd.DataFrame, current: pd.DataFrame, repeat: int,
                  timeout: float) -> tuple[dict | None, str]:
    if not Path(python).exists():
        return None, f"skipped: no interpreter at {python} (see this script's docstring)"
    check = subprocess.run([python, "-c", "import evidently"], capture_output=True, text=True)
    if check.returncode != 0:
        return None, f"skipped: {python} has no evidently"
    with tempfile.TemporaryDirectory() as folder:
        reference.to_parquet(Path(folder) / "reference.parquet")
        current.to_parquet(Path(folder) / "current.parquet")
        try:
            done = subprocess.run([python, __file__, "--evidently-worker", folder, "--repeat", str(repeat)],
                                  stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, f"skipped: over {timeout:.0f} s"
    for line in done.stdout.splitlines():
        if line.startswith("EVIDENTLY-RESULT "):
            return json.loads(line.split(" ", 1)[1]), "ok"
    tail = " | ".join(done.stdout.strip().splitlines()[-3:])
    return None, f"failed (exit {done.returncode}; its errors are above): {tail}"


# --- main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--evidently-python", default=DEFAULT_EVIDENTLY)
    parser.add_argument("--evidently-repeat", type=int, default=None,
                        help="timed Evidently runs (default: --repeat); one takes minutes at 1 M rows")
    parser.add_argument("--evidently-timeout", type=float, default=3600)
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--evidently-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.evidently_worker:
        evidently_worker(args.evidently_worker, args.repeat)
        return 0

    reference, current = make_frames(args.rows)
    print(f"{args.rows:,} rows x {reference.shape[1]} columns ({NUMERIC} numeric, {CATEGORICAL} categorical) "
          f"per frame; median of {args.repeat} after a warm-up; {os.cpu_count()} CPUs; pandas {pd.__version__}")
    ours, ours_times, kl = timed(lambda: run_driftmon(reference, current), args.repeat)
    loop, loop_times, loop_kl = timed(lambda: pandas_numpy_kl(reference, current), args.repeat)
    worst = max(abs(kl[c] - loop_kl[c]) for c in kl)
    rows = [("driftmon.compare (KL, PSI, JS, G-test, q)", ours, ours_times),
            ("pandas + numpy loop (KL only)", loop, loop_times)]
    evidently, note = (None, "skipped: --skip-evidently") if args.skip_evidently else \
        run_evidently(args.evidently_python, reference, current, args.evidently_repeat or args.repeat,
                      args.evidently_timeout)
    if evidently:
        rows.append((f"Evidently {evidently['evidently']} {evidently['api']}", evidently["median_s"],
                     evidently["times_s"]))
    print(f"{'path':<62} {'median s':>9} {'x driftmon':>11}   runs (s)")
    for name, median, times in rows:
        print(f"{name:<62} {median:>9.3f} {median / ours:>10.1f}x   {' '.join(f'{t:.2f}' for t in times)}")
    print(f"Evidently: {note}" + (f" (pandas {evidently['pandas']})" if evidently else ""))
    print(f"largest |KL(driftmon) - KL(pandas+numpy)| over the columns: {worst:.2e} (must be <= 1e-9)")
    return 0 if worst <= 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
