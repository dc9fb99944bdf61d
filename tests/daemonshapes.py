"""Divergence inputs shaped like the daemon's (issue 25): tests/test_divergence_daemon_shapes.py
checks the engine on them and bench/bench_divergence.py times it."""

from __future__ import annotations

import numpy as np

# A 7-day reference of bench_sources' 10 M-row table is ~2.9 M rows a column and
# a 5-minute slice ~8,700; bench_incremental's 24-column monitor has 22 bins at the widest.
REFERENCE_ROWS = 2_900_000
WINDOW_ROWS = 8_700


def daemon_counts(features: int, bins: int = 22, drifted: bool = True, seed: int = 0):
    """(reference, current, mask) as the pipeline builds them: float64 ``[F, B]`` and bool ``[F, B]``.

    Like bench_sources' columns: every sixth a categorical (top 20 of Zipf-like
    shares + ``__other__`` + ``__missing__``: all ``bins``, the rarest empty in
    the window), the rest numeric quantile bins (10, + ``__missing__`` at 2 %,
    a third of them with no NULLs at all: an empty bin in both windows, as
    the score column's). Multinomial counts of ``REFERENCE_ROWS`` and
    ``WINDOW_ROWS``; ``drifted`` moves every third column's shares.
    """
    rng = np.random.default_rng(seed)
    reference, current = np.zeros((features, bins)), np.zeros((features, bins))
    mask = np.zeros((features, bins), dtype=bool)
    for row in range(features):
        if row % 6 == 5:
            shares = 1.0 / np.arange(1, bins + 1) ** 2.2
        else:
            shares = np.append(np.full(10, 0.098), 0.02 if row % 3 else 0.0)[:bins]
        shares = shares / shares.sum()
        moved = shares * (1 + 0.3 * np.sin(np.arange(len(shares)) + row)) if drifted and row % 3 == 0 else shares
        reference[row, : len(shares)] = rng.multinomial(REFERENCE_ROWS, shares)
        current[row, : len(shares)] = rng.multinomial(WINDOW_ROWS, moved / moved.sum())
        mask[row, : len(shares)] = True
    return reference, current, mask
