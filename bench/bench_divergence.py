"""Benchmark: driftmon's divergence engine against scipy and numpy.

    python bench/bench_divergence.py [--threads N] [--device cpu|cuda]
                                     [--sizes F ...] [--bins B ...] [--quick]
                                     [--rounds N] [--g-only [--baseline DIR]]

For every F (rows = columns of a monitor) and B (bins) it prints the median
time of one call computing KL, PSI and JS for all rows with pseudo-count
smoothing (alpha 0.5):

* the engine, float64 and float32, on the chosen device (inputs already there),
  with the G-test (the default), and float64 without it (``significance=False``):
  "G cost" is what the test adds on the drifted counts, "G null" on counts
  with no drift (G ~ dof, where the survival function is dearest);
* a per-column loop of scipy's G-test (``chi2_contingency``, log-likelihood),
  skipped above 10 000 rows;
* a per-column loop of scipy (``entropy`` both ways, ``jensenshannon ** 2``),
  skipped above 10 000 rows;
* a hand-vectorised numpy version of the same three statistics, written the
  idiomatic way, and the same code reusing preallocated buffers (on the
  reference box, first-touch page faults of fresh temporaries cost more than
  the arithmetic, so both are shown);

with the speed-ups over float64 (and float32) side by side and the effective
bandwidth: bytes of input read (two int64 count tables) over time. Then the
fixed overhead of one call with F = 1. Torch runs on 1 thread unless told.
Not a test: numbers depend on the machine and what else runs on it.

``--g-only`` times just the G-test's cost: the float64 engine with and
without it, on null and on drifted counts, all interleaved round after round
(``--rounds``, default 21), as wall-clock and as this thread's CPU time (on a
shared machine the CPU time is the steadier of the two), and prints the ratio
engine-with-test / engine-without-test of each. It runs on the counts the
pipeline passes (``--cases``, default all of ``G_CASES``): float64 arrays of
whole counts, small (Poisson(50)), up to about 1,000 per bin, and a week-sized
reference (~20,000 per bin) against an hour-sized current window (~200 per
bin); and, for comparison, the small Poisson(50) counts as int64, the only
kind that took the G-test's lookup tables before (issue 14). ``--baseline DIR``
adds another checkout's engine (DIR holds its ``driftmon`` package, e.g. a
``git worktree`` or ``git archive HEAD driftmon | tar -x -C DIR``) to the same
rounds, with and without its test: before and after, side by side. For example

    python bench/bench_divergence.py --g-only --sizes 10000 --bins 64 --rounds 31 --baseline ../before
"""

from __future__ import annotations

import argparse
import importlib
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, entropy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from driftmon.stats.divergence import divergences, resolve_device, set_threads  # noqa: E402

ALPHA = 0.5
SCIPY_MAX_ROWS = 10_000
NUMPY_MAX_ROWS = 100_000


# --------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------


def scipy_loop(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """One column at a time, as a straightforward implementation would do it."""
    out = np.empty((3, len(reference)))
    for row, (ref, cur) in enumerate(zip(reference, current, strict=True)):
        p = (ref + ALPHA) / (ref.sum() + ALPHA * ref.size)
        q = (cur + ALPHA) / (cur.sum() + ALPHA * cur.size)
        kl = entropy(p, q)
        out[:, row] = kl, kl + entropy(q, p), jensenshannon(p, q) ** 2
    return out


def scipy_g_loop(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The G-test one column at a time: ``chi2_contingency`` with the log-likelihood ratio."""
    out = np.empty(len(reference))
    for row, (ref, cur) in enumerate(zip(reference, current, strict=True)):
        table = np.stack([ref, cur])
        table = table[:, table.sum(axis=0) > 0]
        out[row] = chi2_contingency(table, correction=False, lambda_="log-likelihood").pvalue
    return out


def numpy_vectorised(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """All rows at once with whole-array numpy operations (three logs per bin)."""
    p, q = _numpy_smoothed(reference), _numpy_smoothed(current)
    log_p, log_q = np.log(p), np.log(q)
    m = 0.5 * (p + q)
    log_m = np.log(m)
    log_ratio = log_p - log_q
    kl = np.einsum("fb,fb->f", p, log_ratio)
    psi = np.einsum("fb,fb->f", p - q, log_ratio)
    js = 0.5 * (np.einsum("fb,fb->f", p, log_p - log_m) + np.einsum("fb,fb->f", q, log_q - log_m))
    return np.stack([kl, psi, js])


def _numpy_smoothed(counts: np.ndarray) -> np.ndarray:
    counts = counts.astype(np.float64)
    return (counts + ALPHA) * (1.0 / (counts.sum(axis=1) + ALPHA * counts.shape[1]))[:, None]


def numpy_reused(shape: tuple[int, int]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The same computation writing into six buffers allocated once."""
    p, q, log_p, log_q, log_m, tmp = (np.empty(shape) for _ in range(6))

    def run(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
        for counts, out in ((reference, p), (current, q)):
            out[...] = counts
            out += ALPHA
            out *= (1.0 / (counts.sum(axis=1) + ALPHA * shape[1]))[:, None]
        np.log(p, out=log_p)
        np.log(q, out=log_q)
        np.add(p, q, out=tmp)
        np.multiply(tmp, 0.5, out=tmp)
        np.log(tmp, out=log_m)
        log_ratio = np.subtract(log_p, log_q, out=log_p)
        kl = np.einsum("fb,fb->f", p, log_ratio)
        psi = np.einsum("fb,fb->f", np.subtract(p, q, out=tmp), log_ratio)
        p_over_m = np.subtract(np.add(log_ratio, log_q, out=log_p), log_m, out=log_p)
        q_over_m = np.subtract(log_q, log_m, out=log_q)
        js = 0.5 * (np.einsum("fb,fb->f", p, p_over_m) + np.einsum("fb,fb->f", q, q_over_m))
        return np.stack([kl, psi, js])

    return run


# --------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------


def timed(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    """Wall time of one call; ``sync`` waits for queued device work."""
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def make_counts(rows: int, bins: int, seed: int = 0, drifted: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Poisson counts (~50 per bin); the current window drifts bin by bin, or not at all."""
    rng = np.random.default_rng(seed)
    drift = 50 * (1 + 0.3 * np.sin(np.arange(bins))) if drifted else 50
    return rng.poisson(50, (rows, bins)), rng.poisson(drift, (rows, bins))


def _drift(bins: int, drifted: bool) -> np.ndarray | float:
    return 1 + 0.3 * np.sin(np.arange(bins)) if drifted else 1.0


def _poisson50(rng, rows, bins, drifted):
    return rng.poisson(50, (rows, bins)), rng.poisson(50 * _drift(bins, drifted), (rows, bins))


def _up_to_1000(rng, rows, bins, drifted):
    means = rng.uniform(0, 1_000, (rows, bins))  # every row its own shape: shares from 0 to ~3 %
    return rng.poisson(means), rng.poisson(means * _drift(bins, drifted))


def _week_and_hour(rng, rows, bins, drifted):
    return rng.poisson(20_000, (rows, bins)), rng.poisson(200 * _drift(bins, drifted), (rows, bins))


# The counts the G-test is timed on: name -> (draw(rng, rows, bins, drifted), dtype). The pipeline
# passes float64 arrays (window counts come back from SQL and from stored profiles as floats).
G_CASES: dict[str, tuple[Callable, np.dtype]] = {
    "poisson50-int64": (_poisson50, np.int64),
    "poisson50-float64": (_poisson50, np.float64),
    "upto1000-float64": (_up_to_1000, np.float64),
    "ref20000-cur200-float64": (_week_and_hour, np.float64),
}


def make_case(case: str, rows: int, bins: int, drifted: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Both windows of one of ``G_CASES``, in its dtype."""
    draw, dtype = G_CASES[case]
    return tuple(counts.astype(dtype) for counts in draw(np.random.default_rng(seed), rows, bins, drifted))


def engine_runner(
    reference, current, device: torch.device, dtype: torch.dtype, significance: bool = True, fn=None, **options
):
    ref = torch.as_tensor(reference, device=device)
    cur = torch.as_tensor(current, device=device)
    fn = fn or divergences
    return lambda: fn(ref, cur, device=device, dtype=dtype, significance=significance, **options)


def baseline_divergences(checkout: str) -> Callable:
    """``divergences`` of another checkout of driftmon (the directory that holds its ``driftmon`` package).

    Its modules are imported afresh from ``checkout`` and then set aside, so
    that both versions run in one process and can be timed round by round.
    """

    def loaded() -> dict:
        return {name: module for name, module in sys.modules.items() if name.split(".")[0] == "driftmon"}

    ours = loaded()
    for name in ours:
        del sys.modules[name]
    sys.path.insert(0, str(Path(checkout).resolve()))
    try:  # checkouts from before driftmon/stats/ have the engine at the top of the package
        try:
            module = importlib.import_module("driftmon.stats.divergence")
        except ModuleNotFoundError:
            module = importlib.import_module("driftmon.divergence")
    finally:
        del sys.path[0]
        for name in loaded():
            del sys.modules[name]
        sys.modules.update(ours)
    if Path(checkout).resolve() not in Path(module.__file__).resolve().parents:
        raise SystemExit(f"--baseline {checkout}: no driftmon package there")
    return module.divergences


def engine_values(result) -> np.ndarray:
    return torch.stack([result.kl, result.psi, result.js]).numpy()


def measure_size(rows, bins, device, repeats, sync) -> dict[str, float | None]:
    """Median times (seconds) of every contender for one size, plus the float64 agreement.

    Contenders take turns, round after round, so that load from other processes
    on a shared machine falls on all of them alike.
    """
    reference, current = make_counts(rows, bins)
    null_reference, null_current = make_counts(rows, bins, drifted=False)
    contenders = {
        "f64": engine_runner(reference, current, device, torch.float64),
        "f32": engine_runner(reference, current, device, torch.float32),
        "f64_nog": engine_runner(reference, current, device, torch.float64, significance=False),
        "f64_null": engine_runner(null_reference, null_current, device, torch.float64),
        "f64_nog_null": engine_runner(null_reference, null_current, device, torch.float64, significance=False),
    }
    if rows <= NUMPY_MAX_ROWS:
        reused = numpy_reused(reference.shape)
        contenders["numpy"] = lambda: numpy_vectorised(reference, current)
        contenders["numpy_reused"] = lambda: reused(reference, current)
    for fn in contenders.values():
        fn()  # warm-up: tables, workspace, CUDA context
    times = {name: [] for name in contenders}
    scipy_rounds = set(np.linspace(0, repeats["engine"] - 1, repeats["scipy"]).round().astype(int).tolist())
    if rows <= SCIPY_MAX_ROWS:
        times["scipy"], times["scipy_g"] = [], []
        scipy_loop(reference[:10], current[:10])  # warm-up on a slice: the loop is slow
        scipy_g_loop(reference[:10], current[:10])
    for round_ in range(repeats["engine"]):
        for name, fn in contenders.items():
            times[name].append(timed(fn, sync))
        if "scipy" in times and round_ in scipy_rounds:
            times["scipy"].append(timed(lambda: scipy_loop(reference, current), _no_sync))
            times["scipy_g"].append(timed(lambda: scipy_g_loop(reference, current), _no_sync))
    names = ("f64", "f32", "f64_nog", "f64_null", "f64_nog_null", "scipy", "scipy_g", "numpy", "numpy_reused", "diff")
    row = dict.fromkeys(names)
    row.update({name: statistics.median(values) for name, values in times.items()})
    if rows <= NUMPY_MAX_ROWS:
        engine = engine_values(contenders["f64"]())
        row["diff"] = float(np.abs(engine - numpy_vectorised(reference, current)).max())
    return row


def _no_sync() -> None:
    pass


def measure_g_cost(rows, bins, device, rounds, sync, baseline=None, cases=None) -> dict[tuple, tuple[float, float]]:
    """(wall, CPU) median seconds of the float64 engine with and without the G-test, per count case,
    null and drifted, keyed (case, data, variant).

    With a ``baseline`` (another checkout's ``divergences``), its runs with
    and without the test take their turns in the same rounds.
    """
    contenders = {}
    for case in cases or G_CASES:
        for data, drifted in (("null", False), ("drift", True)):
            reference, current = make_case(case, rows, bins, drifted)
            # As the pipeline calls it on an events source's counts (whole, from SQL COUNT).
            whole = {"whole_counts": True} if reference.dtype.kind == "f" else {}
            for name, significance in (("with", True), ("without", False)):
                contenders[case, data, name] = engine_runner(
                    reference, current, device, torch.float64, significance, **whole
                )
                if baseline is not None:
                    contenders[case, data, f"baseline {name}"] = engine_runner(
                        reference, current, device, torch.float64, significance, baseline
                    )
    for fn in contenders.values():
        fn()
    wall = {key: [] for key in contenders}
    cpu = {key: [] for key in contenders}
    for round_ in range(rounds):
        # Alternate the order so that neither variant always follows the other.
        for key, fn in contenders.items() if round_ % 2 == 0 else reversed(contenders.items()):
            sync()
            start, start_cpu = time.perf_counter(), time.thread_time()
            fn()
            sync()
            cpu[key].append(time.thread_time() - start_cpu)
            wall[key].append(time.perf_counter() - start)
    return {key: (statistics.median(wall[key]), statistics.median(cpu[key])) for key in contenders}


def print_g_cost(rows, bins, times: dict[tuple, tuple[float, float]]) -> None:
    """One line per case, data and version: with / without the test, and their ratio (wall and CPU)."""
    baseline = any(key[2] == "baseline with" for key in times)
    versions = ("", "baseline ") if baseline else ("",)
    cases = dict.fromkeys(key[0] for key in times)
    for case in cases:
        for data in ("null", "drift"):
            for version in versions:
                (with_wall, with_cpu), (without_wall, without_cpu) = (
                    times[case, data, version + w] for w in ("with", "without")
                )
                print(
                    f"F={rows:,} B={bins} {case:24s} {data:5s} {version.strip() or 'this':8s}: with G "
                    f"{_ms(with_wall)} ms, without {_ms(without_wall)} ms, ratio {with_wall / without_wall:.3f} "
                    f"(CPU time: {_ms(with_cpu)} / {_ms(without_cpu)} ms, ratio {with_cpu / without_cpu:.3f})",
                    flush=True,
                )


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------

COLUMNS = [
    ("F", 9),
    ("B", 4),
    ("engine f64", 11),
    ("f64 no G", 9),
    ("G cost", 7),
    ("G null", 7),
    ("scipy G", 9),
    ("scipyG/f64", 11),
    ("engine f32", 11),
    ("scipy loop", 11),
    ("numpy", 9),
    ("numpy reused", 13),
    ("scipy/f64", 10),
    ("numpy/f64", 10),
    ("reused/f64", 11),
    ("numpy/f32", 10),
    ("GB/s f64", 9),
    ("GB/s f32", 9),
    ("|f64-numpy|", 12),
]


def format_row(rows: int, bins: int, t: dict[str, float | None]) -> str:
    input_bytes = 2 * rows * bins * 8
    cells = [
        f"{rows:,}",
        str(bins),
        _ms(t["f64"]),
        _ms(t["f64_nog"]),
        f"{(t['f64'] / t['f64_nog'] - 1) * 100:+.0f}%",
        f"{(t['f64_null'] / t['f64_nog_null'] - 1) * 100:+.0f}%",
        _ms(t["scipy_g"], f"skip>{SCIPY_MAX_ROWS // 1000}k"),
        _ratio(t["scipy_g"], t["f64"]),
        _ms(t["f32"]),
        _ms(t["scipy"], f"skip>{SCIPY_MAX_ROWS // 1000}k"),
        _ms(t["numpy"]),
        _ms(t["numpy_reused"]),
        _ratio(t["scipy"], t["f64"]),
        _ratio(t["numpy"], t["f64"]),
        _ratio(t["numpy_reused"], t["f64"]),
        _ratio(t["numpy"], t["f32"]),
        f"{input_bytes / t['f64'] / 1e9:.2f}",
        f"{input_bytes / t['f32'] / 1e9:.2f}",
        "-" if t["diff"] is None else f"{t['diff']:.1e}",
    ]
    return " ".join(cell.rjust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True))


def _ms(seconds: float | None, missing: str = "skipped") -> str:
    return missing if seconds is None else f"{seconds * 1e3:.3f}"


def _ratio(slow: float | None, fast: float) -> str:
    return "-" if slow is None else f"{slow / fast:,.1f}x"


def print_header(args, device: torch.device) -> None:
    print(
        f"driftmon divergence benchmark: torch {torch.__version__}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}, python {platform.python_version()}"
    )
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"device {device} ({where or platform.machine()}), torch threads "
        f"{torch.get_num_threads()}, numpy/scipy single-threaded code; times in ms, "
        f"median of {args.repeats['engine']} interleaved rounds ({args.repeats['scipy']} for scipy)"
    )
    print(
        "bandwidth = two int64 count tables read / engine time; |f64-numpy| = largest "
        "difference of the engine's float64 values from the numpy version"
    )
    print(" ".join(name.rjust(width) for name, width in COLUMNS))


def print_overhead(device, sync) -> None:
    """Fixed cost of one call: a single row, where the arithmetic is negligible."""
    for bins in (10, 64):
        reference, current = make_counts(1, bins)
        for dtype in (torch.float64, torch.float32):
            run = engine_runner(reference, current, device, dtype)
            run()
            seconds = statistics.median(timed(run, sync) for _ in range(201))
            print(f"fixed overhead, F=1 B={bins} {str(dtype)[6:]}: {seconds * 1e3:.3f} ms")


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--sizes", type=int, nargs="+", help="row counts F to run")
    parser.add_argument("--bins", type=int, nargs="+", default=[10, 64], help="bin counts B")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of the engine (21; 5 with --quick)")
    parser.add_argument("--g-only", action="store_true", help="only the G-test's cost, null and drifted")
    parser.add_argument("--baseline", metavar="DIR", help="with --g-only: also time the checkout in DIR, interleaved")
    parser.add_argument("--cases", nargs="+", choices=list(G_CASES), help="with --g-only: the count cases (all)")
    args = parser.parse_args(argv)
    args.repeats = {"engine": 5, "numpy": 3, "scipy": 1} if args.quick else {"engine": 21, "numpy": 11, "scipy": 3}
    if args.rounds is not None:
        args.repeats["engine"] = max(args.rounds, args.repeats["scipy"])
    return args


def default_sizes(args, device: torch.device) -> list[int]:
    sizes = [100, 1_000, 10_000] if args.quick else [100, 1_000, 10_000, 100_000]
    return sizes + [1_000_000] if device.type == "cuda" else sizes


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    # Device work is asynchronous: wait for it before reading the clock.
    sync = torch.cuda.synchronize if device.type == "cuda" else _no_sync
    if args.g_only:
        baseline = baseline_divergences(args.baseline) if args.baseline else None
        print(
            f"G-test cost, float64, torch threads {torch.get_num_threads()}, device {device}, "
            f"medians of {args.repeats['engine']} interleaved rounds"
        )
        for rows in args.sizes or default_sizes(args, device):
            for bins in args.bins:
                times = measure_g_cost(rows, bins, device, args.repeats["engine"], sync, baseline, args.cases)
                print_g_cost(rows, bins, times)
        return
    print_header(args, device)
    for rows in args.sizes or default_sizes(args, device):
        for bins in args.bins:
            print(format_row(rows, bins, measure_size(rows, bins, device, args.repeats, sync)), flush=True)
    print(f"scipy loop skipped above {SCIPY_MAX_ROWS:,} rows; numpy above {NUMPY_MAX_ROWS:,}.")
    print_overhead(device, sync)


if __name__ == "__main__":
    main()
