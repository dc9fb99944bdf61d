"""The volume check: binomial tails against scipy, the two-sided rate test, edge cases, statuses, false alarms.

Expected values come from scipy.stats.binom: P(X <= k) = binom.cdf(k, n, p), P(X >= k) = binom.sf(k - 1, n, p),
and the two-sided p-value is 2 * min of the two, capped at 1 (binomtest's two-sided rule is a different one).

Grid probabilities are dyadic (a multiple of 2^-40), so that 1 - p is exact: scipy works with 1 - p, and where
that rounds (p = 1e-6) its cdf at n = 1e8 moves by ~3e-9 relative. Exact decimal arithmetic shows that to be
scipy's rounding, not ours (test_binomial_cdf_exact_where_one_minus_p_rounds).
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import numpy as np
import pytest
from scipy.stats import binom

from driftmon.stats.volume import (
    CRITICAL,
    INSUFFICIENT,
    OK,
    WARNING,
    VolumeCheck,
    binomial_cdf,
    rate_test,
    volume_check,
)

LEVELS = {"warning": 0.15, "critical": 0.3, "significance": 0.001}


def dyadic(p: float) -> float:
    return round(p * 2**40) / 2**40


GRID_N = [1, 2, 3, 7, 15, 16, 50, 1000, 10**5, 10**7, 10**9]
GRID_P = [dyadic(p) for p in (1e-6, 1e-3, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99)] + [
    1 - dyadic(1e-3),
    1 - dyadic(1e-6),
]


def grid_ks(n: int, p: float) -> list[int]:
    """Both ends, the mean, and from 40 standard deviations below it to 40 above."""
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    zs = (-40, -10, -5, -3, -1, -0.5, 0, 0.5, 1, 3, 5, 10, 40)
    ks = {0, 1, 2, n - 2, n - 1, n} | {round(mean + z * sd) for z in zs}
    return sorted(k for k in ks if 0 <= k <= n)


def expected_p_value(rows: float, reference_rows: float, share: float) -> float:
    n, pi = rows + reference_rows, share / (1 + share)
    return min(1.0, 2 * min(binom.cdf(rows, n, pi), binom.sf(rows - 1, n, pi)))


def close(got: float, want: float, rel: float) -> bool:
    """Relative agreement where the value is representable well; both negligible below 1e-300."""
    if want > 1e-300:
        return abs(got - want) <= rel * want
    return 0 <= got < 1e-290


@pytest.mark.parametrize("n", GRID_N)
def test_binomial_cdf_matches_scipy(n: int) -> None:
    bad = []
    for p in GRID_P:
        assert 1 - (1 - p) == p
        for k in grid_ks(n, p):
            got, want = binomial_cdf(k, n, p), float(binom.cdf(k, n, p))
            if not close(got, want, 1e-9):
                bad.append((k, n, p, got, want))
    assert not bad


def test_binomial_cdf_exact_where_one_minus_p_rounds() -> None:
    # p = 1e-6 is not dyadic: against the exact sum of the pmf (decimal, 60 digits, p as its double), not scipy.
    n, p = 10**8, 1e-6
    with localcontext() as context:
        context.prec = 60
        dp = Decimal(p)
        for k in (0, 1, 2, 3):
            exact = sum(math.comb(n, j) * dp**j * (1 - dp) ** (n - j) for j in range(k + 1))
            assert binomial_cdf(k, n, p) == pytest.approx(float(exact), rel=1e-12)


def test_binomial_cdf_ends() -> None:
    assert binomial_cdf(0, 0, 0.3) == 1.0
    assert binomial_cdf(5, 5, 0.3) == 1.0
    assert binomial_cdf(7, 5, 0.3) == 1.0
    assert binomial_cdf(0, 10, 0.0) == 1.0
    assert binomial_cdf(9, 10, 1.0) == 0.0
    assert binomial_cdf(0, 10, 0.5) == pytest.approx(2.0**-10, rel=1e-14)
    assert binomial_cdf(9, 10, 0.5) == pytest.approx(1 - 2.0**-10, rel=1e-14)
    assert binomial_cdf(2.4, 10.2, 0.3) == binomial_cdf(2, 10, 0.3)  # counts are rounded, not refused
    # tails ~1e-5000 underflow to 0 rather than failing
    assert binomial_cdf(0, 10**6, 0.01) == 0.0
    assert binomial_cdf(10**6 - 1, 10**6, 0.99) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((-1, 10, 0.5), "k"),
        ((1, -10, 0.5), "n"),
        ((math.nan, 10, 0.5), "k"),
        ((1, math.inf, 0.5), "n"),
        ((1, 10, -0.1), "p"),
        ((1, 10, 1.5), "p"),
        ((1, 10, math.nan), "p"),
    ],
)
def test_binomial_cdf_refuses(args: tuple[float, float, float], name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} "):
        binomial_cdf(*args)


RATE_CASES = [
    (rows, reference_rows, share)
    for share in (1 / 168, 1 / 24, 1 / 4, 1.0, 4.0, 168.0)
    for reference_rows in (0, 1, 10, 400, 10**4, 10**6)
    for rows in {
        0,
        1,
        3,
        round(reference_rows * share * 0.5),
        round(reference_rows * share * 0.9),
        round(reference_rows * share),
        round(reference_rows * share * 1.1),
        round(reference_rows * share * 2) + 5,
    }
]


def test_rate_test_matches_scipy() -> None:
    bad = []
    for rows, reference_rows, share in RATE_CASES:
        got, want = rate_test(rows, reference_rows, share), expected_p_value(rows, reference_rows, share)
        if not close(got, want, 1e-9):
            bad.append((rows, reference_rows, share, got, want))
    assert not bad


def test_rate_test_is_symmetric() -> None:
    # The window against the reference is the reference against the window, with the inverse share.
    for rows, reference_rows, share in RATE_CASES:
        assert close(rate_test(reference_rows, rows, 1 / share), rate_test(rows, reference_rows, share), 1e-9)


def test_rate_test_edges() -> None:
    assert rate_test(0, 0, 0.25) == 1.0  # nothing either side: no evidence
    assert rate_test(0, 400, 0.25) == pytest.approx(2 * 0.8**400, rel=1e-12)  # an empty window
    assert rate_test(5, 0, 0.25) == pytest.approx(2 * 0.2**5, rel=1e-12)  # an empty reference
    assert rate_test(1000, 4000, 0.25) == 1.0  # exactly as expected: both tails above 1/2
    # huge counts: near the mean, one standard deviation (~9e4) off, and far off
    for rows in (10**10, 10**10 - 89_443, 10**10 + 200_000, 9 * 10**9):
        assert close(rate_test(rows, 4 * 10**10, 0.25), expected_p_value(rows, 4 * 10**10, 0.25), 1e-6)
    # share extremes: a 1 s window in 30 000 years of reference, and the reverse
    assert rate_test(0, 10**12, 1e-12) == pytest.approx(2 * math.exp(-1), rel=1e-9)
    assert rate_test(10**12, 0, 1e12) == pytest.approx(2 * math.exp(-1), rel=1e-9)
    assert rate_test(10**12, 1, 1e12) == pytest.approx(1.0)
    assert rate_test(10**12, 10, 1e12) == pytest.approx(2 * binom.sf(9, 10**12 + 10, 1 / (1 + 1e12)), rel=1e-9)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((-1, 10, 0.25), "rows"),
        ((math.nan, 10, 0.25), "rows"),
        ((1, -10, 0.25), "reference_rows"),
        ((1, math.inf, 0.25), "reference_rows"),
        ((1, 10, 0.0), "share"),
        ((1, 10, -0.25), "share"),
        ((1, 10, math.nan), "share"),
        ((1, 10, math.inf), "share"),
    ],
)
def test_rate_test_and_volume_check_refuse(args: tuple[float, float, float], name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} "):
        rate_test(*args)
    with pytest.raises(ValueError, match=f"^{name} "):
        volume_check(*args, **LEVELS)


@pytest.mark.parametrize(
    ("levels", "name"),
    [
        ({**LEVELS, "warning": -0.1}, "warning"),
        ({**LEVELS, "critical": math.nan}, "critical"),
        ({**LEVELS, "significance": 1.5}, "significance"),
        ({**LEVELS, "significance": math.nan}, "significance"),
        ({**LEVELS, "min_expected": math.inf}, "min_expected"),
    ],
)
def test_volume_check_refuses_bad_levels(levels: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} "):
        volume_check(10, 40, 0.25, **levels)


@pytest.mark.parametrize(
    ("rows", "reference_rows", "share", "status", "change"),
    [
        (6_000, 40_000, 0.25, CRITICAL, -0.4),  # 40 % fewer, large counts
        (3, 20, 0.25, OK, -0.4),  # 40 % fewer, expected 5: within Poisson noise
        (9 * 10**9, 4 * 10**10, 0.25, OK, -0.1),  # 10 % fewer: significant, but below warning
        (2_000, 4_000, 0.25, CRITICAL, 1.0),  # a doubling
        (8_000, 40_000, 0.25, WARNING, -0.2),
        (12_000, 40_000, 0.25, WARNING, 0.2),  # a spike counts as a drop does
        (10_100, 40_000, 0.25, OK, 0.01),
        (0, 400, 0.25, CRITICAL, -1.0),  # an empty window is a finding, not missing data
        (0, 8, 0.25, OK, -1.0),  # ... unless so few rows were expected that it is chance
        (300, 168_000, 1 / 168, CRITICAL, -0.7),  # 1 h against 7 d
        (3, 1_680, 1 / 168, OK, -0.7),
    ],
)
def test_volume_check_status(rows: float, reference_rows: float, share: float, status: str, change: float) -> None:
    check = volume_check(rows, reference_rows, share, **LEVELS)
    assert check.status == status
    assert check.change == pytest.approx(change)
    assert check.expected == pytest.approx(reference_rows * share)
    assert check.p_value == pytest.approx(expected_p_value(rows, reference_rows, share), rel=1e-9, abs=1e-300)
    if status != OK:  # both must hold: size and significance
        assert abs(check.change) >= LEVELS["warning"] and check.p_value <= LEVELS["significance"]


def test_volume_check_values() -> None:
    check = volume_check(6_000, 40_000, 0.25, **LEVELS)
    assert check == VolumeCheck(6_000.0, 40_000.0, 0.25, 10_000.0, check.change, check.p_value, CRITICAL)
    assert check.change == pytest.approx(-0.4, rel=1e-12)
    assert 0 <= check.p_value < 1e-300


def test_volume_check_insufficient() -> None:
    for rows in (0, 5):  # no reference rows: nothing to compare with, an empty window included
        check = volume_check(rows, 0, 0.25, **LEVELS)
        assert check == VolumeCheck(float(rows), 0.0, 0.25, None, None, None, INSUFFICIENT)
    # fewer rows expected than the monitor's minimum: not judged, though measured
    check = volume_check(0, 20, 0.25, **LEVELS, min_expected=10)
    assert (check.status, check.expected, check.change) == (INSUFFICIENT, 5.0, -1.0)
    assert check.p_value == pytest.approx(expected_p_value(0, 20, 0.25))
    assert volume_check(0, 400, 0.25, **LEVELS, min_expected=10).status == CRITICAL


def test_volume_check_significance_needs_size() -> None:
    # With significance 1 every change is significant; the relative thresholds alone decide.
    levels = {**LEVELS, "significance": 1.0}
    assert volume_check(5, 20, 0.25, **levels).status == OK
    assert volume_check(6, 20, 0.25, **levels).status == WARNING
    assert volume_check(7, 20, 0.25, **levels).status == CRITICAL


def test_no_change_rarely_pages() -> None:
    # 2 000 windows at an unchanged rate, 50 rows expected each, a 4-window reference (200 expected).
    rng = np.random.default_rng(20240611)
    rows, reference_rows = rng.poisson(50, 2_000), rng.poisson(200, 2_000)
    checks = [volume_check(r, ref, 0.25, **LEVELS) for r, ref in zip(rows, reference_rows, strict=True)]
    assert sum(check.status == CRITICAL for check in checks) / len(checks) <= 0.005
    assert sum(check.status != OK for check in checks) / len(checks) <= 0.005
    # the exact test is conservative: p-values at or below 5 % no more often than 5 % (+ 3 sd of noise)
    assert np.mean([check.p_value <= 0.05 for check in checks]) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 2_000)
