"""Divergence engine: KL, PSI and Jensen-Shannon for every column of a monitor.

Pure tensor math, no I/O and no config objects: two ``[F, B]`` tables of bin
counts (one row per watched column, padded to the widest column) go in, one
value per row and statistic comes out (SPEC.md section 3).

Why the code looks the way it does (measured on the 2-core reference box,
one thread, F = 10 000, B = 64):

* Logarithms dominate, and torch's float64 ``log`` is about 3x slower per
  element than numpy's, so the engine takes as few as the algebra allows.
  KL both ways and PSI need only ``log p - log q``. With pseudo-counts
  ``log p_i = log(c_i + alpha) - log Z``, ``Z = N + alpha * B``: the first
  term comes from a cached table for integer counts (a gather costs a quarter
  of a log), the second is one log per row. Other counts take one log,
  ``log(p / q)``, not two. JS adds one log per bin (``log``: torch's float64
  ``log1p`` is 2x slower still) through ``JS = PSI / 4 - sum(m log cosh(x / 2))``,
  ``x = log(p / q)``, with ``cosh^2(x / 2) = (p + q)^2 / 4pq``: built from sums
  and products only, so swapping the windows gives bit-identical values, and
  identical rows come out exactly 0.
* Everything else is passes over memory: per-row dots are ``bmm`` calls that
  read their operands once and write nothing big.
* Fresh multi-megabyte temporaries cost more than the arithmetic: first-touch
  page faults ran at about 1 ns per byte, so a version that allocated its
  intermediates was 2.3x slower than one that reuses them. Intermediates live
  in a per-thread workspace that keeps the largest size seen (4 x F x B
  elements, plus F x B int64 for the G-test's pair index or column totals,
  and 4 x F x B float64 more in a float32 call); ``release_workspace()``
  hands it back.
* The G-test (``driftmon.stats.significance``) runs after the engine in the same
  call, on the same device, and reuses its buffers. For small integer counts
  both windows' counts become one index per bin (``significance.pair_index``)
  before the engine runs: the test gathers its whole per-bin term with it,
  and the engine its log ratio, one gather where it takes two without the
  test (same values, bit for bit). ``significance=False`` skips it all.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from driftmon.stats.significance import GTest, PairIndex, g_test, pair_index

__all__ = [
    "Contributions",
    "DeviceUnavailableError",
    "Divergences",
    "contributions",
    "divergences",
    "release_workspace",
    "resolve_device",
    "set_threads",
    "statistic_names",
]

SMOOTHINGS = ("pseudocount", "epsilon")  # see _SMOOTHERS
KL_DIRECTIONS = ("reference_current", "current_reference")
_DTYPES = {"float64": torch.float64, "float32": torch.float32}
_WINDOWS = ("reference_counts", "current_counts")
_LN2 = math.log(2.0)

# Largest log table (entries): 2**18 float64 is 2 MiB, which still gathers in
# half the time of a log; larger counts take the log path.
_TABLE_MAX = 1 << 18
_TABLE_MIN = 1 << 10


class DeviceUnavailableError(ValueError):
    """The configured compute device does not exist on this machine."""


# --------------------------------------------------------------------------
# Threads and devices
# --------------------------------------------------------------------------


def set_threads(n: int) -> None:
    """Set torch's intra-op thread count for the whole process.

    Call once at start-up (``compute.threads``): torch's setting is
    process-wide, so it cannot be chosen per call. Never rely on torch's
    default of one thread per core: on a 2-core machine whose cores other
    processes keep busy, the daemon's call ran slower with 2 threads than
    with 1, by 6.5x (F = 10 000, B = 64) to 75x (F = 24, B = 22) at load
    average 6, and by 7x to 100x beside two busy PostgreSQL sessions
    (``bench/bench_divergence.py --threads-compare``, issue 25;
    oversubscription). On an idle machine 2 threads were 1.2-1.4x faster
    (issue 25), too little for that risk. The daemon gets its parallelism
    from running monitors side by side on a bounded pool instead.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    torch.set_num_threads(n)


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn ``auto | cpu | cuda | cuda:N`` into a device that exists.

    ``auto`` picks CUDA when available, else the CPU. Naming a CUDA device
    that is absent raises ``DeviceUnavailableError`` so the daemon can report
    a config error at start instead of failing on the first run.
    """
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError as exc:
        raise ValueError(_bad_device_message(name)) from exc
    if device.type == "cpu" and device.index is None:
        return device
    if device.type != "cuda":
        raise ValueError(_bad_device_message(name))
    _require_cuda(device)
    return device


def _bad_device_message(name: object) -> str:
    return f"unknown device {name!r}: expected auto, cpu, cuda or cuda:N"


def _require_cuda(device: torch.device) -> None:
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"device {str(device)!r} requested but CUDA is not available "
            f"(torch {torch.__version__}); use device 'cpu' or 'auto'"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceUnavailableError(f"device {str(device)!r} requested but only {count} CUDA device(s) exist")


# --------------------------------------------------------------------------
# Statistics, registered by name
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _RowTerms:
    """Per-row sums that every statistic is assembled from (float64, [F])."""

    kl_ref_cur: Tensor  # KL(P_reference || Q_current)
    kl_cur_ref: Tensor  # KL(Q_current || P_reference)
    psi: Tensor  # their sum
    mix: Tensor  # sum_i (p_i + q_i) * log(4 p_i q_i / (p_i + q_i)^2)
    kl_direction: str


_STATISTICS: dict[str, Callable[[_RowTerms], Tensor]] = {}


def _statistic(name: str):
    """Register a statistic: a plain function of the shared per-row terms."""

    def register(fn: Callable[[_RowTerms], Tensor]) -> Callable[[_RowTerms], Tensor]:
        _STATISTICS[name] = fn
        return fn

    return register


@_statistic("kl")
def _kl(terms: _RowTerms) -> Tensor:
    """KL divergence in nats, in the configured direction."""
    if terms.kl_direction == "reference_current":
        return terms.kl_ref_cur
    return terms.kl_cur_ref


@_statistic("psi")
def _psi(terms: _RowTerms) -> Tensor:
    """Population stability index: the symmetrised KL."""
    return terms.psi


@_statistic("js")
def _js(terms: _RowTerms) -> Tensor:
    """Jensen-Shannon divergence (not distance): PSI/4 - sum m log cosh(x/2), x = log(p/q).

    Between 0 and ln 2 and, by convexity of KL, at most PSI/4; the clamps only
    remove rounding beyond those bounds (and make identical rows exactly 0).
    """
    # 0.25 * (a + b) is exactly 0.25 * a + 0.25 * b: scaling by a power of 2 rounds nothing.
    return torch.minimum(terms.psi + terms.mix, terms.psi).mul_(0.25).clamp_(0.0, _LN2)


def statistic_names() -> tuple[str, ...]:
    """Names of the registered statistics, e.g. for config validation."""
    return tuple(sorted(_STATISTICS))


@dataclass(frozen=True)
class Divergences:
    """One value per row (column of a monitor); CPU float64 tensors of shape [F].

    ``valid`` is False where either window is empty; those rows hold ``nan``.
    ``g_statistic``, ``dof`` and ``p_value`` are the G-test of homogeneity on
    the raw counts (``driftmon.stats.significance.g_test``): ``g_statistic`` is the
    uncorrected G, ``p_value`` the decision's, with Williams' correction (and a
    permutation p-value for small tables), so not ``chi2.sf(g_statistic, dof)``;
    p is 1.0 where a window is empty or only one bin is non-empty (dof 0), and
    exactly 0.0 below 2.2e-308. All three are None when the call asked for no
    significance.
    """

    kl: Tensor
    psi: Tensor
    js: Tensor
    valid: Tensor
    g_statistic: Tensor | None = None
    dof: Tensor | None = None
    p_value: Tensor | None = None

    def get(self, name: str) -> Tensor:
        """The statistic called ``name``; unknown names list the valid ones."""
        if name not in _STATISTICS:
            valid = ", ".join(statistic_names())
            raise ValueError(f"unknown statistic {name!r}; valid statistics: {valid}")
        return getattr(self, name)


# --------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    smoothing: str
    alpha: float
    epsilon: float
    kl_direction: str
    device: torch.device
    dtype: torch.dtype


def divergences(
    reference_counts: Tensor | np.ndarray,
    current_counts: Tensor | np.ndarray,
    mask: Tensor | np.ndarray | None = None,
    *,
    smoothing: str = "pseudocount",
    alpha: float = 0.5,
    epsilon: float = 1e-4,
    kl_direction: str = "reference_current",
    device: str | torch.device = "auto",
    dtype: torch.dtype | str = torch.float64,
    significance: bool = True,
    whole_counts: bool = False,
) -> Divergences:
    """KL, PSI, JS and the G-test for every row of two ``[F, B]`` count tables, in one pass.

    Rows are the columns of a monitor, padded to the widest; ``mask`` (bool,
    ``[F, B]``) marks the real bins, and padding contributes exactly nothing.
    Counts are smoothed per window before normalising: ``pseudocount``
    gives ``p_i = (c_i + alpha) / (N + alpha * B)`` with B the row's number
    of real bins; ``epsilon`` gives ``p = c / N`` with zero shares replaced by
    ``epsilon``, then renormalised. KL is in nats, ``reference_current`` is
    KL(reference || current); PSI = KL(P||Q) + KL(Q||P); JS is the divergence
    with M = (P + Q) / 2. A row whose total is 0 in either window comes back
    as ``nan`` with ``valid`` False. With ``significance`` (default), the same
    call runs the G-test of homogeneity on the raw, unsmoothed counts, always
    in float64 (see ``driftmon.stats.significance``; fractional counts give G on
    the weights' scale, and a p-value meaningful only for counts).
    ``whole_counts=True`` says float counts are whole numbers (counts from
    SQL COUNT): the test then takes its lookup tables after one comparison
    of sums instead of an exact check of every count (``significance.g_test``'s
    ``whole``), which catches any fraction the row totals can see. Negative, NaN or infinite counts raise
    ``ValueError`` naming the rows; so do mismatched shapes. The results are
    inference tensors (computed under ``torch.inference_mode``): read them
    freely, ``clone()`` them to modify in place.
    """
    options = _parse_options(smoothing, alpha, epsilon, kl_direction, device, dtype)
    # Inference mode, not just no_grad: counts that require grad stay out of any
    # graph, and torch skips view and version tracking, a fifth of a small call.
    # The results are therefore inference tensors: read them, copy to modify.
    with torch.inference_mode():
        counts = _prepare_inputs(reference_counts, current_counts, mask, options)
        # Both windows' counts as one index per bin, for the G-test's table and the engine's.
        pairs = _pair_index(counts) if significance else None
        terms = _row_terms(counts, options, pairs)
        # After the engine: its table lookup has rejected negative counts by now.
        test = _significance(counts, options, pairs, whole_counts) if significance else None
        return _assemble(terms, counts, test)


# Options of calls on the CPU, by their arguments: checking them again cost
# more than a small op. Not for CUDA, nor "auto" where CUDA is available: their answers can change.
_CPU_OPTIONS: dict[tuple, _Options] = {}
_MAX_CPU_OPTIONS = 64


def _parse_options(smoothing, alpha, epsilon, kl_direction, device, dtype) -> _Options:
    if isinstance(device, str) and device == "auto" and not torch.cuda.is_available():
        # What "auto" resolves to on this machine, and cached as that: the daemon's default
        # (compute.device) otherwise paid ~10 us a call resolving it again.
        device = "cpu"
    # The types too: True == 1, but alpha=True is an error.
    key = (smoothing, alpha, type(alpha), epsilon, type(epsilon), kl_direction, device, dtype)
    try:
        cached = _CPU_OPTIONS.get(key)
    except TypeError:  # an unhashable argument: checked below
        cached = key = None
    if cached is not None:
        return cached
    options = _checked_options(smoothing, alpha, epsilon, kl_direction, device, dtype)
    if key is not None and device != "auto" and options.device.type == "cpu":
        if len(_CPU_OPTIONS) >= _MAX_CPU_OPTIONS:
            _CPU_OPTIONS.clear()
        _CPU_OPTIONS[key] = options
    return options


def _checked_options(smoothing, alpha, epsilon, kl_direction, device, dtype) -> _Options:
    _check_choice("smoothing", smoothing, SMOOTHINGS)
    _check_choice("kl_direction", kl_direction, KL_DIRECTIONS)
    _check_positive("alpha", alpha)
    _check_positive("epsilon", epsilon)
    return _Options(
        smoothing=smoothing,
        alpha=float(alpha),
        epsilon=float(epsilon),
        kl_direction=kl_direction,
        device=resolve_device(device),
        dtype=_resolve_dtype(dtype),
    )


def _check_choice(key: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def _check_positive(key: str, value: object) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and value > 0):
        raise ValueError(f"{key} must be a positive finite number, got {value!r}")


def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    resolved = _DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if resolved not in (torch.float64, torch.float32):
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    return resolved


# --------------------------------------------------------------------------
# Inputs: conversion, shape checks, validation
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Counts:
    """Both windows of one call: checked, on the compute device, padding zeroed."""

    windows: tuple[Tensor, Tensor]  # [F, B] each, int64 or floating
    mask: Tensor | None  # [F, B] bool, True on real bins
    padding: Tensor | None  # ~mask, made once: three passes zero padding with it
    totals: Tensor  # [2, F] float64: N per window and row
    n_bins: Tensor  # [F] float64: real bins per row
    largest: float  # no count is larger (the largest count or row total; 0 when empty)


def _prepare_inputs(reference, current, mask, options: _Options) -> _Counts:
    device = options.device
    windows = (
        _as_counts(reference, "reference_counts", device),
        _as_counts(current, "current_counts", device),
    )
    _check_shapes(windows)
    mask = _as_mask(mask, windows[0].shape, device)
    padding = None if mask is None else ~mask
    if padding is not None:
        # Padding may hold anything (even NaN); it must not reach the math.
        windows = tuple(w.masked_fill(padding, 0) for w in windows)
    totals = torch.stack([_row_totals(w) for w in windows])
    largest = _largest_count(windows, totals, options)
    return _Counts(windows, mask, padding, totals, _real_bins(mask, windows[0]), largest)


def _largest_count(windows: tuple[Tensor, Tensor], totals: Tensor, options: _Options) -> float:
    """A bound on every count, checking the counts on the way where needed.

    With pseudo-counts on the CPU, integer counts whose row totals fit the
    log table are checked by the table lookup itself (a negative index
    raises there, see ``_gathered_log_ratio``): a separate pass over both
    tables cost a tenth of the call. (On CUDA a bad index is a device
    assert, not an exception, so the GPU always checks first.)
    """
    integers = not any(w.is_floating_point() for w in windows)
    lookup_checks = options.smoothing == "pseudocount" and options.device.type == "cpu"
    if lookup_checks and integers:
        bound = totals.max().item() if totals.numel() else 0.0
        if bound < _TABLE_MAX:
            return bound
    return _checked_largest(windows)


def _checked_largest(windows: tuple[Tensor, Tensor]) -> float:
    """The largest count of both windows, checked as ``_checked_max`` checks each: one read-back of
    the four extremes instead of two (a read-back costs what a small op does)."""
    if windows[0].numel() == 0 or windows[0].dtype != windows[1].dtype:
        return max(_checked_max(name, w) for name, w in zip(_WINDOWS, windows, strict=True))
    extremes = torch.stack([*torch.aminmax(windows[0]), *torch.aminmax(windows[1])]).tolist()
    for name, counts, (low, high) in zip(_WINDOWS, windows, (extremes[:2], extremes[2:]), strict=True):
        if not (low >= 0 and high < math.inf):
            _raise_bad_rows(name, counts)
    return max(extremes[1], extremes[3])


def _as_counts(data, name: str, device: torch.device) -> Tensor:
    """A torch int64 or floating tensor; integer counts stay integer (table path)."""
    tensor = data if isinstance(data, Tensor) else _from_numpy(np.asarray(data), name)
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer or floating counts, got {tensor.dtype}")
    if not tensor.is_floating_point():
        tensor = _as_dtype(tensor, torch.int64)
    elif tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    return tensor if tensor.device == device else tensor.to(device)


def _from_numpy(array: np.ndarray, name: str) -> Tensor:
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold integer or floating counts, got {array.dtype}")
    if array.dtype.kind == "u" or not array.dtype.isnative:
        array = array.astype(np.float64 if array.dtype.kind == "f" else np.int64)
    if not array.flags.writeable:
        array = array.copy()  # torch.from_numpy warns on read-only arrays
    return torch.from_numpy(np.ascontiguousarray(array))  # no negative strides


def _check_shapes(windows: tuple[Tensor, Tensor]) -> None:
    reference, current = windows
    if reference.dim() != 2 or current.dim() != 2:
        raise ValueError(
            f"counts must be 2-D [features, bins]; got shapes {tuple(reference.shape)} and {tuple(current.shape)}"
        )
    if reference.shape != current.shape:
        raise ValueError(
            f"reference_counts {tuple(reference.shape)} and current_counts "
            f"{tuple(current.shape)} must have the same shape"
        )


def _as_mask(mask, shape: torch.Size, device: torch.device) -> Tensor | None:
    if mask is None:
        return None
    tensor = mask if isinstance(mask, Tensor) else torch.from_numpy(np.array(mask))
    if tensor.dtype != torch.bool:
        raise ValueError(f"mask must be boolean, got {tensor.dtype}")
    if tensor.shape != shape:
        raise ValueError(f"mask {tuple(tensor.shape)} must have the counts' shape {tuple(shape)}")
    return tensor.to(device)


def _checked_max(window: str, counts: Tensor) -> float:
    """The largest count; raises naming the rows with negative, NaN or inf counts."""
    if counts.numel() == 0:
        return 0.0
    # Whole-table reductions first: the row-by-row search runs only on failure.
    low, high = torch.stack(torch.aminmax(counts)).tolist()
    if not (low >= 0 and high < math.inf):
        _raise_bad_rows(window, counts)
    return high


def _raise_bad_rows(window: str, counts: Tensor) -> None:
    bad = counts < 0
    if counts.is_floating_point():
        bad |= ~torch.isfinite(counts)
    rows = bad.any(dim=1).nonzero().flatten().tolist()
    shown = ", ".join(map(str, rows[:20])) + (", ..." if len(rows) > 20 else "")
    raise ValueError(f"{window} has negative, NaN or infinite counts in rows [{shown}]")


def _row_totals(counts: Tensor) -> Tensor:
    # Integers are summed exactly, then converted once; float32 counts are
    # summed in float64 so that totals of large counts stay exact.
    if counts.is_floating_point():
        return counts.sum(dim=1, dtype=torch.float64)
    return _float64(counts.sum(dim=1))


def _real_bins(mask: Tensor | None, counts: Tensor) -> Tensor:
    if mask is None:
        return _every_bin(*counts.shape, counts.device)
    return mask.sum(dim=1, dtype=torch.float64)


@functools.lru_cache(maxsize=64)
def _every_bin(rows: int, bins: int, device: torch.device) -> Tensor:
    # Read only; kept because even a small op costs microseconds on every call.
    return torch.full((rows,), bins, dtype=torch.float64, device=device)


# --------------------------------------------------------------------------
# The batched kernel
# --------------------------------------------------------------------------


def _row_terms(counts: _Counts, options: _Options, pairs: PairIndex | None = None) -> _RowTerms:
    """Smooth both windows and reduce them to the shared per-row sums."""
    shape = counts.windows[0].shape
    probs = _workspace("probs", (2, *shape), options.dtype, options.device)
    scratch = _workspace("scratch", (2, *shape), options.dtype, options.device)
    shift = _SMOOTHERS[options.smoothing](counts, probs, scratch, options, pairs)
    log_ratio, other = scratch.unbind()
    _zero_padding((probs, log_ratio), counts.padding)
    dot_ref, dot_cur = _row_dots(probs, log_ratio).unbind()
    # x - 0.0 is x, bit for bit (-0.0 included): a float shift of 0 (the log path) subtracts nothing. Not so
    # 0.0 - x, which is +0.0 where -x is -0.0: that one stays.
    kl_ref_cur = dot_ref if isinstance(shift, float) and shift == 0.0 else dot_ref - shift
    kl_cur_ref = shift - dot_cur
    mix = _mixture_term(probs, log_ratio, other, counts.padding)  # overwrites the log ratio
    return _RowTerms(kl_ref_cur, kl_cur_ref, kl_ref_cur + kl_cur_ref, mix, options.kl_direction)


def _pseudocount(counts: _Counts, probs: Tensor, scratch: Tensor, options: _Options, pairs=None):
    """p_i = (c_i + alpha) / Z, Z = N + alpha * B, into ``probs``.

    Writes log p - log q + shift into ``scratch[0]`` and returns the per-row
    shift. For integer counts log p_i = log(c_i + alpha) - log Z: the first
    term comes from a table, the second is one log per row, and their
    difference between the windows is the shift. Other counts take log(p / q).
    With the G-test's ``pairs`` (``significance.PairIndex``), the difference
    log(a + alpha) - log(b + alpha) is one gather from a table of those
    differences, computed from the same log table in the same dtype: the
    same values, bit for bit, for one gather and no subtraction instead of two.
    """
    norm = torch.add(counts.totals, counts.n_bins, alpha=options.alpha)
    indices = _table_indices(counts)
    if indices is not None:
        size = _table_size(counts.largest)
        # The same memory as ``scratch``, flat, as index_select writes it.
        flat = _workspace("scratch", (2, counts.windows[0].numel()), options.dtype, options.device)
        if pairs is None or not _paired_log_ratio(counts, pairs, size, options, flat[0]):
            table = _log_table(options.alpha, size, options.dtype, options.device)
            _gathered_log_ratio(indices, table, *flat.unbind())
    _pseudocount_shares(counts, probs, options, norm)
    if indices is None:
        _log_ratio(probs, scratch[0])
        return 0.0
    log_norm_ref, log_norm_cur = torch.log(norm).unbind()
    return log_norm_ref - log_norm_cur


def _epsilon(counts: _Counts, probs: Tensor, scratch: Tensor, options: _Options, pairs=None):
    """p = c / N, zero shares replaced by epsilon, renormalised; log(p / q) into ``scratch[0]``."""
    _epsilon_shares(counts, probs, options)
    _log_ratio(probs, scratch[0])
    return 0.0


_SMOOTHERS = {"pseudocount": _pseudocount, "epsilon": _epsilon}


def _pseudocount_shares(counts: _Counts, probs: Tensor, options: _Options, norm: Tensor | None = None) -> None:
    """p_i = (c_i + alpha) / Z, Z = N + alpha * B, into ``probs`` (padding not zeroed)."""
    if norm is None:
        norm = torch.add(counts.totals, counts.n_bins, alpha=options.alpha)
    _fill_probs(probs, counts.windows)
    probs.add_(options.alpha).mul_(_as_dtype(torch.reciprocal(norm), options.dtype).unsqueeze(2))


def _epsilon_shares(counts: _Counts, probs: Tensor, options: _Options) -> None:
    """p = c / N, zero shares replaced by epsilon, renormalised (sum = 1 + eps * zeros)."""
    zeros = torch.stack([w == 0 for w in counts.windows])
    if counts.mask is not None:
        zeros &= counts.mask
    _fill_probs(probs, counts.windows)
    probs.mul_(_as_dtype(torch.reciprocal(counts.totals), options.dtype).unsqueeze(2))
    probs.masked_fill_(zeros, options.epsilon)
    renorm = 1.0 / (1.0 + options.epsilon * zeros.sum(dim=2, dtype=torch.float64))
    probs.mul_(_as_dtype(renorm, options.dtype).unsqueeze(2))


_SHARES = {"pseudocount": _pseudocount_shares, "epsilon": _epsilon_shares}


def _fill_probs(probs: Tensor, windows: tuple[Tensor, Tensor]) -> None:
    # Convert into the workspace first: an op mixing integer and float
    # tensors makes torch allocate a converted copy of the whole table.
    for window, out in zip(windows, probs, strict=True):
        out.copy_(window)


def _log_ratio(probs: Tensor, out: Tensor) -> None:
    """log(p / q): one log per bin instead of log p - log q, and no rounding of two logs."""
    torch.div(probs[0], probs[1], out=out).log_()


def _gathered_log_ratio(indices, table: Tensor, out: Tensor, scratch: Tensor) -> None:
    """log(a + alpha) - log(b + alpha) into the flat ``out``, both looked up in the cached table."""
    try:
        torch.index_select(table, 0, indices[0].reshape(-1), out=out)
        torch.index_select(table, 0, indices[1].reshape(-1), out=scratch)
    except IndexError:
        # Every count is below the table size, so only a negative one gets here.
        for window, counts in zip(_WINDOWS, indices, strict=True):
            _checked_max(window, counts)
        raise
    out.sub_(scratch)


def _paired_log_ratio(counts: _Counts, pairs: PairIndex, size: int, options: _Options, out: Tensor) -> bool:
    """log(a + alpha) - log(b + alpha) into the flat ``out`` by the pair index; False if it does not fit.

    A reference count past the table's rows misses it (then the caller takes
    the two-gather path, and the G-test its own), and so does a negative one
    (``pair_index`` turns away negative current counts): that raises here,
    naming the rows, as ``_gathered_log_ratio`` would.
    """
    table = _log_ratio_table(options.alpha, size, pairs.width, pairs.rows, options.dtype, options.device)
    try:
        torch.index_select(table, 0, pairs.index.view(-1), out=out)
    except IndexError:
        for window, counts_ in zip(_WINDOWS, counts.windows, strict=True):
            _checked_max(window, counts_)
        return False
    return True


@functools.lru_cache(maxsize=8)
def _log_ratio_table(alpha: float, size: int, width: int, rows: int, dtype: torch.dtype, device) -> Tensor:
    """log(a + alpha) - log(b + alpha) at a * width + b, a < min(rows, size), b < width; read only.

    From the cached log table and subtracted in ``dtype``, exactly as
    ``_gathered_log_ratio`` does per bin: the same values, bit for bit.
    """
    logs = _log_table(alpha, size, dtype, device)
    return (logs[: min(rows, size), None] - logs[None, :width]).flatten()


def _table_indices(counts: _Counts) -> tuple[Tensor, Tensor] | None:
    """Both windows as table indices: integer counts below the table's limit.

    Float counts take the log path: checking that they are whole numbers
    costs about what the table saves (measured).
    """
    if counts.largest >= _TABLE_MAX or any(w.is_floating_point() for w in counts.windows):
        return None
    return counts.windows


def _table_size(largest: float) -> int:
    # Smaller tables gather faster (cache), so size to the data, by powers of 2.
    return max(_TABLE_MIN, 1 << int(largest).bit_length())


@functools.lru_cache(maxsize=16)
def _log_table(alpha: float, size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """log(c + alpha) for c = 0 .. size - 1, built in float64 and rounded once."""
    values = torch.arange(size, dtype=torch.float64, device=device)
    return torch.log(values + alpha).to(dtype)


def _zero_padding(tensors, padding: Tensor | None, value: float = 0.0) -> None:
    """``value`` where ``padding`` (``~mask``) is True."""
    if padding is not None:
        for tensor in tensors:
            tensor.masked_fill_(padding, value)


def _row_dots(probs: Tensor, values: Tensor) -> Tensor:
    """[sum_i p_i v_i, sum_i q_i v_i] per row, as [2, F] float64.

    One bmm of [F, 2, B] by [F, B, 1] reads every operand once and writes only
    the sums; multiplying then summing writes the whole product first and ran
    1.8x slower at F = 100 000, and two separate bmm calls read ``values`` twice.
    """
    return _float64(torch.bmm(probs.permute(1, 0, 2), values.unsqueeze(2)).squeeze(2).T)


def _row_dot(left: Tensor, right: Tensor) -> Tensor:
    """sum_i left_i right_i per row, in the compute dtype (float32 sums meet float64 ones
    only in mixed ops, which convert them exactly)."""
    return torch.bmm(left.unsqueeze(1), right.unsqueeze(2)).flatten()


def _as_dtype(tensor: Tensor, dtype: torch.dtype) -> Tensor:
    # A call that converts nothing still costs what a small op does.
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def _float64(tensor: Tensor) -> Tensor:
    return _as_dtype(tensor, torch.float64)


def _mixture_term(probs: Tensor, total: Tensor, ratio: Tensor, padding: Tensor | None) -> Tensor:
    """sum (p + q) log(4pq / (p + q)^2) = -4 sum m log cosh(x / 2), x = log(p / q).

    Symmetric in p and q operation by operation (sums and products only), so
    swapping the windows gives bit-identical JS (``KL(Q||P) / 2 - sum m log(m / p)``
    did not, by rounding). The argument is in (0, 1], so a plain log loses
    nothing to log1p, which torch runs 2x slower. Overwrites ``total`` and ``ratio``.
    """
    p, q = probs
    torch.add(p, q, out=total)
    torch.mul(p, q, out=ratio).mul_(4.0)  # exact: scaling by 4 rounds nothing
    ratio.div_(total).div_(total)
    _zero_padding((ratio,), padding, 1.0)  # 0 / 0 there
    return _row_dot(total, ratio.log_())


# The G-test's float64 buffers are the engine's own in a float64 call: the
# engine is done with them by then.
_G_SLOTS = {"terms": "probs", "column_terms": "scratch", "columns": "g_columns"}


def _g_workspace(slot: str, shape, dtype: torch.dtype, device: torch.device) -> Tensor:
    return _workspace(_G_SLOTS[slot], shape, dtype, device)


def _pair_index(counts: _Counts) -> PairIndex | None:
    return pair_index(*counts.windows, counts.totals, _g_workspace)


def _significance(counts: _Counts, options: _Options, pairs: PairIndex | None = None, whole: bool = False) -> GTest:
    # ``largest`` bounds every count (float counts: their checked maximum), which spares the test a pass.
    return g_test(
        *counts.windows, counts.totals, workspace=_g_workspace, pairs=pairs, largest=counts.largest, whole=whole
    )


def _assemble(terms: _RowTerms, counts: _Counts, test: GTest | None) -> Divergences:
    """Run every registered statistic and apply the row rules, all rows at once."""
    names = list(_STATISTICS)
    values = torch.stack([_STATISTICS[name](terms) for name in names])
    valid = (counts.totals > 0).all(dim=0)
    # True values lie in [0, inf); rounding can leave -1e-17, which would break
    # "KL >= 0" for callers, and a one-bin row cannot diverge at all.
    values.clamp_(min=0)
    if counts.mask is not None or counts.windows[0].shape[1] <= 1:
        values.masked_fill_(counts.n_bins <= 1, 0.0)
    values.masked_fill_(~valid, math.nan)
    fields = dict(zip(names, _float64(values), strict=True))
    if test is not None:
        fields.update(g_statistic=test.statistic, dof=test.dof, p_value=test.p_value)
    if values.device.type != "cpu":
        # One transfer for all of them: each costs a device sync.
        moved = torch.stack([*fields.values(), valid.to(torch.float64)]).to("cpu")
        fields, valid = dict(zip(fields, moved, strict=False)), moved[-1].bool()
    return Divergences(**fields, valid=valid)


# --------------------------------------------------------------------------
# Per-bin contributions (on demand, off the hot path)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Contributions:
    """The per-bin terms whose row sums are KL, PSI and JS: float64 numpy arrays ``[F, B]``.

    ``reference_shares`` and ``current_shares`` are the smoothed shares p and q
    exactly as ``divergences()`` computes them (same code, same ``dtype``); the
    terms are computed from them in float64: ``kl`` is p ln(p/q) for
    ``reference_current`` (q ln(q/p) for ``current_reference``), ``psi`` is
    (p - q) ln(p/q), ``js`` is 1/2 [p ln(p/m) + q ln(q/m)] with m = (p + q) / 2.
    Padded bins hold 0 everywhere. Rows with one real bin hold 0 terms (the
    engine returns exactly 0 there). Rows where either window is empty
    (``valid`` False, ``[F]`` bool) hold ``nan`` on their real bins.
    """

    reference_shares: np.ndarray
    current_shares: np.ndarray
    kl: np.ndarray
    psi: np.ndarray
    js: np.ndarray
    valid: np.ndarray


def contributions(
    reference_counts: Tensor | np.ndarray,
    current_counts: Tensor | np.ndarray,
    mask: Tensor | np.ndarray | None = None,
    *,
    smoothing: str = "pseudocount",
    alpha: float = 0.5,
    epsilon: float = 1e-4,
    kl_direction: str = "reference_current",
    dtype: torch.dtype | str = torch.float64,
) -> Contributions:
    """Per-bin terms of KL, PSI and JS; each row's terms sum to ``divergences()``'s value.

    Same inputs, options and errors as ``divergences()``; runs on the CPU with
    plain logs (three per bin): it explains one run on demand, it is not part
    of the batched pass. In float64 the row sums agree with the engine to
    about 1e-15 (the engine clamps rounding below 0, and bounds JS by ln 2).
    """
    options = _parse_options(smoothing, alpha, epsilon, kl_direction, "cpu", dtype)
    with torch.inference_mode():
        counts = _prepare_inputs(reference_counts, current_counts, mask, options)
        for name, window in zip(_WINDOWS, counts.windows, strict=True):
            _checked_max(name, window)  # the engine's table lookup checks these; here nothing would
        probs = torch.empty((2, *counts.windows[0].shape), dtype=options.dtype)
        _SHARES[options.smoothing](counts, probs, options)
        p, q = _float64(probs).numpy()
        real = np.ones(p.shape, bool) if counts.mask is None else counts.mask.numpy()
        valid = (counts.totals > 0).all(dim=0).numpy()
        lone = (counts.n_bins <= 1).numpy()
    return _contribution_terms(p, q, real, valid, lone, options.kl_direction)


def _contribution_terms(p, q, real, valid, lone, kl_direction: str) -> Contributions:
    with np.errstate(divide="ignore", invalid="ignore"):  # padding and empty windows, blanked below
        log_ratio = np.log(p / q)
        m = 0.5 * (p + q)
        js = 0.5 * (p * np.log(p / m) + q * np.log(q / m))
    kl = p * log_ratio if kl_direction == "reference_current" else q * -log_ratio
    terms = {"kl": kl, "psi": (p - q) * log_ratio, "js": js}
    for values in terms.values():
        values[lone] = 0.0
    shares = {"reference_shares": p, "current_shares": q}
    for values in (*shares.values(), *terms.values()):
        values[~valid] = math.nan
        values[~real] = 0.0
    return Contributions(**shares, **terms, valid=valid)


# --------------------------------------------------------------------------
# Per-thread workspace
# --------------------------------------------------------------------------


class _Workspace(threading.local):
    """Reusable intermediate buffers, one set per thread (monitors run on a pool)."""

    def __init__(self) -> None:
        self.buffers: dict[tuple, Tensor] = {}
        # Shaped views of the buffers, kept too: slicing and viewing cost what a small op does.
        self.views: dict[tuple, Tensor] = {}


_WORKSPACE = _Workspace()
_MAX_VIEWS = 64


def _workspace(slot: str, shape, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A buffer of ``shape`` for ``slot``, grown as needed and kept."""
    key = (slot, dtype, device)
    view = _WORKSPACE.views.get((*key, *shape))
    if view is not None:
        return view
    numel = math.prod(shape)
    buffer = _WORKSPACE.buffers.get(key)
    if buffer is None or buffer.numel() < numel:
        buffer = _WORKSPACE.buffers[key] = torch.empty(numel, dtype=dtype, device=device)
        # Views of the old buffer would keep it alive.
        _WORKSPACE.views = {k: v for k, v in _WORKSPACE.views.items() if k[:3] != key}
    if len(_WORKSPACE.views) >= _MAX_VIEWS:
        _WORKSPACE.views.clear()
    view = _WORKSPACE.views[(*key, *shape)] = buffer[:numel].view(shape)
    return view


def release_workspace() -> None:
    """Free this thread's intermediate buffers (they are kept between calls)."""
    _WORKSPACE.buffers.clear()
    _WORKSPACE.views.clear()
