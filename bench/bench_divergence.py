"""Benchmark: driftmon's divergence engine against scipy and numpy.

    python bench/bench_divergence.py [--threads N] [--device cpu|cuda] [--quick] [--rounds N]
    python bench/bench_divergence.py --large [--sizes F ...] [--bins B ...] ...
    python bench/bench_divergence.py --g-only [--baseline DIR] ...

By default it times the engine at the daemon's shapes (issue 25): what
``pipeline.compute_statistics`` passes for one monitor, float64 numpy counts
with the mask of real bins and ``whole_counts=True``, F = 24 and 50 columns,
B = 22 bins (categorical top 20 + ``__other__`` + ``__missing__``; numeric
columns have 11 real bins or fewer), a 7-day reference of ~2.9 M rows per
column against a 5-minute window of ~8,700 (``daemon_counts``), some bins
empty. Side by side, interleaved round after round on the same inputs: the
engine with its G-test (the daemon's call) and without it, a masked numpy
version of KL, PSI and JS, a per-column scipy loop (``scipy.stats.entropy``
both ways, ``scipy.spatial.distance.jensenshannon ** 2``) and a per-column
``chi2_contingency`` G loop; their ratios; and the largest differences of the
engine's values from numpy's and scipy's (KL, PSI, JS absolute, G relative),
which must be within 1e-9 (the script exits 1 otherwise).

``--large`` (implied by ``--sizes``) runs the earlier table instead, on int64
Poisson(50) counts at F = 100 ... 100 000, B = 10 and 64:

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
import os
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
from tests.daemonshapes import REFERENCE_ROWS, WINDOW_ROWS, daemon_counts  # noqa: E402

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


def _ratio(slow: float | None, fast: float, digits: int = 1) -> str:
    return "-" if slow is None else f"{slow / fast:,.{digits}f}x"


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
# The daemon's shapes (issue 25): what compute_statistics passes
# --------------------------------------------------------------------------

# The daemon's call: float64 counts as numpy arrays (WindowCounts), the mask of real bins, whole counts
# (events sources count with SQL COUNT), F = the monitor's columns, B = the widest column's bins.
DAEMON_SHAPES = ((24, 22), (50, 22))
EQUAL_TO = 1e-9


def numpy_masked(reference: np.ndarray, current: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """KL, PSI and JS ([3, F]) of padded rows with whole-array numpy (three logs per bin), padding dropped."""
    real = mask.sum(axis=1)

    def shares(counts):
        return np.where(mask, (counts + ALPHA) / (counts.sum(axis=1) + ALPHA * real)[:, None], 0.0)

    p, q = shares(reference), shares(current)
    log_p, log_q = np.log(np.where(mask, p, 1.0)), np.log(np.where(mask, q, 1.0))
    log_m = np.log(np.where(mask, 0.5 * (p + q), 1.0))
    log_ratio = log_p - log_q
    kl = np.einsum("fb,fb->f", p, log_ratio)
    psi = np.einsum("fb,fb->f", p - q, log_ratio)
    js = 0.5 * (np.einsum("fb,fb->f", p, log_p - log_m) + np.einsum("fb,fb->f", q, log_q - log_m))
    return np.stack([kl, psi, js])


def scipy_masked_loop(reference: np.ndarray, current: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """KL, PSI and JS ([3, F]) one column at a time on its real bins: ``entropy`` both ways, ``jensenshannon ** 2``."""
    out = np.empty((3, len(reference)))
    for row, real in enumerate(mask):
        ref, cur = reference[row, real], current[row, real]
        p = (ref + ALPHA) / (ref.sum() + ALPHA * ref.size)
        q = (cur + ALPHA) / (cur.sum() + ALPHA * cur.size)
        kl = entropy(p, q)
        out[:, row] = kl, kl + entropy(q, p), jensenshannon(p, q) ** 2
    return out


def scipy_g_masked_loop(reference: np.ndarray, current: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """G (uncorrected) per column on its non-empty bins: ``chi2_contingency(..., lambda_="log-likelihood")``."""
    out = np.empty(len(reference))
    for row, real in enumerate(mask):
        table = np.stack([reference[row, real], current[row, real]])
        table = table[:, table.sum(axis=0) > 0]
        out[row] = chi2_contingency(table, correction=False, lambda_="log-likelihood").statistic
    return out


def measure_daemon_shape(features: int, bins: int, setting: str, rounds: int, sync) -> dict:
    """Median seconds of every contender on the same inputs, round after round, and the largest differences.

    The engine is called exactly as ``pipeline.compute_statistics`` calls it:
    numpy float64 arrays in (their conversion is part of the daemon's call),
    the mask, ``whole_counts=True``, the device setting as configured
    (``setting``: "auto" by default), with the G-test and without it. Each
    round calls every contender twice in a row: the first call runs after
    the other contenders' work has taken the caches (``cold``: as in the
    daemon, where SQL, slice sums and the store run between two engine
    calls), the second right after the first (``warm``: back to back). At
    these sizes the two differ by more than the arithmetic costs.
    """
    reference, current, mask = daemon_counts(features, bins)

    def engine(significance: bool):
        return lambda: divergences(
            reference, current, mask, device=setting, whole_counts=True, significance=significance
        )

    contenders = {
        "engine": engine(True),
        "engine_nog": engine(False),
        "numpy": lambda: numpy_masked(reference, current, mask),
        "scipy": lambda: scipy_masked_loop(reference, current, mask),
        "scipy_g": lambda: scipy_g_masked_loop(reference, current, mask),
    }
    for fn in contenders.values():
        fn()  # warm-up: tables, workspace, CUDA context
    times = {(name, state): [] for name in contenders for state in ("cold", "warm")}
    for round_ in range(rounds):
        # Alternate the order so that no contender always follows the same one.
        for name, fn in contenders.items() if round_ % 2 == 0 else reversed(contenders.items()):
            times[name, "cold"].append(timed(fn, sync))
            times[name, "warm"].append(timed(fn, sync))
    row = {f"{name} {state}": statistics.median(values) for (name, state), values in times.items()}
    result = contenders["engine"]()
    values = engine_values(result)
    row["numpy_diff"] = float(np.abs(values - numpy_masked(reference, current, mask)).max())
    row["scipy_diff"] = float(np.abs(values - scipy_masked_loop(reference, current, mask)).max())
    g_scipy = scipy_g_masked_loop(reference, current, mask)
    row["g_diff"] = float((np.abs(result.g_statistic.numpy() - g_scipy) / np.maximum(g_scipy, 1.0)).max())
    return row


DAEMON_COLUMNS = [
    ("F", 4),
    ("B", 3),
    ("calls", 6),
    ("engine", 9),
    ("engine no G", 12),
    ("numpy", 8),
    ("scipy loop", 11),
    ("scipy G loop", 13),
    ("numpy/no G", 11),
    ("scipy/no G", 11),
    ("scipyG/engine", 14),
    ("(scipy+G)/engine", 17),
]


def format_daemon_rows(features: int, bins: int, t: dict) -> list[str]:
    lines = []
    for state in ("cold", "warm"):
        def ms(name, state=state):
            return t[f"{name} {state}"]

        cells = [
            str(features),
            str(bins),
            state,
            _ms(ms("engine")),
            _ms(ms("engine_nog")),
            _ms(ms("numpy")),
            _ms(ms("scipy")),
            _ms(ms("scipy_g")),
            _ratio(ms("numpy"), ms("engine_nog"), 2),
            _ratio(ms("scipy"), ms("engine_nog"), 2),
            _ratio(ms("scipy_g"), ms("engine"), 2),
            _ratio(ms("scipy") + ms("scipy_g"), ms("engine"), 2),
        ]
        lines.append(" ".join(cell.rjust(width) for cell, (_, width) in zip(cells, DAEMON_COLUMNS, strict=True)))
    return lines


def run_daemon_shapes(args, setting: str, device: torch.device, sync) -> bool:
    """The default table; True when every difference is within ``EQUAL_TO``."""
    print(
        f"driftmon divergence benchmark, the daemon's shapes: torch {torch.__version__}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}, python {platform.python_version()}"
    )
    print(
        f"device {setting!r} ({device}), torch threads {torch.get_num_threads()}; float64 counts with a mask, "
        "whole_counts=True, "
        f"reference {REFERENCE_ROWS:,} rows per column, window {WINDOW_ROWS:,}; times in ms, medians of "
        f"{args.repeats['daemon']} interleaved rounds. engine = divergences() as compute_statistics calls it "
        "(KL, PSI, JS + G-test); numpy / scipy loop = KL, PSI, JS only; scipy G loop = chi2_contingency per column"
    )
    print("cold = the first of two calls in a row, after the other contenders ran; warm = the second")
    print(" ".join(name.rjust(width) for name, width in DAEMON_COLUMNS))
    equal, differences = True, []
    for features, bins in DAEMON_SHAPES:
        row = measure_daemon_shape(features, bins, setting, args.repeats["daemon"], sync)
        print("\n".join(format_daemon_rows(features, bins, row)), flush=True)
        differences.append((features, bins, row["numpy_diff"], row["scipy_diff"], row["g_diff"]))
    for features, bins, *diffs in differences:
        print(f"F={features} B={bins}: largest |engine - numpy| {diffs[0]:.1e}, |engine - scipy| {diffs[1]:.1e} "
              f"(KL, PSI, JS); G relative to scipy's {diffs[2]:.1e}")
        equal = equal and max(diffs) <= EQUAL_TO
    print(f"equal to {EQUAL_TO:g} (KL, PSI, JS absolute; G relative): {'yes' if equal else 'NO'}")
    return equal


# --------------------------------------------------------------------------
# Threads: 1 against 2, on a quiet machine and beside a busy database
# --------------------------------------------------------------------------

# The daemon's shapes, a segmented monitor's batch (52 segments x 24 columns, bench_segments.py) and a large one.
THREAD_SHAPES = ((24, 22), (50, 22), (1_273, 52), (10_000, 64))


def measure_threads(setting: str, rounds: int, sync) -> dict[tuple[int, int], tuple[float, float]]:
    """Median seconds of the daemon's call with 1 and with 2 torch threads, per shape, side by side.

    torch's thread count is process-wide, so the two settings take turns
    round after round (the order alternating); after each switch one call is
    left untimed (the pool starts), then three are timed and their median kept.
    """
    inputs = {shape: daemon_counts(*shape) for shape in THREAD_SHAPES}
    samples = {(shape, threads): [] for shape in THREAD_SHAPES for threads in (1, 2)}
    for round_ in range(rounds):
        for threads in (1, 2) if round_ % 2 == 0 else (2, 1):
            torch.set_num_threads(threads)
            for shape, (reference, current, mask) in inputs.items():
                def call(reference=reference, current=current, mask=mask):
                    return divergences(reference, current, mask, device=setting, whole_counts=True)

                call()
                samples[shape, threads].append(statistics.median(timed(call, sync) for _ in range(3)))
    return {shape: tuple(statistics.median(samples[shape, t]) for t in (1, 2)) for shape in THREAD_SHAPES}


class DatabaseLoad:
    """``sessions`` PostgreSQL sessions each running CPU-bound queries back to back, in threads, until stopped.

    Every wait is bounded: connecting (10 s), each query (``statement_timeout``),
    the number of queries per session, and the join on stop (the running
    queries are cancelled first).
    """

    QUERY = "SELECT sum(sqrt(i)) FROM generate_series(1, 20000000) AS i"

    def __init__(self, url: str, sessions: int, max_queries: int = 1_000):
        import threading

        import psycopg

        conninfo = url.replace("postgresql+psycopg://", "postgresql://")
        self.connections = [psycopg.connect(conninfo, connect_timeout=10, autocommit=True) for _ in range(sessions)]
        self.stop = threading.Event()
        self.max_queries = max_queries
        self.threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in self.connections]

    def _run(self, connection) -> None:
        import psycopg

        connection.execute("SET statement_timeout = '60s'")
        for _ in range(self.max_queries):
            if self.stop.is_set():
                return
            try:
                connection.execute(self.QUERY).fetchall()
            except psycopg.Error:
                return  # cancelled on stop, or timed out

    def __enter__(self) -> DatabaseLoad:
        for thread in self.threads:
            thread.start()
        time.sleep(2.0)  # the queries under way
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for connection in self.connections:
            connection.cancel_safe(timeout=5)
        for thread in self.threads:
            thread.join(timeout=30)
        for connection in self.connections:
            connection.close()


def _load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def run_threads_compare(args, setting: str, sync) -> None:
    """The table of 1 against 2 threads: on the machine as it is, then beside ``--load-sessions`` busy sessions."""
    rounds = args.rounds or (11 if args.quick else 41)
    conditions = [("no database load", None)]
    if args.load_url:
        conditions.append((f"{args.load_sessions} busy PostgreSQL sessions", args.load_url))
    print(
        f"torch threads 1 against 2, the daemon's call (float64, mask, whole_counts, G-test), device {setting!r}; "
        f"{rounds} rounds, the settings taking turns; medians in ms; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    print("| condition | load average (1 min) | F x B | 1 thread | 2 threads | 2 threads / 1 thread |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for title, url in conditions:
        if url is None:
            load, times = _load_average(), measure_threads(setting, rounds, sync)
        else:
            with DatabaseLoad(url, args.load_sessions):
                load, times = _load_average(), measure_threads(setting, rounds, sync)
                load = f"{load} -> {_load_average()}"
        for (features, bins), (one, two) in times.items():
            cells = f"{features:,} x {bins} | {one * 1e3:.3f} | {two * 1e3:.3f} | {two / one:.2f}x"
            print(f"| {title} | {load} | {cells} |", flush=True)
    torch.set_num_threads(args.threads)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1)")
    parser.add_argument(
        "--device", help="auto, cpu, cuda or cuda:N (default: auto, compute.device's default, at the daemon's "
        "shapes, passed to the engine as given; cpu with --large and --g-only)")
    parser.add_argument("--large", action="store_true", help="the large int64 table (F up to 100 000, B 10 and 64)")
    parser.add_argument("--sizes", type=int, nargs="+", help="row counts F to run (implies --large)")
    parser.add_argument("--bins", type=int, nargs="+", default=[10, 64], help="bin counts B (with --large)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of the engine (21; 5 with --quick)")
    parser.add_argument("--g-only", action="store_true", help="only the G-test's cost, null and drifted")
    parser.add_argument("--baseline", metavar="DIR", help="with --g-only: also time the checkout in DIR, interleaved")
    parser.add_argument("--cases", nargs="+", choices=list(G_CASES), help="with --g-only: the count cases (all)")
    parser.add_argument("--threads-compare", action="store_true", help="1 against 2 torch threads, at THREAD_SHAPES")
    parser.add_argument("--load-url", help="with --threads-compare: also beside busy sessions of this PostgreSQL")
    parser.add_argument("--load-sessions", type=int, default=2, help="busy sessions for --load-url (2)")
    args = parser.parse_args(argv)
    args.repeats = {"engine": 5, "numpy": 3, "scipy": 1} if args.quick else {"engine": 21, "numpy": 11, "scipy": 3}
    # Calls of a fraction of a millisecond: many rounds, so that the medians settle.
    args.repeats["daemon"] = 101 if args.quick else 1001
    if args.rounds is not None:
        args.repeats["engine"] = max(args.rounds, args.repeats["scipy"])
        args.repeats["daemon"] = args.rounds
    args.large = args.large or args.sizes is not None
    return args


def default_sizes(args, device: torch.device) -> list[int]:
    sizes = [100, 1_000, 10_000] if args.quick else [100, 1_000, 10_000, 100_000]
    return sizes + [1_000_000] if device.type == "cuda" else sizes


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    set_threads(args.threads)
    setting = args.device or ("cpu" if args.large or args.g_only else "auto")
    device = resolve_device(setting)
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
    if args.threads_compare:
        run_threads_compare(args, setting, sync)
        return
    if not args.large:
        if not run_daemon_shapes(args, setting, device, sync):
            raise SystemExit(1)
        return
    print_header(args, device)
    for rows in args.sizes or default_sizes(args, device):
        for bins in args.bins:
            print(format_row(rows, bins, measure_size(rows, bins, device, args.repeats, sync)), flush=True)
    print(f"scipy loop skipped above {SCIPY_MAX_ROWS:,} rows; numpy above {NUMPY_MAX_ROWS:,}.")
    print_overhead(device, sync)


if __name__ == "__main__":
    main()
