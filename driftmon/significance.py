"""Significance of a drift: the G-test of homogeneity per column, Benjamini-Hochberg across columns.

Pure tensor math, like ``divergence``, which calls ``g_test`` in its batched
pass (SPEC.md section 3). An effect size such as KL says how far two windows
are apart; the G-test says whether that distance is more than the sampling
noise of windows that small, and the q-values keep the share of false alarms
among a monitor's flagged columns near the chosen level.

For one column, the two windows' RAW counts form a 2 x B table O (reference
row, current row). With row totals R_i, column totals C_j and N = R_1 + R_2,
the expected counts under "same distribution" are E_ij = R_i C_j / N and

    G = 2 sum_ij O_ij ln(O_ij / E_ij),   dof = (bins with C_j > 0) - 1,

and the p-value is the chi-square survival function of G with dof degrees of
freedom, Q(dof / 2, G / 2) (regularised upper incomplete gamma). Bins empty in
both windows contribute nothing and are not counted; padding (zero counts)
therefore drops out as well.

Fractional counts (weighted histogram rows) are used as they are: G is then
on the scale of the weights and the p-value is only meaningful when the
weights are counts of observations.

Cost (measured beside the engine, F = 10 000, B = 64, one thread): the test
must stay a small share of the batched pass, so

* small integer counts (every current count below ``PAIR_MAX``) take ONE
  gather per bin from a table of the whole per-bin term,
  T(a, b) = a ln a + b ln b - (a + b) ln(a + b), indexed by a * width + b
  (``pair_index``, which ``divergences()`` shares with its engine); the same
  index, clamped to 1, counts the kept bins. The c ln c path takes three
  gathers, a column sum and a count: twice the time.
* the survival function is closed-form for whole dof up to ``SERIES_DOF``
  (``_series_survival``): vector ops over [F, dof / 2], or one fused op per
  term where every row has the same dof; at G ~ dof = 63 about 0.4x and 0.2x
  of ``torch.special.gammaincc``'s 2.5 ms, and accurate to ~2e-13 relative
  (against mpmath) where torch's gammaincc is off by up to 2e-9.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["GTest", "PairIndex", "benjamini_hochberg", "chi2_survival", "g_test", "pair_index"]

# Integer counts whose current window stays below this take the pair table of
# per-bin terms, 2**18 float64 (2 MiB) whatever its width.
PAIR_MAX = 1 << 9
_PAIR_ENTRIES = 1 << 18
_PAIR_MIN = 1 << 4
# a * width + b must not wrap around int64: row totals bound every count (see ``pair_index``).
_PAIR_TOTAL_MAX = 2.0**52
# Otherwise integer column totals below this take the c ln c table (2**18 float64 = 2 MiB).
TABLE_MAX = 1 << 18
_TABLE_MIN = 1 << 10
# Whole dof up to this take the closed-form survival function; larger or
# fractional dof take torch.special.gammaincc.
SERIES_DOF = 128
_CEILING = 1e300
# Smallest normal float64: gammaincc's results below it are subnormal, with
# fewer significant bits the smaller they get, so they are returned as 0.0.
_TINY = float(np.finfo(np.float64).tiny)

Workspace = Callable[[str, tuple[int, ...], torch.dtype, torch.device], Tensor]


@dataclass(frozen=True)
class GTest:
    """The G-test of every row, float64 tensors of shape [F] on the counts' device.

    ``statistic`` is G (>= 0), ``dof`` the degrees of freedom (bins non-empty
    in either window, minus 1), ``p_value`` the chi-square survival function:
    1.0 where dof is 0 (one non-empty bin) or a window is empty (then G and
    dof are 0 too), and exactly 0.0 where the true value is below the
    smallest normal float64, 2.2e-308 (never nan, never negative).
    """

    statistic: Tensor
    dof: Tensor
    p_value: Tensor


def g_test(
    reference: Tensor,
    current: Tensor,
    totals: Tensor | None = None,
    *,
    workspace: Workspace | None = None,
    pairs: PairIndex | None = None,
    largest: float | None = None,
) -> GTest:
    """The G-test of homogeneity for every row of two ``[F, B]`` count tables.

    Counts must be non-negative and finite and zero on padding (not checked
    here: ``divergences()`` checks them first). ``totals`` ([2, F] float64
    row totals) saves recomputing them; ``workspace(slot, shape, dtype, device)``,
    if given, returns reusable buffers (the engine's, so that the test allocates
    nothing on the hot path); ``pairs``, the counts' ``pair_index`` if the
    caller has built it already (it is overwritten); ``largest``, a bound on
    every count if the caller knows one (float counts: saves a pass). G is
    always computed in float64.

    Whole counts, integer tensors or float tensors whose every count is a
    whole number (``_whole_counts``), take lookup tables: where every count
    stays below ``PAIR_MAX`` (integer tensors: the current counts), one
    gather per bin from the pair table (``_pair_bin_sums``); otherwise, where
    the column totals stay below ``TABLE_MAX``, a table of c ln c:
    G / 2 = sum O ln O - sum C ln C + sum_i R_i ln(N / R_i), no log per bin.
    Other counts take two logs per bin: G / 2 = sum O ln(O / C) + sum_i R_i ln(N / R_i),
    where every term is at most N ln 2 in size, so little cancels.
    """
    workspace = workspace or _fresh
    floating = reference.is_floating_point() or current.is_floating_point()
    if floating:
        reference, current = reference.to(torch.float64), current.to(torch.float64)
    if totals is None:
        totals = torch.stack([_row_total(w) for w in (reference, current)])
    if pairs is None and not floating:
        pairs = pair_index(reference, current, totals, workspace)
    sums = _bin_sums(reference, current, totals, pairs, largest, workspace)
    half_g = sums.terms + _row_sums(totals)
    tested = totals.amin(dim=0) > 0
    dof = sums.kept.sub_(1).mul_(tested)  # int64 (it indexes the survival tables); 0 where a window is empty
    # With one non-empty bin O = E exactly; the sums would leave rounding (empty windows: nan).
    half_g = torch.where(dof > 0, half_g, 0.0).clamp_(min=0)
    return GTest(half_g * 2.0, dof.to(torch.float64), _g_survival(half_g, dof, workspace))


def _g_survival(half_g: Tensor, dof: Tensor, workspace: Workspace) -> Tensor:
    """``chi2_survival(2 * half_g, dof)`` for ``g_test``'s int64 dof (whole, >= 0; G is 0 where dof is)."""
    if dof.numel() == 0:
        return half_g.clone()
    low, top = torch.stack(torch.aminmax(dof)).tolist()
    if top <= SERIES_DOF:
        return _flush(_series_survival(half_g, dof, low, top, workspace))  # dof 0 with G 0 gives 1 exactly
    closed = dof <= SERIES_DOF
    p = _series_survival(half_g, dof.clamp(max=SERIES_DOF), min(low, SERIES_DOF), SERIES_DOF, workspace)
    return _flush(_gammaincc_rest(p, half_g, dof.to(torch.float64) * 0.5, closed))


def chi2_survival(statistic: Tensor, dof: Tensor) -> Tensor:
    """P(chi2(dof) >= statistic), float64: 1.0 where dof <= 0 or statistic <= 0, 0.0 below 2.2e-308.

    Whole dof up to ``SERIES_DOF`` take the closed form (``_series_survival``):
    measured against mpmath over dof 1 .. 128 and statistics from 1e-300 to
    1e12 (p down to 1e-300), relative error below 2e-13 (scipy's ``chi2.sf``:
    1.3e-13). Other dof take ``torch.special.gammaincc`` (Cephes' algorithm),
    whose relative error is below 1e-13 for dof <= 40 but up to 2e-9 above,
    where the statistic lies within 30 % of dof (its asymptotic-series
    region). A nan statistic gives nan.
    """
    statistic = statistic.to(torch.float64)
    statistic, dof = torch.broadcast_tensors(statistic, dof.to(statistic))
    shape = statistic.shape
    half, dof = (statistic * 0.5).flatten(), dof.flatten()
    if dof.numel() == 0:
        return torch.ones(shape, dtype=torch.float64, device=statistic.device)
    closed = (dof == dof.floor()) & (dof >= 0) & (dof <= SERIES_DOF)  # not nan, inf or fractions
    whole = torch.where(closed, dof, 0.0).long()
    low, top = torch.stack(torch.aminmax(whole)).tolist()
    p = _series_survival(half, whole, low, top, _fresh)
    if not closed.all():
        p = _gammaincc_rest(p, half, dof * 0.5, closed)
    return _flush(torch.where(dof > 0, p, 1.0)).view(shape)


def _flush(p: Tensor) -> Tensor:
    """Subnormal p-values, with fewer significant bits the smaller they are, become 0.0."""
    return p.masked_fill_(p < _TINY, 0.0)


def _gammaincc_rest(p: Tensor, half: Tensor, a: Tensor, closed: Tensor) -> Tensor:
    """Q(a, half) by ``torch.special.gammaincc`` where ``closed`` is False (dof the closed form does not take)."""
    rest = (~closed).nonzero().flatten()
    p[rest] = torch.special.gammaincc(a[rest], half[rest])
    return p


def _series_survival(half: Tensor, dof: Tensor, low: int, top: int, workspace: Workspace) -> Tensor:
    """Q(a, y) = P(chi2(2a) >= 2y) for y = ``half`` and whole dof = 2a in [``low``, ``top``] (int64), float64.

    For whole 2a, Q(a, y) = [erfc(sqrt y) if 2a is odd] + sum_c y^c e^-y / Gamma(c + 1)
    over c = a - 1, a - 2, ... down to 0 (even) or 1/2 (odd): a Poisson sum.
    It is summed from its top term t = y^(a-1) e^-y / Gamma(a) down,
    t * (1 + sum_j prod_{i <= j} (a - i) / y), with log t in log space, so
    nothing underflows before the final exp (p down to 1e-308 stays exact)
    and, for y above a - 1, the ratios are below 1. Below, they grow, by at
    most 1 / t: y is raised to a floor where P(a, y) <= y^a / Gamma(a + 1)
    = 1e-17 (so p rounds to 1 either way), which keeps 1 / t far from
    overflow. The ratios come from a table by dof (0 past the last term), as
    one [F, top / 2 - 1] block: cumprod and sum, no loop over terms; where
    every row has the same dof, the same sum nested,
    1 + r_1 (1 + r_2 (1 + ...)), one fused op per term on [F] (``_one_dof_series``).
    Dof 0 gives e^-y, so 1 where y is 0 (``chi2_survival`` sets 1 for any y).
    Not yet flushed to 0 below 2.2e-308; nan stays nan.
    """
    if low == top:
        return _one_dof_series(half, top)
    tables = _series_tables(half.device)
    floor, power, log_gamma, odd = torch.index_select(tables.constants, 0, dof).unbind(1)
    y = torch.clamp(half, min=floor, max=tables.ceiling)
    log_p = torch.log(y).mul_(power).sub_(y).sub_(log_gamma)
    width = top // 2 - 1
    if width > 0:
        ratios = workspace("column_terms", (dof.numel(), width), torch.float64, dof.device)
        torch.index_select(tables.ratios[:, :width], 0, dof, out=ratios)
        log_p.add_(_row_sums_of(ratios.div_(y.unsqueeze(1)).cumprod_(dim=1)).log1p_())
    p = log_p.exp_()
    return p.addcmul_(torch.special.erfc(y.sqrt_()), odd).clamp_(max=1.0)


def _one_dof_series(half: Tensor, dof: int) -> Tensor:
    """``_series_survival`` where every row has ``dof``: the per-dof constants are numbers, and the
    sum over terms is nested: half the [F, dof / 2] block's time at dof 63 (measured in the engine's call)."""
    floor, power, log_gamma, odd = _series_tables(half.device).scalars[dof]
    y = torch.clamp(half, min=floor, max=_CEILING)
    log_p = torch.log(y).mul_(power).sub_(y).sub_(log_gamma)
    a, terms = dof / 2, dof // 2
    if terms >= 2:
        u = torch.reciprocal(y)
        nested = torch.mul(u, a - (terms - 1)).add_(1.0)
        one = _one(half.device)
        for i in range(terms - 2, 0, -1):
            torch.addcmul(one, nested, u, value=a - i, out=nested)  # 1 + (a - i) / y * nested
        log_p.add_(nested.log_())
    p = log_p.exp_()
    if odd:
        p.add_(torch.special.erfc(y.sqrt_()))
    return p.clamp_(max=1.0)


@dataclass(frozen=True)
class _SeriesTables:
    """Per-dof constants of ``_series_survival``, float64, indexed by dof 0 .. SERIES_DOF."""

    ratios: Tensor  # [D, SERIES_DOF // 2 - 1]: a - i for i = 1, 2, ... below the number of terms, then 0
    # [D, 4]: the floor of y (P(a, y) <= 1e-17 below it), a - 1, ln Gamma(a) (inf where there
    # is no Poisson term: dof 1), 1.0 where dof is odd (the erfc term); dof 0: tiny, 0, 0, 0.
    constants: Tensor
    scalars: tuple[tuple[float, float, float, float], ...]  # ``constants`` as numbers
    ceiling: Tensor  # 0-d ``_CEILING``: y above which p is 0 anyway (inf must not meet inf)


@functools.lru_cache(maxsize=8)
def _series_tables(device: torch.device) -> _SeriesTables:
    ratios, constants = [], []
    for dof in range(SERIES_DOF + 1):
        a = dof / 2
        terms = int(a)  # Poisson terms of Q(a, y)
        ratios.append([a - i if i < terms else 0.0 for i in range(1, SERIES_DOF // 2)])
        if dof == 0:
            constants.append([_TINY, 0.0, 0.0, 0.0])  # e^-y
            continue
        floor = math.exp((math.log(1e-17) + math.lgamma(a + 1)) / a)
        constants.append([floor, a - 1, math.lgamma(a) if terms else math.inf, float(dof % 2)])

    def tensor(values) -> Tensor:
        return torch.tensor(values, dtype=torch.float64, device=device)

    return _SeriesTables(
        ratios=tensor(ratios),
        constants=tensor(constants),
        scalars=tuple(tuple(row) for row in constants),
        ceiling=tensor(_CEILING),
    )


def benjamini_hochberg(p_values: Tensor | np.ndarray, valid: Tensor | np.ndarray | None = None) -> Tensor:
    """Benjamini-Hochberg adjusted p-values (q-values), a CPU float64 tensor of the input's shape (1-D).

    Over the ``valid`` entries only (default: all): sorted ascending,
    q_(k) = min over j >= k of p_(j) * m / j, capped at 1, m the number of
    valid entries; a column is discovered at FDR level a when q <= a.
    Invalid entries come back as ``nan`` and do not count in m. A valid
    p-value that is nan or outside [0, 1] raises ``ValueError``.
    """
    p = torch.as_tensor(p_values).to(device="cpu", dtype=torch.float64).flatten()
    keep = torch.ones_like(p, dtype=torch.bool) if valid is None else torch.as_tensor(valid).to("cpu").flatten()
    if keep.shape != p.shape or keep.dtype != torch.bool:
        raise ValueError(f"valid must be a boolean mask of shape {tuple(p.shape)}")
    tested = p[keep]
    if not ((tested >= 0) & (tested <= 1)).all():
        raise ValueError("p-values must lie in [0, 1]")
    q = torch.full_like(p, float("nan"))
    q[keep] = _step_up(tested)
    return q


def _step_up(p: Tensor) -> Tensor:
    m = p.numel()
    order = torch.argsort(p, stable=True)
    ranked = p[order] * (m / torch.arange(1, m + 1, dtype=torch.float64))
    ranked = ranked.flip(0).cummin(dim=0).values.flip(0).clamp_(max=1.0)
    return torch.empty_like(p).index_put_((order,), ranked)


# --------------------------------------------------------------------------
# The sums G is made of
# --------------------------------------------------------------------------


def _fresh(slot: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.empty(shape, dtype=dtype, device=device)


def _row_total(counts: Tensor) -> Tensor:
    return counts.sum(dim=1, dtype=torch.float64)


@dataclass(frozen=True)
class _BinSums:
    """What G needs from the bins, per row: sum_j T(O_1j, O_2j) (float64) and the kept bins (int64).

    T(a, b) = a ln a + b ln b - (a + b) ln(a + b), so that G / 2 = terms + sum_i R_i ln(N / R_i).
    """

    terms: Tensor
    kept: Tensor


def _bin_sums(reference, current, totals, pairs: PairIndex | None, largest, workspace: Workspace) -> _BinSums:
    """The per-row bin sums by the cheapest path the counts allow (see ``g_test``)."""
    if pairs is not None:
        sums = _pair_bin_sums(pairs, workspace)
        if sums is not None:
            return sums
    if reference.is_floating_point():
        whole = _whole_counts(reference, current, largest, workspace)
        if whole is None:
            return _log_bin_sums(reference, current, workspace)
        sums = _small_whole_bin_sums(whole, largest, workspace)
        if sums is not None:
            return sums
        reference, current, columns = whole.unbind()
        torch.add(reference, current, out=columns)
    else:
        columns = _column_totals(reference, current, workspace)
    table = _table_for(columns, totals, largest)
    if table is None:
        return _log_bin_sums(reference.to(torch.float64), current.to(torch.float64), workspace)
    return _table_bin_sums(reference, current, columns, table, workspace)


def _whole_counts(reference: Tensor, current: Tensor, largest: float | None, workspace: Workspace) -> Tensor | None:
    """Float64 counts as an int32 [3, F, B] block (both windows, then room for a third table), or None.

    None unless every count is a whole number below ``TABLE_MAX``. The check
    is exact: the fractional parts are each >= 0, so their sum is 0 only if
    every one is (a nan count makes it nan). Two passes and a sum, a fifth
    of what the tables save over the logs (measured at F = 10 000, B = 64).
    """
    if reference.numel() == 0:
        return None
    if largest is None:
        largest = max(torch.amax(w).item() for w in (reference, current))
    if not 0 <= largest < TABLE_MAX:
        return None
    fractions = workspace("terms", (2, *reference.shape), torch.float64, reference.device)
    for counts, out in zip((reference, current), fractions, strict=True):
        torch.frac(counts, out=out)
    if fractions.sum().item() != 0:
        return None
    whole = workspace("columns", (3, *reference.shape), torch.int32, reference.device)
    whole[0].copy_(reference)
    whole[1].copy_(current)
    return whole


def _small_whole_bin_sums(whole: Tensor, largest: float | None, workspace: Workspace) -> _BinSums | None:
    """The pair-table path for whole float counts all below ``PAIR_MAX`` (None otherwise).

    ``largest`` bounds both windows, so the table's width (above every count)
    also leaves room for every reference count in its rows.
    """
    if largest is None or largest >= PAIR_MAX:
        return None
    width = max(_PAIR_MIN, 1 << int(largest).bit_length())
    index = torch.add(whole[1], whole[0], alpha=width, out=whole[2])
    return _pair_bin_sums(PairIndex(index, width, _PAIR_ENTRIES // width), workspace)


def _column_totals(reference: Tensor, current: Tensor, workspace: Workspace) -> Tensor:
    """C_j = O_1j + O_2j, in the counts' dtype (int64 or float64; integers index the table)."""
    out = workspace("columns", tuple(reference.shape), reference.dtype, reference.device)
    return torch.add(reference, current, out=out)


def _kept_bins(columns: Tensor) -> Tensor:
    """Bins non-empty in either window, per row, int64; overwrites integer column totals."""
    if columns.is_floating_point():
        return (columns > 0).sum(dim=1)
    return columns.clamp_(max=1).sum(dim=1)  # half the time of counting


def _row_sums(totals: Tensor) -> Tensor:
    """sum_i R_i ln(N / R_i) = sum_i R_i log1p(R_other / R_i), each term at most N / e.

    log1p, not ln(N / R_i): where one window is 100x the other, N / R_1 ~ 1.01,
    and its rounding alone moved R_1 ln(N / R_1) by R_1 * 1e-16: G by 3e-10
    at R_1 = 1.3 M, 5e-12 of a G ~ dof. nan where a window is empty:
    ``g_test`` tests no such row.
    """
    terms = torch.div(totals.flip(0), totals).log1p_().mul_(totals)
    return terms[0] + terms[1]


@dataclass(frozen=True)
class PairIndex:
    """Both windows' counts as one index per bin, ``reference * width + current``, for the pair tables.

    ``width`` is the power of 2 above every current count, so the index is
    unique; ``rows`` = 2**18 / width bounds the reference counts the pair
    table covers, which the lookup itself checks on the CPU (a count past
    it, or a negative one, gives an index out of range). ``divergences()``
    builds it once and shares it: its engine gathers log(a + alpha) -
    log(b + alpha) with the same index (``driftmon.divergence``).
    """

    index: Tensor  # [F, B] int64, in the workspace's "columns" buffer
    width: int
    rows: int


def pair_index(
    reference: Tensor, current: Tensor, totals: Tensor, workspace: Workspace | None = None
) -> PairIndex | None:
    """The ``PairIndex`` of two integer count tables, or None where the counts do not fit.

    One pass over ``current`` (its smallest and largest count: negative
    counts give None, so that the caller's own checks report them) and one
    add; on CUDA, where a bad index is a device assert, not an exception,
    one more pass over ``reference``. A negative reference count gives a
    negative index, which the lookups reject; the row totals (>= 0 and below
    2**52, or None) keep reference * width from wrapping around int64 into
    the table, except in a row that holds counts beyond +-2**55 that cancel.
    """
    if reference.is_floating_point() or current.is_floating_point() or reference.numel() == 0:
        return None
    low_total, high_total = torch.stack(torch.aminmax(totals)).tolist()
    if low_total < 0 or high_total >= _PAIR_TOTAL_MAX:
        return None
    low, high = torch.stack(torch.aminmax(current)).tolist()
    if low < 0 or high >= PAIR_MAX:
        return None
    width = max(_PAIR_MIN, 1 << int(high).bit_length())
    rows = _PAIR_ENTRIES // width
    if reference.device.type != "cpu" and not (0 <= reference.min().item() and reference.max().item() < rows):
        return None
    index = (workspace or _fresh)("columns", tuple(reference.shape), torch.int64, reference.device)
    torch.add(current, reference, alpha=width, out=index)
    return PairIndex(index, width, rows)


def _pair_bin_sums(pairs: PairIndex, workspace: Workspace) -> _BinSums | None:
    """The bin sums from the pair table, or None past its rows.

    T(a, b) = a ln a + b ln b - (a + b) ln(a + b), so that
    G / 2 = sum_j T + sum_i R_i ln(N / R_i): one gather per bin where the
    c ln c path takes three and a column sum. The table's width is the
    power of 2 above the largest current count, which keeps the entries
    one call touches close together (a 512-wide table gathered 1.6x slower
    than a 128-wide one on the same counts). Overwrites the index.
    """
    index = pairs.index
    terms = workspace("terms", (index.numel(),), torch.float64, index.device)
    try:
        torch.index_select(_pair_table(pairs.width, index.device), 0, index.view(-1), out=terms)
    except IndexError:  # a reference count past the table's rows: the general path
        return None
    bin_sums = _row_sums_of(terms.view(index.shape))
    return _BinSums(bin_sums, index.clamp_(max=1).sum(dim=1))  # the index is 0 exactly where both counts are


def _row_sums_of(values: Tensor) -> Tensor:
    """Row sums of a float64 [F, W] block: a matrix-vector product below 32 columns, where
    ``sum(dim=1)`` ran up to 15x slower (100 000 x 3), and ``sum`` above (1.6x faster at 64)."""
    if values.shape[1] >= 32:
        return values.sum(dim=1)
    return torch.mv(values, _ones(values.shape[1], values.device))


@functools.lru_cache(maxsize=64)
def _ones(size: int, device: torch.device) -> Tensor:
    return torch.ones(size, dtype=torch.float64, device=device)


@functools.lru_cache(maxsize=8)
def _one(device: torch.device) -> Tensor:
    return torch.ones((), dtype=torch.float64, device=device)


@functools.lru_cache(maxsize=4)
def _pair_table(width: int, device: torch.device) -> Tensor:
    """T(a, b) at a * width + b for b < width, a < 2**18 / width, float64; read only.

    As -(a ln(1 + b / a) + b ln(1 + a / b)): two positive terms, each a few
    roundings, no cancellation; exactly 0 where either count is 0.
    """
    major = torch.arange(_PAIR_ENTRIES // width, dtype=torch.float64).unsqueeze(1)
    minor = torch.arange(width, dtype=torch.float64)
    terms = _weighted_log1p(major, minor) + _weighted_log1p(minor, major)
    return terms.neg_().flatten().to(device)


def _weighted_log1p(a: Tensor, b: Tensor) -> Tensor:
    """a ln(1 + b / a), 0 where a is 0."""
    return torch.where(a > 0, a * torch.log1p(b / a.clamp(min=1)), 0.0)


def _table_for(columns: Tensor, totals: Tensor, largest: float | None) -> Tensor | None:
    """The c ln(c / s) table that covers every column total, if the counts are integers that fit.

    Sized to the data by powers of 2 (smaller tables gather faster), from
    ``largest`` (column totals are at most twice it) or else from one pass.
    """
    if columns.is_floating_point() or totals.numel() == 0:
        return None
    if largest is None or 2 * largest >= TABLE_MAX:
        if not totals.sum(dim=0).max().item() < 2.0**62:
            return None  # (below, no sum of two counts has wrapped around)
        largest = columns.amax().item() / 2
    if not 2 * largest < TABLE_MAX:
        return None
    size = max(_TABLE_MIN, 1 << int(2 * largest).bit_length())
    return _xlogx_table(size, 1 << max(0, round(math.log2(max(largest, 1)))), columns.device)


def _table_bin_sums(reference, current, columns, table: Tensor, workspace: Workspace) -> _BinSums:
    """sum_j T(O_1j, O_2j) from a table of c ln(c / s) (``_xlogx_table``): gathers, no logs.

    T(a, b) = f(a) + f(b) - f(a + b) for f(c) = c ln c - c ln s, any s: the
    linear terms cancel. With s the power of 2 nearest the largest count, the
    entries that dominate (a week's reference, 20 000 per bin: c ln c ~ 2e5)
    are 20x smaller, and so is the rounding of their sums: with plain c ln c
    G, ~dof where nothing drifts, was 5e-11 off (relative), now 3e-12 (F = 40,
    B = 64, against a 40-digit reference). Overwrites ``columns``.
    """
    numel = reference.numel()
    windows = workspace("terms", (2, numel), torch.float64, columns.device)
    both = workspace("column_terms", (2, numel), torch.float64, columns.device)[0]
    for counts, out in zip((reference, current), windows, strict=True):
        torch.index_select(table, 0, counts.reshape(-1), out=out)
    torch.index_select(table, 0, columns.reshape(-1), out=both)
    rows = reference.shape[0]
    window_sums = windows.view(2, rows, -1).sum(dim=2)  # one axis at a time: 1.5x faster
    terms = window_sums[0] + window_sums[1] - both.view(rows, -1).sum(dim=1)
    return _BinSums(terms, _kept_bins(columns))


def _log_bin_sums(reference: Tensor, current: Tensor, workspace: Workspace) -> _BinSums:
    """sum O ln(O / C) with logs, float64 counts: one log per count, and row dots that write nothing big.

    O ln(O / C) is taken as O ln(max(O / C, tiny)): 0 where O is 0 (C = 0 only
    there), and plain ``log`` is half the time of ``xlogy``. A share O / C
    below 2.2e-308 would be raised to it (weights that far apart are not counts).
    """
    shape = reference.shape
    buffers = workspace("column_terms", (2, *shape), torch.float64, reference.device)
    columns, shares = buffers.unbind()
    torch.add(reference, current, out=columns)
    kept = _kept_bins(columns)
    columns.clamp_(min=_TINY)
    terms = torch.zeros(shape[0], dtype=torch.float64, device=reference.device)
    for counts in (reference, current):
        torch.div(counts, columns, out=shares).clamp_(min=_TINY).log_()
        terms += torch.bmm(counts.unsqueeze(1), shares.unsqueeze(2)).flatten()
    return _BinSums(terms, kept)


@functools.lru_cache(maxsize=8)
def _xlogx_table(size: int, scale: int, device: torch.device) -> Tensor:
    """c ln(c / scale) for c = 0 .. size - 1 (0 at 0), float64; read only.

    ``scale`` is a power of 2, so c / scale is exact: each entry is c times one rounded log.
    """
    values = torch.arange(size, dtype=torch.float64, device=device)
    return torch.xlogy(values, values / scale)
