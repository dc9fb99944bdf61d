"""Volume check of a window: did its row count change by enough to matter, and beyond chance?

Neither rule alone will do. A tolerance on the relative change pages on every
quiet hour of a small feed (3 rows where 5 were expected is 40 % fewer and
means nothing), and a significance test alone pages on every busy one (1 %
fewer of ten billion rows is "significant" and means nothing either). So a
window is flagged only when both hold: |change| reaches ``warning`` /
``critical``, AND the test below rejects "same rate" at ``significance``. A
spike counts as a drop does: both are what a broken pipeline looks like.

The test takes the counts as Poisson, the noise of independent events. With
rate lambda, the window (length w) and the reference (length L, share = w / L)
hold Poisson(lambda w) and Poisson(lambda L) rows; given their total n, the
window's rows are Binomial(n, share / (1 + share)) whatever lambda is. This
conditional test needs no estimate of the rate and is exact at any count:
small counts are judged by their real, discrete and skewed noise, where a
normal approximation misjudges exactly the tails that decide. Bursty feeds
are noisier than Poisson; there the test flags more than ``significance``
says, and the relative threshold is what holds. The two-sided p-value
doubles the smaller tail (capped at 1).

The tails are the regularized incomplete beta function's continued fraction,
on the branch where each tail is computed directly while it is small (never
as 1 - the other), its prefactor (a multiple of the pmf) in Loader's (2000)
saddle-point form, not as a difference of lgammas: at n = 1e9 those are ~2e10,
and their rounding alone costs ~1e-6 relative. A tail takes a few dozen terms,
the exact mean of n = 1e12, p = 1/2 ~45 000 (35 ms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

OK, WARNING, CRITICAL, INSUFFICIENT = "ok", "warning", "critical", "insufficient_data"


@dataclass(frozen=True)
class VolumeCheck:
    rows: float  # rows in the current window
    reference_rows: float  # rows in the (kept part of the) reference
    share: float  # window length / reference length that was kept
    expected: float | None  # reference_rows * share; None when the reference holds no rows
    change: float | None  # rows / expected - 1; None when expected is None or 0
    p_value: float | None  # two-sided exact test; None when not testable
    status: str  # ok | warning | critical | insufficient_data


def _count(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite, non-negative count, got {value!r}")
    return float(round(value))  # counts are whole; a weighted or averaged one is rounded, not refused


def _stirlerr(n: float) -> float:
    """log(n!) - log(sqrt(2 pi n) (n / e)^n), for whole n >= 1."""
    if n <= 15:  # lgamma is still small here, so its absolute error is too
        return math.lgamma(n + 1) - (n + 0.5) * math.log(n) + n - 0.5 * math.log(2 * math.pi)
    nn = n * n
    return (1 / 12 - (1 / 360 - (1 / 1260 - (1 / 1680 - 1 / (1188 * nn)) / nn) / nn) / nn) / n


def _bd0(x: float, m: float) -> float:
    """x log(x / m) + m - x, without its cancellation when x is near m."""
    if abs(x - m) >= 0.1 * (x + m):
        return x * math.log(x / m) + m - x
    v = (x - m) / (x + m)  # x log(x / m) = 2 x atanh(v): its series, |v| < 0.1, ~15 terms at most
    s, ej, previous, j = (x - m) * v, 2 * x * v, None, 1
    while s != previous:
        ej *= v * v
        s, previous, j = s + ej / (2 * j + 1), s, j + 1
    return s


def _pmf(k: float, n: float, p: float, q: float) -> float:
    """P(X = k), X ~ Binomial(n, p), q = 1 - p, for 0 <= k <= n and 0 < p < 1."""
    if k == 0:
        return math.exp(-_bd0(n, n * q) - n * p if p < 0.1 else n * math.log(q))
    if k == n:
        return math.exp(-_bd0(n, n * p) - n * q if q < 0.1 else n * math.log(p))
    log_c = _stirlerr(n) - _stirlerr(k) - _stirlerr(n - k) - _bd0(k, n * p) - _bd0(n - k, n * q)
    return math.exp(log_c) * math.sqrt(n / (2 * math.pi * k * (n - k)))


def _betafrac(a: float, b: float, x: float, y: float) -> float:
    """x^a y^b / (B(a, b) I_x(a, b)), y = 1 - x, by modified Lentz; converges for x < (a + 1) / (a + b + 2).

    Numerical Recipes' betacf in DiDonato & Morris' (BFRAC) form, whose terms take a y - b x with y given:
    betacf's 1 - (a + b) x / (a + 1) cancels once x is near 1 (p near 0 or 1 at 1e9 rows: 5e-9 off).
    """
    tiny, eps = 1e-300, 1e-15
    f = a * (a * y - b * x + 1) / (a + 1) or tiny
    c, d = f, 0.0
    for m in range(1, 100 + 10 * int(math.sqrt(a + b))):  # a generous cap: see the module docstring
        e = a + 2 * m - 1
        an = (a + m - 1) * (a + b + m - 1) * m * (b - m) * x * x / (e * e)
        bn = m + m * (b - m) * x / e + (a + m) * (a * y - b * x + 1 + m * (2 - x)) / (e + 2)
        d = 1 / ((bn + an * d) or tiny)
        c = (bn + an / c) or tiny
        f *= c * d
        if abs(c * d - 1) <= eps:
            return f
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def _tails(k: float, n: float, p: float, q: float) -> tuple[float, float]:
    """(P(X <= k), P(X > k)) for X ~ Binomial(n, p), q = 1 - p passed apart so that p near 1 keeps q exact."""
    if k < 0:
        return 0.0, 1.0
    if k >= n or p == 0:
        return 1.0, 0.0
    if q == 0:
        return 0.0, 1.0
    # x^a y^b / B(a, b) is (n - k) p pmf(k) for P(X <= k) = I_q(n - k, k + 1), and (k + 1) q pmf(k + 1) for
    # P(X > k) = I_p(k + 1, n - k). Whichever tail is the small side is taken directly, never as 1 - the other.
    if q * (n + 3) < n - k + 1:
        lower = (n - k) * p * _pmf(k, n, p, q) / _betafrac(n - k, k + 1, q, p)
        return lower, 1 - lower
    upper = (k + 1) * q * _pmf(k + 1, n, p, q) / _betafrac(k + 1, n - k, p, q)
    return 1 - upper, upper


def binomial_cdf(k: float, n: float, p: float) -> float:
    """P(X <= k), X ~ Binomial(n, p); k and n are rounded to whole counts."""
    k, n, p = _count("k", k), _count("n", n), float(p)
    if not 0 <= p <= 1:  # also refuses NaN
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    return _tails(k, n, p, 1 - p)[0]


def rate_test(rows: float, reference_rows: float, share: float) -> float:
    """Two-sided exact p-value of "the window has the reference's rate" (conditional binomial test)."""
    rows, reference_rows, share = _count("rows", rows), _count("reference_rows", reference_rows), float(share)
    if not (math.isfinite(share) and share > 0):
        raise ValueError(f"share must be a finite, positive ratio of lengths, got {share!r}")
    n = rows + reference_rows
    p, q = share / (1 + share), 1 / (1 + share)  # q not as 1 - p: share >> 1 would lose it
    lower = _tails(rows, n, p, q)[0]  # P(X <= rows)
    upper = _tails(rows - 1, n, p, q)[1]  # P(X >= rows)
    return min(1.0, 2 * min(lower, upper))


def volume_check(rows: float, reference_rows: float, share: float, *, warning: float, critical: float,
                 significance: float, min_expected: float = 0.0) -> VolumeCheck:
    """Status of a window's row count against the reference's, scaled by ``share``; see the module docstring."""
    for name, value in (("warning", warning), ("critical", critical), ("min_expected", min_expected)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be finite and non-negative, got {value!r}")
    if not 0 <= significance <= 1:
        raise ValueError(f"significance must be in [0, 1], got {significance!r}")
    p_value = rate_test(rows, reference_rows, share)  # validates the counts and share
    rows, reference_rows = _count("rows", rows), _count("reference_rows", reference_rows)
    if reference_rows == 0:  # no rate to compare with; an empty window is then no finding either
        return VolumeCheck(rows, reference_rows, float(share), None, None, None, INSUFFICIENT)
    expected = reference_rows * float(share)
    change = rows / expected - 1 if expected > 0 else None  # 0 only if the product underflows
    if change is None or expected < min_expected:
        status = INSUFFICIENT
    elif p_value > significance:
        status = OK
    else:
        status = CRITICAL if abs(change) >= critical else WARNING if abs(change) >= warning else OK
    return VolumeCheck(rows, reference_rows, float(share), expected, change, p_value, status)
