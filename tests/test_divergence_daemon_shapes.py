"""The engine at the daemon's shapes (issue 25): float64 counts with a mask, whole counts, F = 24-50, B = 22.

bench/bench_divergence.py times these calls; here their values are checked
against scipy, and the small-call shortcuts (the "auto" device resolved once
where CUDA is absent, one read-back of both windows' extremes, padding
inverted once) against the plain path, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, entropy

from driftmon.stats import divergence
from driftmon.stats.divergence import divergences
from tests.daemonshapes import daemon_counts

ALPHA = 0.5


def _bits(tensor: torch.Tensor) -> bytes:
    return tensor.numpy().tobytes()


def _same(left, right) -> bool:
    fields = ("kl", "psi", "js", "valid", "g_statistic", "dof", "p_value")
    return all(_bits(getattr(left, name)) == _bits(getattr(right, name)) for name in fields)


@pytest.mark.parametrize("features", [24, 50])
def test_daemon_shapes_match_scipy(features):
    reference, current, mask = daemon_counts(features)
    result = divergences(reference, current, mask, device="auto", whole_counts=True)
    for row, real in enumerate(mask):
        ref, cur = reference[row, real], current[row, real]
        p = (ref + ALPHA) / (ref.sum() + ALPHA * ref.size)
        q = (cur + ALPHA) / (cur.sum() + ALPHA * cur.size)
        assert result.kl[row].item() == pytest.approx(entropy(p, q), abs=1e-12)
        assert result.psi[row].item() == pytest.approx(entropy(p, q) + entropy(q, p), abs=1e-12)
        assert result.js[row].item() == pytest.approx(jensenshannon(p, q) ** 2, abs=1e-12)
        table = np.stack([ref, cur])
        table = table[:, table.sum(axis=0) > 0]
        g = chi2_contingency(table, correction=False, lambda_="log-likelihood").statistic
        assert result.g_statistic[row].item() == pytest.approx(g, rel=1e-9)


def test_auto_without_cuda_is_the_cpu_call_bit_for_bit(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    reference, current, mask = daemon_counts(24, seed=3)
    auto = divergences(reference, current, mask, device="auto", whole_counts=True)
    cpu = divergences(reference, current, mask, device="cpu", whole_counts=True)
    assert _same(auto, cpu)


def test_auto_is_resolved_again_once_cuda_appears(monkeypatch):
    """The options cached for "auto" on a machine without CUDA must not answer for one with it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    options = ("pseudocount", 0.5, 1e-4, "reference_current", "auto", "float64")
    assert divergence._parse_options(*options).device == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert divergence._parse_options(*options).device == torch.device("cuda")


@pytest.mark.parametrize("smoothing", ["pseudocount", "epsilon"])
@pytest.mark.parametrize("kind", ["float64", "int64", "mixed"])
def test_padding_junk_and_dtypes_give_the_same_bits(smoothing, kind):
    reference, current, mask = daemon_counts(50, seed=7)
    if kind != "float64":
        reference = reference.astype(np.int64)
    if kind == "int64":
        current = current.astype(np.int64)
    junk_reference = reference.copy()
    junk_reference[~mask] = np.nan if kind == "float64" else 999_999  # padding may hold anything
    plain = divergences(reference, current, mask, smoothing=smoothing, device="cpu")
    junk = divergences(junk_reference, current, mask, smoothing=smoothing, device="cpu")
    assert _same(plain, junk)


@pytest.mark.parametrize(
    ("reference", "current", "named"),
    [
        ([[1.0, -1.0]], [[1.0, np.nan]], "reference_counts"),  # both bad: the reference is named first
        ([[1.0, 2.0]], [[np.nan, 1.0]], "current_counts"),
        ([[1.0, 2.0]], [[np.inf, 1.0]], "current_counts"),
        ([[1, -2]], [[1.0, 1.0]], "reference_counts"),  # int64 against float64: each window checked alone
        ([[1.0, 2.0]], [[1, -1]], "current_counts"),
    ],
)
def test_bad_counts_name_their_window(reference, current, named):
    with pytest.raises(ValueError, match=f"{named} has negative, NaN or infinite counts in rows \\[0\\]"):
        divergences(np.array(reference), np.array(current), device="cpu")
