"""Significance of a drift: the G-test of homogeneity per column, Benjamini-Hochberg across columns.

Pure tensor math, like ``divergence``, which calls ``g_test`` in its batched
pass (SPEC.md section 3). An effect size such as KL says how far two windows
are apart; the G-test says whether that distance is more than the sampling
noise of windows that small, and the q-values keep the share of false alarms
among a monitor's flagged columns near the chosen level.

For one column, the two windows' RAW counts form a 2 x B table O (reference
row, current row). With row totals R_i, column totals C_j and N = R_1 + R_2,
the expected counts under "same distribution" are E_ij = R_i C_j / N and

    G = 2 sum_ij O_ij ln(O_ij / E_ij),   dof = c - 1,   c = bins with C_j > 0.

Bins empty in both windows contribute nothing and are not counted; padding
(zero counts) therefore drops out as well.

Small samples. G is chi-square distributed only as the counts grow: with
10-50 observations per window its chi-square p-value is too small, and a
column is flagged more often than the level says (tests/test_significance.py,
no drift, 4 000 columns each: at 5 %, 7-14 % of columns uniform over 5 or 10
bins or skewed over 10 bins, at 10 and 20 per window). So the p-value is
that of G / q, with Williams' (1976) correction

    q = 1 + (N sum_i 1/R_i - 1)(N sum_j 1/C_j - 1) / (6 N (r - 1)(c - 1)),   r = 2,

which gives G / q the chi-square's mean to order 1/N (q - 1 ~ (c + 1) / 4n
for n per window and even bins: 1.2-1.3 at 10 per window on 5-10 bins, 1.03 at 100).
That alone still over-rejects a little on a few even bins (uniform over 5,
20 per window: 5.9 % at 5 %) and is far too cautious on many sparse ones
(1-3 % at 5 %: lost power). So where both windows together hold at most
``PERMUTATION_MAX`` observations, and the Williams p-value lies within
``PERMUTATION_P`` (1e-6 .. 0.1: above, no decision hangs on it; below, no
threshold is that small), the p-value is the permutation test's instead:
the exact conditional test (margins fixed, the reference row drawn as the
pooled observations split at random) by Monte Carlo, over all such rows at
once (``_permutation_test``). Its p-values hold the level at every size
(P(p <= a) <= a without drift, for any a up to 0.1; a Williams p below 1e-6
under no drift is rarer than any threshold in use), are at least 1e-4,
carry a Monte Carlo error of ~16 % of p, and come from a generator seeded
with a constant: the same call gives the same p-values. Above
``PERMUTATION_MAX``, Williams' correction alone holds the level within noise
on even bins (uniform over 5 or 10, 100-250 per window: 4.9-5.1 % at 5 %,
40 000 columns), but not on many sparse ones (20 bins, Zipf shares, expected
counts down to 1-4: 5.5-6.0 %, 1.0-1.2 % at 1 %). ``GTest.statistic`` stays
the uncorrected G (scipy's value); ``GTest.p_value``, what the decision
uses, is the corrected one.

Fractional counts (weighted histogram rows) are used as they are, with
Williams' correction but never permuted: G is then on the scale of the
weights and the p-value is only meaningful when the weights are counts of
observations.

Cost (measured beside the engine with ``bench/bench_divergence.py --g-only``,
F = 10 000, B = 64, one thread): the test must stay a small share of the
batched pass, so

* whole counts, integer tensors or float arrays whose every count is a whole
  number (what the pipeline passes: float64; checked exactly, two passes,
  or, where the caller says they are whole, by their row totals, one),
  take lookup tables, never a log per bin. Where every count is below
  ``PAIR_MAX``, ONE gather per bin from a table of the whole per-bin term,
  T(a, b) = a ln a + b ln b - (a + b) ln(a + b), indexed by a * width + b
  (``pair_index``, which ``divergences()`` shares with its engine), and one
  of 1 / (a + b) for Williams' correction, whose sign then counts the kept
  bins. Otherwise (column totals below ``TABLE_MAX``) a table of
  c ln(c / s): three gathers and the 1 / c one. Float64 counts took two
  logs per bin before, which made the engine with the test 2.8-3.0x the
  engine without; the tables make it ~1.5x (bench/README.md);
* the survival function is closed-form for whole dof up to ``SERIES_DOF``
  (``_series_survival``): vector ops over [F, dof / 2], or one fused op per
  term where every row has the same dof; at G ~ dof = 63 about 0.4x and 0.2x
  of ``torch.special.gammaincc``'s 2.5 ms, and accurate to ~2e-13 relative
  (against mpmath) where torch's gammaincc is off by up to 2e-9;
* the permutation test costs one reduction over [F] where no table is
  small; for small rows 5-15 ns per observation and draw, one thread: ~1 ms
  for a typical row, 12 ms for one of 200 observations that runs all
  ``PERMUTATIONS`` draws. Its walk keeps every op below torch's grain size
  (serial), where 2 threads on a busy 2-core machine ran it 5x slower.
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
# Rows whose two windows hold at most this many observations in all, with a
# Williams p-value in PERMUTATION_P, take the permutation test (``g_test``).
PERMUTATION_MAX = 200
PERMUTATION_P = (1e-6, 0.1)
PERMUTATIONS = 9_999  # at most per row: p >= 1e-4 there
EXCEEDANCES = 40  # a row stops at this many tables at least as extreme as its own
_PERMUTATION_SEED = 20_130_614
_WALK_ELEMENTS = 1 << 14  # draws times rows per slice of the walk (``_exceeding``)
_SERIAL = 1 << 15  # torch's grain size: ops on fewer elements run on one thread
_CEILING = 1e300
# Smallest normal float64: gammaincc's results below it are subnormal, with
# fewer significant bits the smaller they get, so they are returned as 0.0.
_TINY = float(np.finfo(np.float64).tiny)

Workspace = Callable[[str, tuple[int, ...], torch.dtype, torch.device], Tensor]


@dataclass(frozen=True)
class GTest:
    """The G-test of every row, tensors of shape [F] on the counts' device.

    ``statistic`` is G (>= 0, float64, uncorrected: scipy's
    ``chi2_contingency(..., lambda_="log-likelihood")`` value), ``dof`` the
    degrees of freedom (bins non-empty in either window, minus 1, float64),
    ``correction`` Williams' q >= 1 (1 where dof is 0), and ``p_value`` the
    p-value the decision uses: the chi-square survival function at G / q,
    or, where ``permuted`` (bool) is True, the permutation test's (see the
    module docstring). p is 1.0 where dof is 0 (one non-empty bin) or a
    window is empty (then G and dof are 0 too), and exactly 0.0 where the
    true value is below the smallest normal float64, 2.2e-308 (never nan,
    never negative).
    """

    statistic: Tensor
    dof: Tensor
    p_value: Tensor
    correction: Tensor
    permuted: Tensor


def g_test(
    reference: Tensor,
    current: Tensor,
    totals: Tensor | None = None,
    *,
    workspace: Workspace | None = None,
    pairs: PairIndex | None = None,
    largest: float | None = None,
    permutation: bool = True,
    whole: bool = False,
) -> GTest:
    """The G-test of homogeneity for every row of two ``[F, B]`` count tables.

    Counts must be non-negative and finite and zero on padding (not checked
    here: ``divergences()`` checks them first). ``totals`` ([2, F] float64
    row totals) saves recomputing them; ``workspace(slot, shape, dtype, device)``,
    if given, returns reusable buffers (the engine's, so that the test allocates
    nothing on the hot path); ``pairs``, the counts' ``pair_index`` if the
    caller has built it already; ``largest``, a bound on
    every count if the caller knows one (float counts: saves a pass). G is
    always computed in float64. ``permutation=False`` keeps the Williams-
    corrected chi-square p-value everywhere (the permutation test is skipped).
    ``whole=True`` is the caller's word that float counts are whole numbers
    (the pipeline's events counts, from SQL COUNT): the exact check, two
    passes over the counts, gives way to one comparison of sums
    (``_whole_counts``).

    Whole counts, integer tensors or float tensors whose every count is a
    whole number (``_whole_counts``), take lookup tables: where every count
    stays below ``PAIR_MAX`` (integer tensors: the current counts), one
    gather per bin from the pair table (``_pair_bin_sums``); otherwise, where
    the column totals stay below ``TABLE_MAX``, a table of c ln(c / s):
    G / 2 = sum O ln O - sum C ln C + sum_i R_i ln(N / R_i), no log per bin.
    Other counts take two logs per bin: G / 2 = sum O ln(O / C) + sum_i R_i ln(N / R_i),
    where every term is at most N ln 2 in size, so little cancels. Each path
    also sums 1 / C_j over the kept bins, for Williams' correction.
    """
    workspace = workspace or _fresh
    floating = reference.is_floating_point() or current.is_floating_point()
    if floating:
        reference, current = reference.to(torch.float64), current.to(torch.float64)
    if totals is None:
        totals = torch.stack([_row_total(w) for w in (reference, current)])
    if pairs is None and not floating:
        pairs = pair_index(reference, current, totals, workspace)
    sums = _bin_sums(reference, current, totals, pairs, largest, workspace, whole)
    half_g = sums.terms + _row_sums(totals)
    tested = totals.amin(dim=0) > 0
    dof = sums.kept.sub_(1).mul_(tested)  # int64 (it indexes the survival tables); 0 where a window is empty
    # With one non-empty bin O = E exactly; the sums would leave rounding (empty windows: nan).
    half_g = torch.where(dof > 0, half_g, 0.0).clamp_(min=0)
    degrees = dof.to(torch.float64)
    observations = totals[0] + totals[1]
    correction = _williams(totals, observations, sums.inverse_columns, degrees)
    p_value = _g_survival(half_g / correction, dof, workspace)
    permuted = None
    if permutation and dof.numel() and observations.amin().item() <= PERMUTATION_MAX:
        permuted = _permutation_p_values(reference, current, observations, dof, p_value)
    if permuted is None:
        permuted = torch.zeros_like(dof, dtype=torch.bool)
    return GTest(half_g * 2.0, degrees, p_value, correction, permuted)


def _williams(totals: Tensor, observations: Tensor, inverse_columns: Tensor, dof: Tensor) -> Tensor:
    """Williams' (1976) correction q per row, >= 1 (1 where dof is 0): the p-value is that of G / q.

    For an r x c table q = 1 + (N sum_i 1/R_i - 1)(N sum_j 1/C_j - 1) / (6 N (r - 1)(c - 1)),
    here r = 2 windows and c = dof + 1 kept bins. It scales G to have the mean
    of its chi-square to order 1/N: q - 1 ~ (c + 1) / (4 n) for n per window and even bins.
    """
    n = observations
    rows = torch.div(n, totals).sum(dim=0).sub_(1)
    q = rows.mul_(torch.mul(n, inverse_columns).sub_(1)).div_(n * dof).mul_(1 / 6).add_(1)
    return torch.where(dof > 0, q, 1.0)  # (dof 0 or an empty window: 0 / 0 or inf above)


def _g_survival(half_g: Tensor, dof: Tensor, workspace: Workspace) -> Tensor:
    """``chi2_survival(2 * half_g, dof)`` for ``g_test``'s int64 dof (whole, >= 0; G is 0 where dof is)."""
    if dof.numel() == 0:
        return half_g.clone()
    low, top = torch.stack(torch.aminmax(dof)).tolist()
    if low < top <= SERIES_DOF:
        return _flush(_mostly_one_dof(half_g, dof, low, top, workspace))
    if top <= SERIES_DOF:
        return _flush(_series_survival(half_g, dof, low, top, workspace))  # dof 0 with G 0 gives 1 exactly
    closed = dof <= SERIES_DOF
    p = _series_survival(half_g, dof.clamp(max=SERIES_DOF), min(low, SERIES_DOF), SERIES_DOF, workspace)
    return _flush(_gammaincc_rest(p, half_g, dof.to(torch.float64) * 0.5, closed))


def _mostly_one_dof(half_g: Tensor, dof: Tensor, low: int, top: int, workspace: Workspace) -> Tensor:
    """``_series_survival`` where rows' dof differ: the commonest one by the nested sum, the others by the block.

    Where an empty bin here and there takes a row or two off the common dof
    (counts up to 1 000, F = 10 000, B = 64: 97 % at dof 63), this took about
    two thirds of the block's time for all rows (0.54 against 0.66 ms).
    """
    common = int(torch.bincount(dof, minlength=top + 1).argmax())
    others = (dof != common).nonzero().flatten()
    if 2 * others.numel() > dof.numel():
        return _series_survival(half_g, dof, low, top, workspace)
    p = _one_dof_series(half_g, common)
    rest = dof[others]
    p[others] = _series_survival(half_g[others], rest, *torch.stack(torch.aminmax(rest)).tolist(), _fresh)
    return p


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


# --------------------------------------------------------------------------
# The permutation test of small tables
# --------------------------------------------------------------------------


def _permutation_p_values(reference: Tensor, current: Tensor, observations: Tensor, dof: Tensor, p_value: Tensor):
    """Replace ``p_value`` by the permutation test's where the table is small; which rows, as a bool [F] (or None).

    Rows whose windows hold ``PERMUTATION_MAX`` observations or fewer in all,
    with whole counts, dof > 0 and a Williams p-value within ``PERMUTATION_P``:
    above, no decision hangs on the approximation; below, no threshold a
    monitor uses is that small, and ``PERMUTATIONS`` draws could not resolve it.
    """
    low, high = PERMUTATION_P
    small = (observations <= PERMUTATION_MAX) & (dof > 0) & (p_value >= low) & (p_value <= high)
    if not small.any():
        return None
    rows = small.nonzero().flatten()
    tables = torch.stack([reference[rows], current[rows]])
    if tables.is_floating_point():
        whole = (tables.frac() == 0).all(dim=2).all(dim=0)  # weights: no permutation test for those
        rows, tables = rows[whole], tables[:, whole]
        small = torch.zeros_like(small).index_fill_(0, rows, True)
    if rows.numel():
        p_value[rows] = _permutation_test(tables[0].long(), tables[1].long())
    return small


def _permutation_test(reference: Tensor, current: Tensor) -> Tensor:
    """Monte Carlo p-values of the exact conditional test of [S, B] small whole count tables, float64 [S].

    Under "same distribution", given both windows' totals and the column
    totals, the reference row is multivariate hypergeometric: the pooled
    observations split at random. Tables are drawn that way (``_draw``),
    ``PERMUTATIONS`` at most per row, in rounds over all rows at once, and
    p counts those whose G is at least the observed one. Sequential, after
    Besag and Clifford (1991): a row stops at its ``EXCEEDANCES``-th such
    table, drawn the l-th, with p = EXCEEDANCES / l; one that never gets
    there has p = (hits + 1) / (PERMUTATIONS + 1). Both are valid p-values
    (P(p <= a) <= a under the null) whatever the number of draws, so the
    test holds its level at any size; a row with a large p stops early
    (~EXCEEDANCES / p draws), and p's Monte Carlo error is ~1 / sqrt(EXCEEDANCES)
    of it, or sqrt(p / PERMUTATIONS) for the rows that run to the end. The
    draws come from a generator seeded with a constant: the same call
    gives the same p-values.
    """
    columns = reference + current
    # The kept bins first, in a block as wide as the most any row has: the draw walks them in order.
    order = torch.argsort((columns == 0).to(torch.uint8), dim=1, stable=True)
    width = int((columns > 0).sum(dim=1).max())
    columns, reference = (t.gather(1, order[:, :width]) for t in (columns, reference))
    everyone = _Walk.of(columns, reference.sum(dim=1))
    observed = everyone.split_terms(reference.T.unsqueeze(2)).squeeze(1)
    observed -= 1e-10 * (1 + observed.abs())  # a tie in exact arithmetic is a hit, whatever the rounding
    generator = torch.Generator(device=columns.device).manual_seed(_PERMUTATION_SEED)
    hits = torch.zeros(len(columns), dtype=torch.int64, device=columns.device)
    p = torch.empty(len(columns), dtype=torch.float64, device=columns.device)
    active = torch.arange(len(columns), device=columns.device)
    drawn = 0
    for size in _rounds():
        exceed = _exceeding(everyone.subset(active), observed[active], size, generator)
        running = exceed.cumsum(dim=1).add_(hits[active].unsqueeze(1))
        done = running[:, -1] >= EXCEEDANCES
        before = (running[done] < EXCEEDANCES).sum(dim=1)  # draws before the EXCEEDANCES-th hit
        p[active[done]] = EXCEEDANCES / (drawn + before + 1).to(torch.float64)
        hits[active] = running[:, -1]
        active, drawn = active[~done], drawn + size
        if active.numel() == 0:
            return p
    p[active] = (hits[active] + 1).to(torch.float64) / (PERMUTATIONS + 1)
    return p


def _rounds() -> list[int]:
    """Draws per round: doubling from 100, so that rows with a large p stop after few, ``PERMUTATIONS`` in all."""
    sizes, size = [], 100
    while sum(sizes) + size < PERMUTATIONS:
        sizes.append(size)
        size *= 2
    return [*sizes, PERMUTATIONS - sum(sizes)]


@dataclass(frozen=True)
class _Walk:
    """Rows [S] of small tables, as ``_draw`` walks their pooled observations and ``split_terms`` scores them."""

    ends: Tensor  # [S, K] int64: where each bin's observations end in the walk (kept bins first)
    first_total: Tensor  # [S] int64: observations of the reference window
    offsets: Tensor  # [K, S, 1] int32: where each bin's terms start in ``terms``
    terms: Tensor  # f(a) + f(C_j - a) for a = 0 .. C_j, bin after bin of row after row, f(c) = c ln c

    @classmethod
    def of(cls, columns: Tensor, first_total: Tensor) -> _Walk:
        """Of column totals [S, K] (kept bins first) and the reference window's totals [S]."""
        device = columns.device
        sizes = (columns + 1).flatten()  # row-major [S, K]: a = 0 .. C_j
        starts = sizes.cumsum(dim=0) - sizes
        bin_of = torch.repeat_interleave(torch.arange(len(sizes), device=device), sizes)
        a = torch.arange(len(bin_of), device=device) - starts[bin_of]
        table = _xlogx_table(1 << int(columns.sum(dim=1).max()).bit_length(), 1, device)
        terms = table[a] + table[columns.flatten()[bin_of] - a]
        offsets = starts.view(columns.shape).T.unsqueeze(2).to(torch.int32)
        return cls(columns.cumsum(dim=1), first_total, offsets, terms)

    def subset(self, rows: Tensor) -> _Walk:
        """The walk of some rows (indices [S']): their own terms, in the same table."""
        return _Walk(self.ends[rows], self.first_total[rows], self.offsets[:, rows], self.terms)

    def left(self) -> Tensor:
        """Observations left before each step, [S, steps] float64 (0 once none are)."""
        totals = self.ends[:, -1:]
        return (totals - torch.arange(int(totals.max()), device=totals.device)).clamp_(min=0).to(torch.float64)

    def marks(self) -> Tensor:
        """Rows of the walk's record (``_draw``: [steps + 1, S, draws], viewed [-1, draws]) where each bin
        starts, then where the last ends: step t of row s is row t * S + s. [(K + 1) * S] int64."""
        rows = len(self.ends)
        at = torch.cat([torch.zeros_like(self.ends[:, :1]), self.ends], dim=1).T
        return (at * rows + torch.arange(rows, device=at.device)).flatten()

    def split_terms(self, reference: Tensor) -> Tensor:
        """sum_j f(a_j) + f(C_j - a_j) for reference counts [K, S, M] (any integer dtype): float64 [S, M].

        G / 2 minus terms the margins fix: it orders one row's tables as G
        does. One gather per bin from the row's own table of that bin.
        """
        index = reference.to(torch.int32).add_(self.offsets)
        return torch.index_select(self.terms, 0, index.reshape(-1)).view(index.shape).sum(dim=0)


def _exceeding(walk: _Walk, observed: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """Whether each of ``count`` random splits per row is at least as extreme as the observed table, bool [S, count].

    The walk goes in slices of ``_WALK_ELEMENTS`` draws over all rows and the
    scoring in parts of ``_SERIAL`` elements: every op then stays below the
    size where torch splits it across threads. The walk is hundreds of small
    ops, and with 2 threads on a busy 2-core machine it ran 5x slower than
    with one; its buffers also stay in the core's cache (the whole round at
    once ran 3x slower per step).
    """
    rows, width = len(observed), len(walk.offsets)
    left, marks = walk.left(), walk.marks()
    out = torch.empty((rows, count), dtype=torch.bool, device=observed.device)
    size = max(1, min(count, _WALK_ELEMENTS // rows))
    part = max(1, _SERIAL // (rows * (width + 1)))
    for start in range(0, count, size):
        draws = min(size, count - start)
        record = _draw(walk.first_total, left, draws, generator).view(-1, draws)
        for low in range(0, draws, part):
            high = min(draws, low + part)
            # Whole rows of draws at each bin boundary: a row gather, not one per element.
            at_marks = torch.index_select(record[:, low:high], 0, marks).view(width + 1, rows, high - low)
            scores = walk.split_terms(at_marks[:-1] - at_marks[1:])
            torch.ge(scores, observed.unsqueeze(1), out=out[:, start + low : start + high])
    return out


def _draw(first_total: Tensor, left: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` random splits of each row's pooled observations, as the walk's record: uint8 [steps + 1, S, count].

    Rows [S] whose reference window holds ``first_total`` of the pooled
    observations, with ``left`` [S, steps] of them left before each step.

    The pooled observations are walked one at a time, bin after bin, and each
    joins the reference with probability (reference draws still to make) /
    (observations left): a uniform split, whatever the order (sampling
    without replacement). One step per observation of the largest row, each
    over all rows and draws at once, recording the draws still to make (at
    most ``PERMUTATION_MAX``: a byte); each bin's count is their drop across it.

    Random numbers cost 20x the rest of a step, so one uniform u drives
    several: with v = u * (observations left), the observation joins where
    v < (draws still to make), and frac(v) is again uniform on [0, 1),
    independent of that. A step spends log2(observations left) of u's 53
    bits; u drives as many steps as spend at most 23 (3 at 200 observations,
    5 at 20), so each decision is within 2**-30 of its probability.
    """
    rows, steps = left.shape
    device = left.device
    reuse = max(1, int(23 / math.log2(max(steps, 2))))
    record = torch.empty((steps + 1, rows, count), dtype=torch.uint8, device=device)
    still = first_total.to(torch.float64).unsqueeze(1).repeat(1, count)
    record[0] = still
    u, v, taken = (torch.empty((rows, count), dtype=torch.float64, device=device) for _ in range(3))
    for t in range(steps):
        if t % reuse == 0:
            u.uniform_(generator=generator)
        torch.mul(u, left[:, t : t + 1], out=v)
        still.sub_(torch.lt(v, still, out=taken))
        record[t + 1] = still
        torch.frac(v, out=u)
    return record


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
    """What the test needs from the bins, per row, [F] each.

    ``terms``: sum_j T(O_1j, O_2j), T(a, b) = a ln a + b ln b - (a + b) ln(a + b),
    so that G / 2 = terms + sum_i R_i ln(N / R_i); ``kept``: the bins with
    C_j > 0 (int64); ``inverse_columns``: sum_j 1 / C_j over them (Williams).
    """

    terms: Tensor
    kept: Tensor
    inverse_columns: Tensor


def _bin_sums(reference, current, totals, pairs: PairIndex | None, largest, workspace: Workspace, trusted=False):
    """The per-row bin sums (``_BinSums``) by the cheapest path the counts allow (see ``g_test``)."""
    if pairs is not None:
        sums = _pair_bin_sums(pairs, workspace)
        if sums is not None:
            return sums
    if reference.is_floating_point():
        if largest is None and reference.numel():
            largest = max(torch.amax(w).item() for w in (reference, current))
        whole = _whole_counts(reference, current, totals, largest, workspace, trusted)
        if whole is None:
            return _log_bin_sums(reference, current, workspace)
        sums = _small_whole_bin_sums(whole, largest, workspace)
        if sums is not None:
            return sums
        windows, columns = whole, None  # C_j: once the windows' own terms are gathered
    else:
        windows, columns = (reference, current), _column_totals(reference, current, workspace)
    tables = _tables_for(windows[0], columns, totals, largest)
    if tables is None:
        return _log_bin_sums(reference.to(torch.float64), current.to(torch.float64), workspace)
    return _table_bin_sums(windows, columns, tables, workspace)


def _whole_counts(reference, current, totals: Tensor, largest, workspace: Workspace, trusted=False) -> Tensor | None:
    """Float64 counts as one int32 [2, F, B] block; None unless every count is a whole number below ``TABLE_MAX / 2``.

    Unless ``trusted``, the check is exact (``_fractions_zero``). Trusted
    counts (the caller says they are whole) are checked by their row totals
    instead (``_totals_match``).
    """
    if reference.numel() == 0 or largest is None:
        return None
    if not 0 <= 2 * largest < TABLE_MAX:  # (then the table covers every column total too)
        return None
    trusted = trusted and reference.shape[1] * largest < 2.0**31  # (int32 row sums cannot wrap around)
    if not trusted and not _fractions_zero(reference, current, workspace):
        return None
    # In the float64 buffer the engine has just used (still in cache), as int32: [F, B] float64 = [2, F, B] int32.
    whole = workspace("column_terms", tuple(reference.shape), torch.float64, reference.device)
    whole = whole.view(torch.int32).view(2, *reference.shape)
    for counts, out in zip((reference, current), whole, strict=True):
        out.copy_(counts)
    if trusted and not _totals_match(whole, totals):
        return None  # fractional after all: the log path
    return whole


def _totals_match(whole: Tensor, totals: Tensor) -> bool:
    """Whether the int32 counts, truncated, still sum to the float64 row totals: the check of trusted counts.

    Truncation only lowers a count, so a row keeps its total only if none
    of its counts had a fraction that total can see (whole counts always
    do: their sums are exact). A fraction below the total's rounding (~1e-16
    of it) would be truncated unseen: hence the caller's word. Int32 row
    sums, a tenth of the time of the two passes the exact check takes (an
    int64 sum of int32 took 10x longer than this).
    """
    return bool(torch.equal(whole.sum(dim=2, dtype=torch.int32).to(torch.float64), totals))


def _fractions_zero(reference: Tensor, current: Tensor, workspace: Workspace) -> bool:
    """Whether every count is a whole number, exactly: two passes over the counts.

    Fractional parts are each >= 0, so their sum is 0 only if every one is
    (a nan count makes it nan). Both windows' fractional parts go through
    one [F, B] buffer, the one the gathers write next: the fewer big buffers
    the test touches, the more of them the cache holds.
    """
    fractions = workspace("terms", tuple(reference.shape), torch.float64, reference.device)
    fraction_sums = [torch.frac(counts, out=fractions).sum() for counts in (reference, current)]
    return (fraction_sums[0] + fraction_sums[1]).item() == 0


def _small_whole_bin_sums(whole: Tensor, largest: float | None, workspace: Workspace) -> _BinSums | None:
    """The pair-table path for whole float counts all below ``PAIR_MAX`` (None otherwise).

    ``largest`` bounds both windows, so the table's width (above every count)
    also leaves room for every reference count in its rows. The index
    overwrites the reference counts.
    """
    if largest is None or largest >= PAIR_MAX:
        return None
    width = max(_PAIR_MIN, 1 << int(largest).bit_length())
    index = torch.add(whole[1], whole[0], alpha=width, out=whole[0])
    return _pair_bin_sums(PairIndex(index, width, _PAIR_ENTRIES // width), workspace)


def _column_totals(reference: Tensor, current: Tensor, workspace: Workspace) -> Tensor:
    """C_j = O_1j + O_2j of integer counts (they index the tables)."""
    out = workspace("columns", tuple(reference.shape), reference.dtype, reference.device)
    return torch.add(reference, current, out=out)


def _kept_bins(columns: Tensor) -> Tensor:
    """Bins non-empty in either window, per row, int64, from float column totals."""
    return (columns > 0).sum(dim=1)


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
    log(b + alpha) with the same index (``driftmon.stats.divergence``).
    """

    index: Tensor  # [F, B] int64 (int32 from float counts), in the workspace's "columns" buffer
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
    """The bin sums from the pair tables, or None past their rows.

    One gather per bin for T (where the c ln c path takes three and a
    column sum) and one for 1 / C_j, whose sign then counts the kept bins.
    The tables' width is the power of 2 above the largest current count,
    which keeps the entries one call touches close together (a 512-wide
    table gathered 1.6x slower than a 128-wide one on the same counts).
    """
    index = pairs.index.view(-1)
    values = workspace("terms", (index.numel(),), torch.float64, index.device)
    try:
        torch.index_select(_pair_table(pairs.width, index.device), 0, index, out=values)
    except IndexError:  # a reference count past the table's rows: the general path
        return None
    terms = _row_sums_of(values.view(pairs.index.shape))
    torch.index_select(_pair_inverse_table(pairs.width, index.device), 0, index, out=values)
    return _BinSums(terms, *_kept_and_inverse(values.view(pairs.index.shape)))


def _kept_and_inverse(inverses: Tensor) -> tuple[Tensor, Tensor]:
    """(kept bins as int64, sum_j 1 / C_j) per row from [F, B] gathered 1 / C_j (0 for an empty bin).

    Overwrites ``inverses``: their sign is 1 exactly on the kept bins, and a
    float sum of it a third of the time of clamping and summing int32 totals.
    """
    inverse_sums = _row_sums_of(inverses)
    return _row_sums_of(inverses.sign_()).to(torch.int64), inverse_sums


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


@functools.lru_cache(maxsize=4)
def _pair_inverse_table(width: int, device: torch.device) -> Tensor:
    """1 / (a + b) at a * width + b (``_pair_table``'s layout), 0 where both are 0; read only."""
    major = torch.arange(_PAIR_ENTRIES // width, dtype=torch.float64).unsqueeze(1)
    return _inverse((major + torch.arange(width, dtype=torch.float64)).flatten()).to(device)


def _inverse(values: Tensor) -> Tensor:
    """1 / c, 0 at c = 0."""
    return torch.where(values > 0, 1.0 / values.clamp(min=1), 0.0)


def _weighted_log1p(a: Tensor, b: Tensor) -> Tensor:
    """a ln(1 + b / a), 0 where a is 0."""
    return torch.where(a > 0, a * torch.log1p(b / a.clamp(min=1)), 0.0)


def _tables_for(windows: Tensor, columns: Tensor | None, totals: Tensor, largest: float | None):
    """(c ln(c / s), 1 / c) tables that cover every column total, if the counts are integers that fit; else None.

    Sized to the data by powers of 2 (smaller tables gather faster), and s
    the power of 2 nearest the largest column total: from one pass over the
    column totals where they are given (integer counts), from ``largest``
    (the largest count: float counts, whose column totals come later) where not.
    """
    if windows.is_floating_point() or totals.numel() == 0:
        return None
    if columns is not None:
        if not totals.sum(dim=0).max().item() < 2.0**62:
            return None  # (below, no sum of two counts has wrapped around)
        top = bound = columns.amax().item()
    elif largest is not None:
        top, bound = largest, 2 * largest
    else:
        return None
    if not bound < TABLE_MAX:
        return None
    size = max(_TABLE_MIN, 1 << int(bound).bit_length())
    scale = 1 << max(0, round(math.log2(max(top, 1))))
    return _xlogx_table(size, scale, windows.device), _inverse_table(size, windows.device)


def _table_bin_sums(windows, columns: Tensor | None, tables: tuple[Tensor, Tensor], workspace: Workspace) -> _BinSums:
    """The bin sums from a table of f(c) = c ln(c / s) (``_xlogx_table``) and one of 1 / c: gathers, no logs.

    T(a, b) = f(a) + f(b) - f(a + b) for any s: the linear terms cancel. With
    s near the largest counts (``_tables_for``), the entries that dominate (a
    week's reference, 20 000 per bin: c ln c ~ 2e5) are 20x smaller, and so
    is the rounding of their sums: with plain c ln c G, ~dof where nothing
    drifts, was 5e-11 off (relative), now 3e-12 (F = 40, B = 64, against a
    40-digit reference). ``windows``: the two windows' counts, two integer
    [F, B] tables or one int32 [2, F, B] block (one gather for both); with
    ``columns`` None, C_j is written over the block's reference half.
    """
    xlogx, inverse = tables
    reference, current = windows
    values = workspace("terms", tuple(reference.shape), torch.float64, reference.device)
    terms = _row_sums_of(_gather(xlogx, reference, values)) + _row_sums_of(_gather(xlogx, current, values))
    if columns is None:
        columns = reference.add_(current)
    terms -= _row_sums_of(_gather(xlogx, columns, values))
    return _BinSums(terms, *_kept_and_inverse(_gather(inverse, columns, values)))


def _gather(table: Tensor, index: Tensor, out: Tensor) -> Tensor:
    """table[index] into ``out`` (of the index's shape)."""
    torch.index_select(table, 0, index.reshape(-1), out=out.view(-1))
    return out


def _log_bin_sums(reference: Tensor, current: Tensor, workspace: Workspace) -> _BinSums:
    """The bin sums with logs, float64 counts: one log per count, and row dots that write nothing big.

    O ln(O / C) is taken as O ln(max(O / C, tiny)): 0 where O is 0 (C = 0 only
    there), and plain ``log`` is half the time of ``xlogy``. A share O / C
    below 2.2e-308 would be raised to it (weights that far apart are not counts).
    """
    shape = reference.shape
    buffers = workspace("column_terms", (2, *shape), torch.float64, reference.device)
    columns, scratch = buffers.unbind()
    torch.add(reference, current, out=columns)
    kept = _kept_bins(columns)
    # 1 / C_j over the kept bins: 1 / 0 = inf on the others, set to 0.
    inverse_sums = _row_sums_of(torch.reciprocal(columns, out=scratch).nan_to_num_(posinf=0.0))
    columns.clamp_(min=_TINY)
    terms = torch.zeros(shape[0], dtype=torch.float64, device=reference.device)
    for counts in (reference, current):
        torch.div(counts, columns, out=scratch).clamp_(min=_TINY).log_()
        terms += torch.bmm(counts.unsqueeze(1), scratch.unsqueeze(2)).flatten()
    return _BinSums(terms, kept, inverse_sums)


@functools.lru_cache(maxsize=8)
def _xlogx_table(size: int, scale: int, device: torch.device) -> Tensor:
    """c ln(c / scale) for c = 0 .. size - 1 (0 at 0), float64; read only.

    ``scale`` is a power of 2, so c / scale is exact: each entry is c times one rounded log.
    """
    values = torch.arange(size, dtype=torch.float64, device=device)
    return torch.xlogy(values, values / scale)


@functools.lru_cache(maxsize=8)
def _inverse_table(size: int, device: torch.device) -> Tensor:
    """1 / c for c = 0 .. size - 1, 0 at 0, float64; read only."""
    return _inverse(torch.arange(size, dtype=torch.float64, device=device))
