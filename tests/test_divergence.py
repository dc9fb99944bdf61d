"""The divergence engine against independent scipy values, plus its invariants.

Expected values are computed here, row by row, from probabilities smoothed
independently in numpy (SPEC.md section 3) and fed to scipy:
KL = entropy(p, q), PSI = entropy(p, q) + entropy(q, p),
JS = jensenshannon(p, q) ** 2.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy

from driftmon.stats.divergence import (
    DeviceUnavailableError,
    Divergences,
    contributions,
    divergences,
    release_workspace,
    resolve_device,
    set_threads,
    statistic_names,
)

LN2 = math.log(2.0)
FLOAT64_TOL = {"rtol": 1e-9, "atol": 1e-9}
# float32 rounds each log term to ~1e-7 absolute, so a purely relative bound
# cannot hold for divergences near 0; 1e-6 absolute covers that, no more.
# float32 keeps about 7 digits: near zero (two nearly equal tables) the terms p ln(p/q) cancel, and
# their rounding (~6e-8 each, relative to p |ln p| <= 0.37) adds up over the bins: all-1 against
# all-217 counts gave 1.0e-6 where scipy's float64 gives 2e-9.
FLOAT32_TOL = {"rtol": 1e-5, "atol": 5e-6}
# Same arithmetic on a different layout (padding, batch) may reorder a sum.
SAME_TOL = {"rtol": 1e-12, "atol": 1e-15}
PROPERTY = settings(deadline=None, max_examples=100)
CUDA = torch.cuda.is_available()


# --------------------------------------------------------------------------
# Independent reference
# --------------------------------------------------------------------------


def smoothed(counts: np.ndarray, smoothing: str, alpha: float, epsilon: float) -> np.ndarray:
    """One window's probabilities, straight from SPEC.md section 3."""
    counts = np.asarray(counts, dtype=np.float64)
    if smoothing == "pseudocount":
        return (counts + alpha) / (counts.sum() + alpha * counts.size)
    shares = counts / counts.sum()
    shares[shares == 0] = epsilon
    return shares / shares.sum()


def scipy_js(p: np.ndarray, q: np.ndarray) -> float:
    with np.errstate(invalid="ignore"):  # sqrt of a rounding-level negative sum
        distance = jensenshannon(p, q)
    return 0.0 if np.isnan(distance) else float(distance) ** 2


def expected(reference, current, smoothing="pseudocount", alpha=0.5, epsilon=1e-4):
    """(kl, psi, js) per row, nan where a window is empty."""
    rows = []
    for ref_row, cur_row in zip(np.asarray(reference), np.asarray(current), strict=True):
        if ref_row.sum() == 0 or cur_row.sum() == 0:
            rows.append((math.nan,) * 3)
            continue
        p = smoothed(ref_row, smoothing, alpha, epsilon)
        q = smoothed(cur_row, smoothing, alpha, epsilon)
        rows.append((entropy(p, q), entropy(p, q) + entropy(q, p), scipy_js(p, q)))
    return np.array(rows, dtype=np.float64).reshape(-1, 3).T


def assert_matches(result: Divergences, reference, current, tol, **options) -> None:
    kl, psi, js = expected(reference, current, **options)
    np.testing.assert_allclose(result.kl.numpy(), kl, **tol)
    np.testing.assert_allclose(result.psi.numpy(), psi, **tol)
    np.testing.assert_allclose(result.js.numpy(), js, **tol)
    np.testing.assert_array_equal(result.valid.numpy(), ~np.isnan(kl))


# --------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------


@st.composite
def count_tables(draw, max_rows=6, max_bins=12):
    """Two same-shaped count tables; magnitudes span the table and log paths."""
    rows = draw(st.integers(1, max_rows))
    bins = draw(st.integers(1, max_bins))
    top = draw(st.sampled_from([3, 1_000, 10**7]))
    table = arrays(np.int64, (rows, bins), elements=st.integers(0, top))
    return draw(table), draw(table)


smoothing_options = st.one_of(
    st.fixed_dictionaries({"smoothing": st.just("pseudocount"), "alpha": st.sampled_from([0.5, 1.0, 0.01, 3.0])}),
    st.fixed_dictionaries({"smoothing": st.just("epsilon"), "epsilon": st.sampled_from([1e-4, 1e-6, 0.01])}),
)


def padded(reference, current, width, junk):
    """Rows padded to ``width`` with junk values, and the mask of real bins."""
    rows, bins = reference.shape
    pad = np.full((rows, width - bins), junk)
    mask = np.concatenate([np.ones((rows, bins), bool), np.zeros_like(pad, bool)], axis=1)
    return np.hstack([reference, pad]), np.hstack([current, pad]), mask


# --------------------------------------------------------------------------
# Exact values
# --------------------------------------------------------------------------


@PROPERTY
@given(tables=count_tables(), options=smoothing_options, as_float=st.booleans())
def test_float64_matches_scipy(tables, options, as_float):
    reference, current = (t.astype(np.float64) if as_float else t for t in tables)
    result = divergences(reference, current, device="cpu", **options)
    assert_matches(result, reference, current, FLOAT64_TOL, **options)


@PROPERTY
@given(tables=count_tables(), options=smoothing_options)
def test_float32_matches_scipy(tables, options):
    result = divergences(*tables, device="cpu", dtype="float32", **options)
    assert_matches(result, *tables, FLOAT32_TOL, **options)


def test_known_value_in_nats():
    result = divergences(np.array([[3, 1]]), np.array([[1, 3]]), alpha=1.0, device="cpu")
    p, q = np.array([4, 2]) / 6, np.array([2, 4]) / 6
    kl = float(np.sum(p * np.log(p / q)))
    m = (p + q) / 2
    js = 0.5 * float(np.sum(p * np.log(p / m)) + np.sum(q * np.log(q / m)))
    assert result.kl.item() == pytest.approx(kl, rel=1e-12)
    assert result.psi.item() == pytest.approx(2 * kl, rel=1e-12)
    assert result.js.item() == pytest.approx(js, rel=1e-12)


def test_epsilon_mode_renormalises():
    result = divergences(np.array([[0, 10]]), np.array([[5, 5]]), smoothing="epsilon", epsilon=0.01, device="cpu")
    p = np.array([0.01, 1.0]) / 1.01  # zero share -> epsilon, then renormalised
    q = np.array([0.5, 0.5])
    assert result.kl.item() == pytest.approx(float(np.sum(p * np.log(p / q))), rel=1e-12)


@pytest.mark.parametrize("dtype", [np.int64, np.float64])
def test_huge_counts_stay_accurate(dtype):
    reference = np.array([[1e15, 3e14, 7, 0], [1e15, 1e15, 1e15, 1e15]]).astype(dtype)
    current = np.array([[2e14, 9e14, 1e15, 5], [1e15, 1e15, 1e15, 1e15 + 4]]).astype(dtype)
    assert_matches(divergences(reference, current, device="cpu"), reference, current, FLOAT64_TOL)


def test_counts_around_the_log_table_limit():
    # Integer counts below 2**18 are looked up in a table, larger ones take logs.
    reference = np.array([[2**18 - 1, 2**18, 0, 5], [2**17, 2**17 + 1, 1023, 1024]] * 2)
    current = np.array([[0, 2**18 - 1, 2**18 + 1, 7], [1024, 1025, 2**17, 3]] * 2)
    reference[2:, 1] = current[2:, 2] = 0  # rows 2 and 3 stay below the limit
    assert_matches(divergences(reference, current, device="cpu"), reference, current, FLOAT64_TOL)
    assert_matches(divergences(reference[2:], current[2:], device="cpu"), reference[2:], current[2:], FLOAT64_TOL)


def test_inputs_of_every_kind_agree():
    rng = np.random.default_rng(7)
    reference, current = rng.integers(0, 50, (2, 5, 8))
    frozen = reference.copy()
    frozen.setflags(write=False)
    baseline = divergences(reference, current, device="cpu")
    variants = [
        (torch.from_numpy(reference), torch.from_numpy(current)),
        (reference.astype(np.int32), current.astype(np.uint16)),
        (reference.astype(np.float32), current.astype(np.float64)),
        (frozen, current),
        (reference.tolist(), current.tolist()),
    ]
    for ref, cur in variants:
        result = divergences(ref, cur, device="cpu")
        for name in statistic_names():
            np.testing.assert_allclose(result.get(name), baseline.get(name), **FLOAT64_TOL)
    reversed_rows = divergences(reference[::-1], current[::-1], device="cpu")
    assert torch.equal(reversed_rows.kl, baseline.kl.flip(0))


def test_results_are_cpu_float64_per_row():
    result = divergences(np.ones((3, 4)), np.ones((3, 4)), device="cpu", dtype=torch.float32)
    for name in ("kl", "psi", "js"):
        value = getattr(result, name)
        assert (value.dtype, value.device.type, tuple(value.shape)) == (torch.float64, "cpu", (3,))
    assert result.valid.dtype == torch.bool and result.valid.all()


def test_no_rows_gives_empty_results():
    result = divergences(np.zeros((0, 5)), np.zeros((0, 5)), device="cpu")
    assert result.kl.shape == (0,) and result.valid.shape == (0,)


# --------------------------------------------------------------------------
# Per-bin contributions
# --------------------------------------------------------------------------

SUM_TOL = {"rtol": 1e-12, "atol": 1e-12}


@PROPERTY
@given(
    tables=count_tables(),
    options=smoothing_options,
    kl_direction=st.sampled_from(["reference_current", "current_reference"]),
    extra=st.integers(0, 3),
)
def test_contributions_sum_to_the_engine_values(tables, options, kl_direction, extra):
    reference, current = tables
    padded_ref, padded_cur, mask = padded(reference, current, reference.shape[1] + extra, 7)
    options = {**options, "kl_direction": kl_direction}
    terms = contributions(padded_ref, padded_cur, mask, **options)
    engine = divergences(padded_ref, padded_cur, mask, device="cpu", **options)
    for name in ("kl", "psi", "js"):
        np.testing.assert_allclose(getattr(terms, name).sum(axis=1), getattr(engine, name).numpy(), **SUM_TOL)
        assert (getattr(terms, name)[:, reference.shape[1] :] == 0).all()
    np.testing.assert_array_equal(terms.valid, engine.valid.numpy())


@PROPERTY
@given(tables=count_tables(), options=smoothing_options)
def test_contribution_shares_are_the_smoothed_shares(tables, options):
    reference, current = tables
    terms = contributions(reference, current, **options)
    smoothing = {"alpha": 0.5, "epsilon": 1e-4, **options}
    for row in np.flatnonzero(terms.valid):
        for counts, shares in ((reference, terms.reference_shares), (current, terms.current_shares)):
            np.testing.assert_allclose(shares[row], smoothed(counts[row], **smoothing), rtol=1e-14, atol=0)
    assert np.isnan(terms.kl[~terms.valid]).all() and np.isnan(terms.reference_shares[~terms.valid]).all()


def test_contributions_known_terms():
    terms = contributions(np.array([[3, 1]]), np.array([[1, 3]]), alpha=1.0)
    p, q = np.array([4, 2]) / 6, np.array([2, 4]) / 6
    m = (p + q) / 2
    np.testing.assert_allclose(terms.reference_shares[0], p, rtol=1e-15)
    np.testing.assert_allclose(terms.kl[0], p * np.log(p / q), rtol=1e-14)
    np.testing.assert_allclose(terms.psi[0], (p - q) * np.log(p / q), rtol=1e-14)
    np.testing.assert_allclose(terms.js[0], 0.5 * (p * np.log(p / m) + q * np.log(q / m)), rtol=1e-14)
    backward = contributions(np.array([[3, 1]]), np.array([[1, 3]]), alpha=1.0, kl_direction="current_reference")
    np.testing.assert_allclose(backward.kl[0], q * np.log(q / p), rtol=1e-14)


@pytest.mark.parametrize("smoothing", ["pseudocount", "epsilon"])
def test_contributions_of_one_bin_and_empty_rows(smoothing):
    reference = np.array([[5, 0, 0], [0, 0, 0], [0, 4, 1]])
    current = np.array([[9, 0, 0], [1, 2, 3], [0, 0, 6]])
    mask = np.array([[True, False, False], [True] * 3, [True] * 3])
    terms = contributions(reference, current, mask, smoothing=smoothing)
    assert terms.valid.tolist() == [True, False, True]
    assert (terms.kl[0] == 0).all() and (terms.js[0] == 0).all() and terms.reference_shares[0].tolist() == [1, 0, 0]
    assert np.isnan(terms.psi[1]).all()
    assert (terms.kl[2] != 0).all()  # empty bins in one window still contribute


def test_contributions_reject_bad_counts():
    # The engine's table lookup catches negative integer counts; contributions() checks itself.
    with pytest.raises(ValueError, match=r"reference_counts .* rows \[0\]"):
        contributions(np.array([[-1, 3]]), np.array([[1, 3]]))


# --------------------------------------------------------------------------
# Invariants
# --------------------------------------------------------------------------


@PROPERTY
@given(
    tables=count_tables(),
    options=smoothing_options,
    dtype=st.sampled_from(["float64", "float32"]),
    extra=st.integers(0, 3),
    shift=st.sampled_from([0, 600, 20_000]),
)
def test_significance_leaves_the_divergences_bit_identical(tables, options, dtype, extra, shift):
    # With the G-test the engine gathers log(a + alpha) - log(b + alpha) by the test's pair index,
    # from one table instead of two; shifted reference counts overflow that table's rows.
    reference, current = tables[0] + shift, tables[1]
    padded_ref, padded_cur, mask = padded(reference, current, reference.shape[1] + extra, 0)
    mask = mask if extra else None
    with_test = divergences(padded_ref, padded_cur, mask, device="cpu", dtype=dtype, **options)
    alone = divergences(padded_ref, padded_cur, mask, device="cpu", dtype=dtype, significance=False, **options)
    for name in ("kl", "psi", "js", "valid"):
        torch.testing.assert_close(getattr(with_test, name), getattr(alone, name), rtol=0, atol=0, equal_nan=True)


@PROPERTY
@given(tables=count_tables(), options=smoothing_options)
# Found by hypothesis: JS as KL(Q||P)/2 - sum m log(m/p) differed by 1.05e-15 on swapping.
@example(tables=(np.array([[1] * 7]), np.array([[71] + [69] * 6])), options={"smoothing": "pseudocount", "alpha": 0.5})
def test_bounds_symmetry_and_direction(tables, options):
    reference, current = tables
    forward = divergences(reference, current, device="cpu", **options)
    backward = divergences(current, reference, device="cpu", **options)
    swapped = divergences(reference, current, kl_direction="current_reference", device="cpu", **options)
    valid = forward.valid
    assert (forward.kl[valid] >= 0).all() and (forward.psi[valid] >= 0).all()
    assert ((forward.js[valid] >= 0) & (forward.js[valid] <= LN2)).all()
    torch.testing.assert_close(forward.psi, backward.psi, equal_nan=True, **SAME_TOL)
    torch.testing.assert_close(forward.js, backward.js, equal_nan=True, **SAME_TOL)
    torch.testing.assert_close(swapped.kl, backward.kl, equal_nan=True, **SAME_TOL)


@PROPERTY
@given(
    tables=count_tables(),
    options=smoothing_options,
    extra=st.integers(1, 9),
    junk=st.sampled_from([0, 7, -3, 7.5, math.nan, math.inf]),
)
def test_padding_contributes_nothing(tables, options, extra, junk):
    # Integer junk keeps integer counts (log table), float junk floats (logs):
    # the row alone gets the same dtype, so both calls take the same path.
    reference, current = (t.astype(type(junk)) for t in tables)
    padded_ref, padded_cur, mask = padded(reference, current, reference.shape[1] + extra, junk)
    alone = divergences(reference, current, device="cpu", **options)
    with_padding = divergences(padded_ref, padded_cur, mask, device="cpu", **options)
    for name in ("kl", "psi", "js"):
        torch.testing.assert_close(getattr(with_padding, name), getattr(alone, name), equal_nan=True, **SAME_TOL)
    assert torch.equal(with_padding.valid, alone.valid)


def test_rows_of_different_widths_in_one_batch():
    reference = np.array([[5, 1, 0, 0], [2, 2, 2, 9]])
    current = np.array([[1, 5, 0, 0], [9, 2, 2, 2]])
    mask = np.array([[True, True, False, False], [True] * 4])
    result = divergences(reference, current, mask, device="cpu")
    first = divergences(reference[:1, :2], current[:1, :2], device="cpu")
    assert result.kl[0].item() == pytest.approx(first.kl.item(), rel=1e-12)
    assert_matches(divergences(reference[1:], current[1:], device="cpu"), reference[1:], current[1:], FLOAT64_TOL)


@pytest.mark.parametrize("scale", [1, 10**7], ids=["table", "log"])
def test_independent_of_row_order_and_batch_size(scale):
    rng = np.random.default_rng(3)
    reference, current = rng.integers(0, 40, (2, 50, 16)) * scale
    whole = divergences(reference, current, device="cpu")
    order = rng.permutation(50)
    shuffled = divergences(reference[order], current[order], device="cpu")
    for name in ("kl", "psi", "js"):
        assert torch.equal(getattr(shuffled, name), getattr(whole, name)[order])
        for row in (0, 17, 49):
            single = divergences(reference[row : row + 1], current[row : row + 1], device="cpu")
            assert torch.equal(getattr(single, name), getattr(whole, name)[row : row + 1])


@pytest.mark.parametrize("smoothing", ["pseudocount", "epsilon"])
@pytest.mark.parametrize("scale", [1, 10**9], ids=["table", "log"])
def test_identical_rows_are_exactly_zero(smoothing, scale):
    counts = np.array([[0, 3, 9, 1], [7, 7, 0, 0], [1, 0, 0, 0]]) * scale
    result = divergences(counts, counts.copy(), smoothing=smoothing, device="cpu")
    for name in ("kl", "psi", "js"):
        assert (getattr(result, name) == 0).all()


@pytest.mark.parametrize("smoothing", ["pseudocount", "epsilon"])
@pytest.mark.parametrize("top", [1_000, 10**9], ids=["table", "log"])
def test_one_bin_rows_are_exactly_zero(smoothing, top):
    rng = np.random.default_rng(1)
    reference, current = rng.integers(1, top, (2, 200, 3))
    mask = np.zeros((200, 3), bool)
    mask[:, 1] = True  # one real bin per row, padding either side
    lone = divergences(reference[:, :1], current[:, :1], smoothing=smoothing, device="cpu")
    masked = divergences(reference, current, mask, smoothing=smoothing, device="cpu")
    for name in ("kl", "psi", "js"):
        assert (getattr(lone, name) == 0).all() and (getattr(masked, name) == 0).all()


# --------------------------------------------------------------------------
# Edge cases and bad input
# --------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", ["pseudocount", "epsilon"])
def test_empty_window_gives_nan_and_invalid(smoothing):
    reference = np.array([[0, 0, 0], [1, 2, 3], [4, 5, 6], [1, 1, 1]])
    current = np.array([[1, 2, 3], [0, 0, 0], [6, 5, 4], [1, 1, 1]])
    mask = np.array([[True] * 3, [True] * 3, [True] * 3, [False] * 3])
    result = divergences(reference, current, mask, smoothing=smoothing, device="cpu")
    assert result.valid.tolist() == [False, False, True, False]
    for name in ("kl", "psi", "js"):
        values = getattr(result, name)
        assert values[[0, 1, 3]].isnan().all() and values[2] > 0


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, -math.inf])
def test_bad_counts_raise_naming_rows(bad):
    current = np.ones((5, 3))
    current[1, 2] = current[3, 0] = bad
    with pytest.raises(ValueError, match=r"current_counts .* rows \[1, 3\]"):
        divergences(np.ones((5, 3)), current, device="cpu")


@pytest.mark.parametrize("smoothing", ["pseudocount", "epsilon"])
@pytest.mark.parametrize("scale", [1, 10**6], ids=["table", "log"])
@pytest.mark.parametrize("negative", [-5, -(10**7), -(2**40), -(2**60)])
def test_negative_integer_counts_raise_naming_rows(smoothing, scale, negative):
    reference = np.ones((4, 3), dtype=np.int64) * scale
    reference[2, 1] = negative
    with pytest.raises(ValueError, match=r"reference_counts .* rows \[2\]"):
        divergences(reference, np.ones((4, 3), dtype=np.int64), smoothing=smoothing, device="cpu")


@pytest.mark.parametrize("significance", [True, False])
@pytest.mark.parametrize("negative", [-1, -(2**40), -(2**60)])
def test_negative_current_counts_raise_naming_rows(significance, negative):
    # With the G-test both windows share one index per bin; a negative current count must not slip in.
    current = np.ones((4, 3), dtype=np.int64)
    current[1, 2] = negative
    with pytest.raises(ValueError, match=r"current_counts .* rows \[1\]"):
        divergences(np.ones((4, 3), dtype=np.int64), current, device="cpu", significance=significance)


@pytest.mark.parametrize(
    ("reference", "current", "mask"),
    [
        (np.ones((3, 4)), np.ones((3, 5)), None),
        (np.ones((3, 4)), np.ones((2, 4)), None),
        (np.ones(4), np.ones(4), None),
        (np.ones((3, 4)), np.ones((3, 4)), np.ones((3, 5), bool)),
        (np.ones((3, 4)), np.ones((3, 4)), np.ones((3, 4), int)),
        (np.ones((3, 4), bool), np.ones((3, 4)), None),
    ],
    ids=["bins", "rows", "one-d", "mask-shape", "mask-dtype", "bool-counts"],
)
def test_malformed_input_raises(reference, current, mask):
    with pytest.raises(ValueError):
        divergences(reference, current, mask, device="cpu")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"smoothing": "laplace"}, "pseudocount, epsilon"),
        ({"kl_direction": "both"}, "reference_current, current_reference"),
        ({"alpha": 0.0}, "alpha"),
        ({"epsilon": -1e-4}, "epsilon"),
        ({"alpha": math.nan}, "alpha"),
        ({"dtype": "float16"}, "float64 or float32"),
        ({"dtype": torch.int64}, "float64 or float32"),
    ],
)
def test_bad_options_raise(option, message):
    with pytest.raises(ValueError, match=message):
        divergences(np.ones((1, 2)), np.ones((1, 2)), device="cpu", **option)


def test_options_checked_once_still_reject_lookalikes():
    # Checked options are kept per argument tuple: alpha=1 must not let alpha=True through.
    divergences(np.ones((1, 2)), np.ones((1, 2)), device="cpu", alpha=1)
    with pytest.raises(ValueError, match="alpha"):
        divergences(np.ones((1, 2)), np.ones((1, 2)), device="cpu", alpha=True)


def test_results_can_be_read_but_not_changed_in_place():
    result = divergences(np.array([[1, 2, 3]]), np.array([[3, 2, 1]]), device="cpu")
    assert result.kl.numpy().shape == (1,) and result.kl.clone().add_(1).item() > 1
    with pytest.raises(RuntimeError, match="[Ii]nference"):
        result.kl.add_(1)  # inference tensors: copy to modify


def test_dtype_given_as_string_or_torch_dtype():
    counts = np.array([[3, 4, 5]])
    as_text = divergences(counts, counts[:, ::-1], dtype="float32", device="cpu")
    as_dtype = divergences(counts, counts[:, ::-1], dtype=torch.float32, device="cpu")
    assert torch.equal(as_text.kl, as_dtype.kl)


def test_counts_that_require_grad_are_accepted():
    reference = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    result = divergences(reference, torch.tensor([[3.0, 2.0, 1.0]]), device="cpu")
    assert not result.kl.requires_grad
    assert_matches(result, [[1, 2, 3]], [[3, 2, 1]], FLOAT64_TOL)


# --------------------------------------------------------------------------
# Statistics registry
# --------------------------------------------------------------------------


def test_statistics_by_name():
    result = divergences(np.array([[1, 2]]), np.array([[2, 1]]), device="cpu")
    assert statistic_names() == ("js", "kl", "psi")
    assert result.get("psi") is result.psi
    with pytest.raises(ValueError, match="valid statistics: js, kl, psi"):
        result.get("hellinger")


# --------------------------------------------------------------------------
# Workspace and threads
# --------------------------------------------------------------------------


def test_workspace_shrinks_and_regrows():
    big = np.arange(2000).reshape(100, 20) % 7
    first = divergences(big, big[::-1], device="cpu")
    release_workspace()
    small = divergences(big[:3, :4], big[::-1][:3, :4], device="cpu")
    again = divergences(big, big[::-1], device="cpu")
    assert torch.equal(first.kl, again.kl)
    assert_matches(small, big[:3, :4], big[::-1][:3, :4], FLOAT64_TOL)


def test_concurrent_calls_from_threads_do_not_interfere():
    rng = np.random.default_rng(11)
    tables = [rng.integers(0, 30, (2, rows, bins)) for rows, bins in [(300, 8), (50, 40)]]
    expected_kl = [divergences(*t, device="cpu").kl for t in tables]
    failures = []

    def work(index):
        for _ in range(20):
            if not torch.equal(divergences(*tables[index], device="cpu").kl, expected_kl[index]):
                failures.append(index)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_set_threads_sets_torch_intra_op_threads():
    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [0, -2, 1.5, True, "2"])
def test_set_threads_rejects_non_positive_integers(threads):
    with pytest.raises(ValueError, match="threads"):
        set_threads(threads)


# --------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_picks_cpu_without_cuda(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_cuda_is_a_clear_error(no_cuda, name):
    with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
        resolve_device(name)
    with pytest.raises(DeviceUnavailableError):
        divergences(np.ones((1, 2)), np.ones((1, 2)), device=name)


def test_missing_cuda_index_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceUnavailableError, match="only 1 CUDA device"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("name", ["tpu", "mps", "cpu:1", "", "cuda:x"])
def test_unknown_device_names_are_rejected(name):
    with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N"):
        resolve_device(name)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cuda_matches_cpu(dtype):
    rng = np.random.default_rng(5)
    reference, current = rng.integers(0, 10**6, (2, 40, 12))
    mask = rng.random((40, 12)) < 0.8
    on_gpu = divergences(reference, current, mask, device="cuda", dtype=dtype)
    on_cpu = divergences(reference, current, mask, device="cpu", dtype=dtype)
    tol = FLOAT64_TOL if dtype == "float64" else FLOAT32_TOL
    for name in ("kl", "psi", "js"):
        assert getattr(on_gpu, name).device.type == "cpu"
        torch.testing.assert_close(getattr(on_gpu, name), getattr(on_cpu, name), equal_nan=True, **tol)
