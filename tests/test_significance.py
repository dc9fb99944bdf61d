"""The G-test and Benjamini-Hochberg against scipy, the small-sample corrections, and the false-alarm rate.

Expected values are computed independently, row by row, on the 2 x B table
of the raw counts with the bins empty in both windows dropped: G and dof
from ``chi2_contingency(table, correction=False, lambda_="log-likelihood")``,
Williams' correction q from its formula in numpy (scipy's ``correction``
is Yates', for dof 1 only), the p-value from ``chi2.sf(G / q, dof)``; exact
conditional p-values, for the permutation test, by enumerating every table
with the same margins; q-values from ``false_discovery_control(p, method="bh")``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import comb, xlogy
from scipy.stats import binom, chi2, chi2_contingency, false_discovery_control, nbinom
from torch import Tensor

from driftmon.stats.divergence import divergences
from driftmon.stats.significance import (
    EXCEEDANCES,
    PAIR_MAX,
    PERMUTATION_MAX,
    PERMUTATION_P,
    PERMUTATIONS,
    SERIES_DOF,
    benjamini_hochberg,
    chi2_survival,
    g_test,
    pair_index,
)

PROPERTY = settings(deadline=None, max_examples=100)
# The closed-form survival function is within 2.3e-13 of scipy's (dof 0 .. SERIES_DOF, p down to 1e-308).
SURVIVAL_RTOL = 1e-12
P_RTOL = 1e-11
# Above SERIES_DOF, torch's gammaincc: off by up to 2e-9 where the statistic lies within 30 % of dof.
GAMMAINCC_RTOL = 3e-9
G_RTOL = 1e-12
TINY = np.finfo(np.float64).tiny


def scipy_g_test(reference: np.ndarray, current: np.ndarray) -> tuple[float, int, float]:
    """(G, dof, uncorrected p) of one row; a row with an empty window is (0, 0, 1), as the engine defines it."""
    table = kept_table(reference, current)
    if (table.sum(axis=1) == 0).any():
        return 0.0, 0, 1.0
    g, p, dof, _ = chi2_contingency(table, correction=False, lambda_="log-likelihood")
    return float(g), int(dof), float(p)


def kept_table(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    table = np.stack([reference, current]).astype(np.float64)
    return table[:, table.sum(axis=0) > 0]


def williams(reference: np.ndarray, current: np.ndarray) -> float:
    """Williams' q of an r x c table: 1 + (N sum 1/R_i - 1)(N sum 1/C_j - 1) / (6 N (r - 1)(c - 1)); 1 if untested."""
    table = kept_table(reference, current)
    rows, columns = table.sum(axis=1), table.sum(axis=0)
    r, c, n = len(rows), len(columns), table.sum()
    if c < 2 or (rows == 0).any():
        return 1.0
    return 1 + (n * (1 / rows).sum() - 1) * (n * (1 / columns).sum() - 1) / (6 * n * (r - 1) * (c - 1))


def g_rounding(reference: np.ndarray, current: np.ndarray) -> float:
    """A bound on float64 rounding in G (either implementation): a few ulps of N ln N."""
    n = float(reference.sum() + current.sum())
    return 64 * np.finfo(np.float64).eps * n * math.log(n + 2)


def may_be_permuted(reference: np.ndarray, current: np.ndarray, p_williams: float) -> bool:
    """Whether ``g_test`` may take the permutation test's p-value for this row (the borders with some slack)."""
    whole = (np.mod(reference, 1) == 0).all() and (np.mod(current, 1) == 0).all()
    low, high = PERMUTATION_P
    small = reference.sum() + current.sum() <= PERMUTATION_MAX
    return bool(whole and small and low * (1 - 1e-6) <= p_williams <= high * (1 + 1e-6))


def assert_matches_scipy(result, reference, current, p_rtol=P_RTOL, permutation=True) -> None:
    """G and dof as scipy's; p as chi2.sf(G / q) to 1e-11 relative, widened only by what G's own rounding moves it.

    Near G = 0 with dof 1, p = 1 - sqrt(2G / pi): a rounding-level G of 1e-15
    moves p by 3e-8, in scipy's formula as in ours, so p is held to the
    range of the survival function over G +- that rounding. Rows that the
    permutation test may take (small, with a Williams p within
    ``PERMUTATION_P``) only have to hold a p-value it can give.
    """
    statistic = getattr(result, "g_statistic", None)
    statistic = result.statistic if statistic is None else statistic
    for row, (ref, cur) in enumerate(zip(np.asarray(reference), np.asarray(current), strict=True)):
        g, dof, _ = scipy_g_test(ref, cur)
        slack, q = g_rounding(ref, cur), williams(ref, cur)
        assert result.dof[row].item() == dof
        assert statistic[row].item() == pytest.approx(g, rel=G_RTOL, abs=slack)
        p = result.p_value[row].item()
        expected = chi2.sf(g / q, dof) if dof else 1.0
        if permutation and dof and may_be_permuted(ref, cur, expected):
            assert 1 / (PERMUTATIONS + 1) <= p <= 1
            continue
        if expected < TINY:  # subnormal: documented as exactly 0.0
            assert p == 0.0
            continue
        low, high = (chi2.sf(max(g + d, 0.0) / q, dof) if dof else 1.0 for d in (slack, -slack))
        assert low * (1 - p_rtol) <= p <= high * (1 + p_rtol)


@st.composite
def count_tables(draw, max_rows=6, max_bins=12):
    """Two same-shaped tables: small, table-path and log-path magnitudes, many empty bins."""
    rows = draw(st.integers(1, max_rows))
    bins = draw(st.integers(1, max_bins))
    top = draw(st.sampled_from([2, 1_000, 10**5]))
    values = st.one_of(st.just(0), st.integers(0, top))
    table = arrays(np.int64, (rows, bins), elements=values)
    return draw(table), draw(table)


# --------------------------------------------------------------------------
# The G-test
# --------------------------------------------------------------------------


@PROPERTY
@given(tables=count_tables(), as_float=st.booleans(), dtype=st.sampled_from(["float64", "float32"]))
def test_g_test_matches_scipy(tables, as_float, dtype):
    # Integer counts take the c ln c table, float counts the log path; G is float64 either way.
    reference, current = (t.astype(np.float64) if as_float else t for t in tables)
    assert_matches_scipy(divergences(reference, current, device="cpu", dtype=dtype), reference, current)


@PROPERTY
@given(tables=count_tables(), extra=st.integers(1, 5), junk=st.sampled_from([0, 9, math.nan]))
def test_padding_drops_out_of_the_test(tables, extra, junk):
    reference, current = (t.astype(type(junk)) for t in tables)
    width = reference.shape[1] + extra
    pad = np.full((reference.shape[0], extra), junk)
    mask = np.arange(width) < reference.shape[1]
    mask = np.broadcast_to(mask, (reference.shape[0], width))
    padded = divergences(np.hstack([reference, pad]), np.hstack([current, pad]), mask, device="cpu")
    assert_matches_scipy(padded, reference, current)


def test_huge_counts_and_tiny_p_values():
    reference = np.array([[10**12, 2 * 10**12, 3 * 10**12], [500, 0, 0], [520, 480, 0], [10**12, 0, 5]])
    current = np.array([[2 * 10**12, 10**12, 5], [0, 500, 0], [0, 1000, 0], [0, 10**12, 5]])
    for kind in (np.int64, np.float64):
        result = divergences(reference.astype(kind), current.astype(kind), device="cpu")
        assert_matches_scipy(result, reference, current)
        assert not result.p_value.isnan().any() and (result.p_value >= 0).all()
        assert result.p_value[0].item() == 0.0  # G ~ 1e12: far below the smallest float64
        assert 0 < result.p_value[1].item() < 1e-300  # G = 2000 ln 2, p ~ 1e-302: still exact
        assert 0 < result.p_value[2].item() < 1e-150


def test_p_value_is_one_without_a_test():
    reference = np.array([[5, 0, 0], [0, 0, 0], [3, 0, 4], [0, 0, 0]])
    current = np.array([[9, 0, 0], [1, 2, 3], [0, 0, 0], [0, 0, 0]])
    result = divergences(reference, current, device="cpu")
    assert result.p_value.tolist() == [1.0] * 4  # one non-empty bin; empty windows
    assert result.dof.tolist() == [0.0] * 4 and result.g_statistic.tolist() == [0.0] * 4


def test_identical_windows_are_not_significant():
    counts = np.array([[0, 3, 9, 1], [7, 7, 0, 2]])
    result = divergences(counts, counts * 10, device="cpu")
    assert result.g_statistic.abs().max().item() < 1e-9
    assert (result.p_value > 1 - 1e-9).all()


def test_fractional_counts_are_used_as_they_are():
    reference, current = np.array([[0.5, 2.25, 0.0, 4.0]]), np.array([[1.5, 0.25, 0.0, 3.0]])
    assert_matches_scipy(divergences(reference, current, device="cpu"), reference, current)


def test_significance_can_be_switched_off():
    result = divergences(np.ones((2, 3)), np.ones((2, 3)), device="cpu", significance=False)
    assert result.g_statistic is None and result.dof is None and result.p_value is None


def test_g_test_alone_matches_the_engine():
    rng = np.random.default_rng(4)
    reference, current = (torch.as_tensor(t) for t in rng.integers(0, 40, (2, 30, 9)))
    alone = g_test(reference, current)
    engine = divergences(reference, current, device="cpu")
    torch.testing.assert_close(alone.p_value, engine.p_value, rtol=1e-12, atol=0)


def test_williams_correction_matches_its_formula():
    rng = np.random.default_rng(21)
    means = rng.uniform(0, 12, (300, 8))
    reference, current = rng.poisson(means), rng.poisson(means * rng.uniform(0.2, 3, (300, 1)))
    reference[:40, :3] = current[:40, :3] = 0  # empty bins drop out of c
    reference[40:50, 1:] = current[40:50, 1:] = 0  # one bin: dof 0, q 1
    current[50:55] = 0  # an empty window: q 1
    result = g_test(torch.from_numpy(reference), torch.from_numpy(current), permutation=False)
    expected = [williams(ref, cur) for ref, cur in zip(reference, current, strict=True)]
    np.testing.assert_allclose(result.correction.numpy(), expected, rtol=1e-13, atol=0)
    assert (result.correction >= 1).all() and not result.permuted.any()
    assert_matches_scipy(result, reference, current, permutation=False)


@pytest.mark.parametrize(
    "scale",
    [
        (50, 50),  # every count below PAIR_MAX: the pair tables
        (1_000, 1_000),  # the c ln(c / s) table
        (20_000, 200),  # a week's reference against an hour: the c ln(c / s) table, s near 20 000
        (10**6, 10**4),  # column totals past TABLE_MAX: logs
    ],
)
def test_whole_float_counts_give_what_integer_counts_give(scale):
    # The pipeline passes float64 counts: whole ones take the same tables as int64 ones.
    rng = np.random.default_rng(scale[0])
    shares = rng.dirichlet(np.ones(12), size=60)
    reference, current = (rng.poisson(shares * 12 * mean) for mean in scale)
    reference[:5, :4] = current[:5, :4] = 0
    as_int = g_test(torch.from_numpy(reference), torch.from_numpy(current))
    as_float = g_test(torch.from_numpy(reference.astype(np.float64)), torch.from_numpy(current.astype(np.float64)))
    # The same tables up to the scale s of c ln(c / s), which each picks from what it knows (integer counts:
    # the largest column total; float counts: the largest count): rounding apart, within 1e-11 of each other.
    torch.testing.assert_close(as_float.statistic, as_int.statistic, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(as_float.p_value, as_int.p_value, rtol=1e-11, atol=0)
    assert_matches_scipy(as_float, reference, current)
    engine = divergences(reference.astype(np.float64), current.astype(np.float64), device="cpu")
    torch.testing.assert_close(engine.p_value, as_float.p_value, rtol=1e-11, atol=0)


def test_a_fraction_anywhere_keeps_the_counts_as_they_are():
    # Whole-valuedness is checked exactly: 2**-30 of an observation is not truncated away.
    rng = np.random.default_rng(5)
    reference, current = rng.poisson(30, (2, 4, 6)).astype(np.float64)
    reference[1, 2] += 2.0**-30
    current[3, 0] += 0.5
    result = divergences(reference, current, device="cpu")
    assert_matches_scipy(result, reference, current)
    truncated = divergences(np.floor(reference), np.floor(current), device="cpu")
    assert result.g_statistic[1] != truncated.g_statistic[1] and result.g_statistic[3] != truncated.g_statistic[3]
    torch.testing.assert_close(result.g_statistic[[0, 2]], truncated.g_statistic[[0, 2]], rtol=1e-12, atol=0)


@pytest.mark.parametrize("scale", [(50, 50), (1_000, 1_000), (20_000, 200), (10**6, 10**4)])
def test_whole_counts_said_whole_give_the_checked_values(scale):
    # The pipeline says an events source's float64 counts are whole: the same tables, bit for bit.
    rng = np.random.default_rng(scale[1])
    shares = rng.dirichlet(np.ones(12), size=60)
    reference, current = (rng.poisson(shares * 12 * mean).astype(np.float64) for mean in scale)
    mask = np.ones(reference.shape, dtype=bool)
    mask[:5, 9:] = False
    checked = divergences(reference, current, mask, device="cpu")
    trusted = divergences(reference, current, mask, device="cpu", whole_counts=True)
    for name in ("kl", "psi", "js", "g_statistic", "dof", "p_value"):
        assert torch.equal(getattr(trusted, name), getattr(checked, name)), name


def test_whole_counts_said_whole_still_see_a_fraction():
    # One comparison of sums: a fraction the totals see sends the counts to the log path, as they are.
    rng = np.random.default_rng(6)
    reference, current = rng.poisson(30, (2, 4, 6)).astype(np.float64)
    current[3, 0] += 0.5
    reference[1, 2] += 2.0**-30
    trusted = divergences(reference, current, device="cpu", whole_counts=True)
    checked = divergences(reference, current, device="cpu")
    assert_matches_scipy(trusted, reference, current)
    assert torch.equal(trusted.g_statistic, checked.g_statistic)


# --------------------------------------------------------------------------
# The permutation test of small tables
# --------------------------------------------------------------------------


def exact_conditional_p(reference: np.ndarray, current: np.ndarray) -> float:
    """P(G >= the observed G) over every table with the same margins, each with its hypergeometric probability."""
    table = kept_table(reference, current).astype(np.int64)
    columns, first = table.sum(axis=0), int(table[0].sum())
    splits = np.array(list(itertools.product(*(range(c + 1) for c in columns))))
    splits = splits[splits.sum(axis=1) == first]
    weights = comb(columns, splits).prod(axis=1) / comb(columns.sum(), first)
    terms = (xlogy(splits, splits) + xlogy(columns - splits, columns - splits)).sum(axis=1)
    observed = (xlogy(table, table)).sum()
    return float(weights[terms >= observed - 1e-9 * (1 + abs(observed))].sum())


def test_permutation_p_values_match_exact_enumeration():
    rng = np.random.default_rng(17)
    shares = rng.dirichlet(np.ones(4), size=400)
    reference = np.stack([rng.multinomial(n, s) for n, s in zip(rng.integers(5, 13, 400), shares, strict=True)])
    current = np.stack([rng.multinomial(n, s[::-1]) for n, s in zip(rng.integers(5, 13, 400), shares, strict=True)])
    result = g_test(torch.from_numpy(reference), torch.from_numpy(current))
    permuted = result.permuted.numpy()
    assert 40 <= permuted.sum() < len(permuted)
    mc = result.p_value.numpy()[permuted]
    exact = np.array([exact_conditional_p(*row) for row in zip(reference[permuted], current[permuted], strict=True)])
    # A row stopped at its EXCEEDANCES-th hit, drawn the l-th (p = EXCEEDANCES / l > EXCEEDANCES / (PERMUTATIONS + 1)):
    # l - EXCEEDANCES ~ NegativeBinomial(EXCEEDANCES, exact). Or it ran to the end with k hits (p = (k + 1) /
    # (PERMUTATIONS + 1)): k ~ Binomial(PERMUTATIONS, exact). Each within its central 1 - 2e-6 (~5 sd).
    ran_out = mc * (PERMUTATIONS + 1) <= EXCEEDANCES + 1e-6
    hits = np.round(mc * (PERMUTATIONS + 1)) - 1
    low, high = binom.ppf([[1e-6], [1 - 1e-6]], PERMUTATIONS, exact)
    assert ((low <= hits) & (hits <= high))[ran_out].all()
    misses = np.round(EXCEEDANCES / mc) - EXCEEDANCES
    low, high = nbinom.ppf([[1e-6], [1 - 1e-6]], EXCEEDANCES, exact)
    assert ((low <= misses) & (misses <= high))[~ran_out].all()
    ratio = (mc / exact)[exact > 0.01]
    assert len(ratio) >= 20 and abs(ratio.mean() - 1) < 0.1
    # Not the chi-square p-values: those are 1.2-2.5x smaller at these sizes (the finding of issue 13).
    uncorrected = np.array([scipy_g_test(*row)[2] for row in zip(reference[permuted], current[permuted], strict=True)])
    assert np.median(exact / uncorrected) > 1.2


def test_permutation_test_only_where_documented_and_reproducible():
    rng = np.random.default_rng(3)
    reference, current = rng.poisson(6, (2, 300, 5))
    current[:100] = rng.poisson(np.array([2, 4, 6, 8, 10]), (100, 5))  # some drift
    reference[200:] *= 3  # N above PERMUTATION_MAX for many
    first = g_test(torch.from_numpy(reference), torch.from_numpy(current))
    williams_only = g_test(torch.from_numpy(reference), torch.from_numpy(current), permutation=False)
    low, high = PERMUTATION_P
    eligible = (
        torch.from_numpy(reference.sum(axis=1) + current.sum(axis=1) <= PERMUTATION_MAX)
        & (williams_only.p_value >= low)
        & (williams_only.p_value <= high)
        & (williams_only.dof > 0)
    )
    assert torch.equal(first.permuted, eligible) and eligible.any()
    torch.testing.assert_close(first.p_value[~eligible], williams_only.p_value[~eligible], rtol=0, atol=0)
    assert (first.p_value[eligible] >= 1 / (PERMUTATIONS + 1)).all()
    again = g_test(torch.from_numpy(reference), torch.from_numpy(current))
    assert torch.equal(again.p_value, first.p_value)
    weights = g_test(torch.from_numpy(reference + 0.25), torch.from_numpy(current + 0.25))
    assert not weights.permuted.any()  # fractional counts are not observations to permute


# --------------------------------------------------------------------------
# Small windows: the level under no drift
# --------------------------------------------------------------------------

NULL_COLUMNS = 4_000
# A test that holds its level rejects Binomial(NULL_COLUMNS, <= alpha) columns: above alpha + 3.5 sd
# with probability 2.3e-4 (normal tail), so the 18 checks below pass for a valid test but for 0.5 % of seeds.
Z = 3.5
NULL_SHARES = {
    "uniform over 5": np.full(5, 0.2),
    "uniform over 10": np.full(10, 0.1),
    "skewed over 10": 0.6 ** np.arange(10) / (0.6 ** np.arange(10)).sum(),
}


def level_bound(alpha: float, columns: int = NULL_COLUMNS) -> float:
    return alpha + Z * math.sqrt(alpha * (1 - alpha) / columns)


def null_windows(shares: np.ndarray, per_window: int, columns: int, seed: int) -> tuple[Tensor, Tensor]:
    rng = np.random.default_rng(seed)
    return tuple(torch.from_numpy(rng.multinomial(per_window, shares, size=columns)) for _ in range(2))


@pytest.mark.parametrize("per_window", [10, 20, 50])
@pytest.mark.parametrize("shape", list(NULL_SHARES))
def test_small_windows_hold_the_level(shape, per_window):
    # Both windows from the same distribution, 4 000 columns in one batched call.
    result = g_test(*null_windows(NULL_SHARES[shape], per_window, NULL_COLUMNS, seed=per_window))
    for alpha in (0.05, 0.01):
        assert (result.p_value <= alpha).double().mean().item() <= level_bound(alpha)
    # The finding of issue 13, kept so that this test can fail: the same G with its plain chi-square
    # p-value, the test before the corrections, flags 7-14 % of these columns at 5 % (10-20 per window).
    dof = result.dof.numpy()
    uncorrected = np.where(dof > 0, chi2.sf(result.statistic.numpy(), np.maximum(dof, 1)), 1.0)
    if per_window <= 20:
        assert (uncorrected <= 0.05).mean() > level_bound(0.05)


def test_williams_correction_alone_over_rejects_a_few_even_bins():
    # Why small tables take the permutation test: uniform over 5 bins, 20 per window, Williams'
    # chi-square p-value flags ~5.9 % at 5 % (40 000 columns; the bound allows 5.4 %).
    columns = 40_000
    result = g_test(*null_windows(NULL_SHARES["uniform over 5"], 20, columns, seed=1), permutation=False)
    assert (result.p_value <= 0.05).double().mean().item() > level_bound(0.05, columns)


def scipy_survival(statistic: np.ndarray, dof: np.ndarray) -> np.ndarray:
    expected = np.where(dof > 0, chi2.sf(statistic, np.maximum(dof, 1)), 1.0)
    expected[expected < TINY] = 0.0
    return expected


# Multiples of dof from the far left tail to p ~ 1e-300, and fixed statistics from 0 to inf.
SCALES = np.concatenate([np.geomspace(1e-6, 1, 12), np.linspace(1, 4, 31), np.geomspace(4, 60, 12)])
FIXED = np.array([0.0, 1e-300, 1e-30, 1e-12, 1e-6, 0.5, 1e3, 1.5e3, 1e4, 1e12, math.inf])


def survival_grid(dofs) -> tuple[np.ndarray, np.ndarray]:
    dof = np.repeat(np.asarray(dofs, dtype=np.float64), len(SCALES) + len(FIXED))
    statistic = np.concatenate([np.concatenate([d * SCALES, FIXED]) for d in dofs])
    return statistic, dof


def test_chi2_survival_against_scipy():
    # Every whole dof the closed form takes, in one call (the [F, dof / 2] block of ratios).
    statistic, dof = survival_grid(range(SERIES_DOF + 1))
    p = chi2_survival(torch.from_numpy(statistic), torch.from_numpy(dof)).numpy()
    expected = scipy_survival(statistic, dof)
    np.testing.assert_allclose(p, expected, rtol=SURVIVAL_RTOL, atol=0)
    assert ((p == 0) == (expected == 0)).all() and (expected[(statistic > 1e3) & (dof < 60)] == 0).any()
    assert ((expected > 0) & (expected < 1e-290)).any()  # the grid reaches the bottom of float64


@pytest.mark.parametrize("dof", [0, 1, 2, 3, 4, 9, 10, 40, 41, 63, 64, 99, SERIES_DOF])
def test_chi2_survival_with_one_dof_against_scipy(dof):
    # A call whose rows all share one dof takes the nested sum instead of the block.
    statistic, dofs = survival_grid([dof])
    p = chi2_survival(torch.from_numpy(statistic), torch.from_numpy(dofs)).numpy()
    np.testing.assert_allclose(p, scipy_survival(statistic, dofs), rtol=SURVIVAL_RTOL, atol=0)


def test_chi2_survival_beyond_the_closed_form():
    # Larger and fractional dof take torch's gammaincc, mixed in one call with the closed form's.
    statistic, dof = survival_grid([3, 63, SERIES_DOF + 1, 250, 2.5, 40.5])
    keep = np.isfinite(statistic) & (statistic < 1e6)
    statistic, dof = statistic[keep], dof[keep]
    p = chi2_survival(torch.from_numpy(statistic), torch.from_numpy(dof)).numpy()
    expected = scipy_survival(statistic, dof)
    closed = (dof <= SERIES_DOF) & (dof == np.floor(dof))
    np.testing.assert_allclose(p[closed], expected[closed], rtol=SURVIVAL_RTOL, atol=0)
    np.testing.assert_allclose(p[~closed], expected[~closed], rtol=GAMMAINCC_RTOL, atol=0)


def test_chi2_survival_edge_values():
    statistic = torch.tensor([5.0, 0.0, -3.0, math.nan, math.inf, 1e-320, 2.0])
    dof = torch.tensor([0.0, 7.0, 7.0, 7.0, 7.0, 1.0, -1.0])
    p = chi2_survival(statistic, dof)
    assert p.dtype == torch.float64
    assert p[[0, 1, 2, 6]].tolist() == [1.0] * 4  # dof 0 (or below), statistic 0 or below
    assert p[3].isnan() and p[4].item() == 0.0 and p[5].item() == pytest.approx(1.0, abs=1e-150)
    grid = chi2_survival(torch.tensor([[1.0], [8.0]]), torch.tensor([2.0, 4.0, 6.0]))  # broadcasts
    np.testing.assert_allclose(grid.numpy(), chi2.sf([[1.0], [8.0]], [2, 4, 6]), rtol=SURVIVAL_RTOL)
    assert chi2_survival(torch.zeros(0), torch.zeros(0)).shape == (0,)


def test_many_bins_take_gammaincc_beyond_the_closed_form():
    rng = np.random.default_rng(8)
    reference, current = rng.poisson(20, (2, 6, SERIES_DOF + 40))
    current[:3, SERIES_DOF - 10 :] = reference[:3, SERIES_DOF - 10 :] = 0  # dof below SERIES_DOF
    result = divergences(reference, current, device="cpu")
    assert (result.dof[:3] < SERIES_DOF).all() and (result.dof[3:] > SERIES_DOF).all()
    assert_matches_scipy(result, reference, current, p_rtol=GAMMAINCC_RTOL)
    assert_matches_scipy(divergences(reference[:3], current[:3], device="cpu"), reference[:3], current[:3])


def test_every_path_of_the_bin_sums_matches_scipy():
    # Pair table: current counts below PAIR_MAX and reference counts within its rows; past its
    # rows (reference 1024 with width 256 has 1024 rows), current counts of PAIR_MAX or more,
    # and column totals past the c ln c table all take the other paths.
    reference = np.array([[1024, 3, 0], [5000, 0, 7], [12, 40, 9], [3, 2**18, 1], [0, 0, 0]])
    current = np.array([[128, 255, 1], [3, 0, 2], [PAIR_MAX, 1, 0], [5, 2**18, 2], [1, 2, 3]])
    for rows in ([0, 1, 4], [2], [3], [0, 1, 2, 3, 4]):
        result = divergences(reference[rows], current[rows], device="cpu")
        assert_matches_scipy(result, reference[rows], current[rows])
    assert pair_index(*map(torch.from_numpy, (reference[:2], current[:2])), torch.ones(2, 2)).width == 256
    assert pair_index(*map(torch.from_numpy, (reference[2:3], current[2:3])), torch.ones(2, 1)) is None


# --------------------------------------------------------------------------
# Benjamini-Hochberg
# --------------------------------------------------------------------------


@PROPERTY
@given(
    p=arrays(np.float64, st.integers(1, 60), elements=st.one_of(st.floats(0, 1), st.sampled_from([0.0, 1.0, 0.01]))),
    data=st.data(),
)
def test_benjamini_hochberg_matches_scipy(p, data):
    valid = data.draw(arrays(np.bool_, p.shape))
    q = benjamini_hochberg(p, valid).numpy()
    assert np.isnan(q[~valid]).all()
    if valid.any():
        np.testing.assert_allclose(q[valid], false_discovery_control(p[valid], method="bh"), rtol=1e-15, atol=0)
    np.testing.assert_allclose(benjamini_hochberg(p).numpy(), false_discovery_control(p), rtol=1e-15, atol=0)


def test_benjamini_hochberg_rejects_bad_p_values():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        benjamini_hochberg(np.array([0.5, math.nan]))
    with pytest.raises(ValueError, match="boolean mask"):
        benjamini_hochberg(np.array([0.5, 0.1]), np.array([1, 0]))
    assert benjamini_hochberg(np.array([0.5, math.nan]), np.array([True, False]))[0].item() == 0.5


# --------------------------------------------------------------------------
# False alarms under no drift
# --------------------------------------------------------------------------

COLUMNS = 2_000
REFERENCE_ROWS = 50_000


def flagged_share(shares, current_rows, drifted=None, seed=0):
    rng = np.random.default_rng(seed)
    reference = rng.multinomial(REFERENCE_ROWS, shares, size=COLUMNS)
    current = rng.multinomial(current_rows, shares if drifted is None else drifted, size=COLUMNS)
    result = divergences(reference, current, device="cpu")
    return (benjamini_hochberg(result.p_value) <= 0.01).double().mean().item()


@pytest.mark.parametrize("current_rows", [100, 10_000])
def test_no_drift_flags_at_most_the_fdr_level(current_rows):
    uniform = np.full(10, 0.1)
    # Under no drift at all every flag is false; BH then bounds P(any flag) by 0.01.
    bound = 0.01 + 3 * math.sqrt(0.01 * 0.99 / COLUMNS)
    assert flagged_share(uniform, current_rows) <= bound


def test_real_drift_is_flagged():
    uniform = np.full(10, 0.1)
    drifted = uniform * (1 + 0.2 * np.sin(np.arange(10)))
    assert flagged_share(uniform, 10_000, drifted / drifted.sum()) == 1.0
