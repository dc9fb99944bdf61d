"""KL divergence between the moment-matched Gaussians of the reference and a window.

Both live in the fit's standardised coordinates (z): the reference's Gaussian
has mean 0 and covariance ``fit.correlation``; a window's comes from its summed
slices (``WindowSums``: n, SUM z, SUM z z^T), population covariance, so it adds
over slices like everything else. This is the joint-distribution counterpart of
driftmon's univariate KL; it sees a changed correlation that every marginal
misses, and it is in nats.

Per-column contributions. With R the reference covariance and C the window's,
work with ``A = R^-1/2 C R^-1/2`` (R^-1/2 the symmetric, ZCA, inverse square
root, the whitening that moves each coordinate least) and ``delta =
R^-1/2 (mean_C - mean_R)``. Then::

    KL(ref || cur) = 1/2 [tr(A^-1 - I + log A) + delta^T A^-1 delta]
    KL(cur || ref) = 1/2 [tr(A - I - log A)    + delta^T delta]

Each trace is of a matrix function whose scalar form (1/a - 1 + ln a, or
a - 1 - ln a) is never negative, so the matrix is positive semi-definite and
its diagonal gives one non-negative share per column; the mean term splits as
the squared entries of ``A^-1/2 delta`` (or ``delta``). The shares sum to the KL
exactly and say which columns' variances or covariances moved.

A KL of a finite window is biased upwards (about d(d+3)/(4n) nats for n rows
of d columns), which is why thresholds come from reference chunks of the
window's size, not from zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from driftmon.multivariate.fit import ReconstructionFit

DIRECTIONS = ("reference_current", "current_reference")
# Eigenvalues below this (relative to the largest) make a covariance singular here.
_SINGULAR = 1e-12


@dataclass(frozen=True)
class GaussianKL:
    """The KL in nats, and each column's non-negative share of it (``contributions.sum() == value``)."""

    value: float
    contributions: Tensor
    columns: tuple[str, ...]
    direction: str

    def largest(self, count: int = 3) -> list[tuple[str, float]]:
        """The columns contributing most, largest first: what ``explain`` would list."""
        order = torch.argsort(self.contributions, descending=True)[:count]
        return [(self.columns[i], float(self.contributions[i])) for i in order.tolist()]


def window_gaussian(
    n: float, zsum: np.ndarray | Tensor, zz: np.ndarray | Tensor, device: str | torch.device = "cpu"
) -> tuple[Tensor, Tensor]:
    """Mean and population covariance of z from a window's sums."""
    if n < 1:
        raise ValueError("multivariate: a window with no rows has no Gaussian")
    zsum = torch.as_tensor(zsum, dtype=torch.float64, device=device)
    zz = torch.as_tensor(zz, dtype=torch.float64, device=device)
    mean = zsum / n
    covariance = zz / n - torch.outer(mean, mean)
    return mean, (covariance + covariance.T) / 2


def kl_between(
    mean_ref: Tensor, cov_ref: Tensor, mean_cur: Tensor, cov_cur: Tensor, direction: str = "reference_current"
) -> tuple[float, Tensor]:
    """KL between two Gaussians and its per-coordinate shares (see the module docstring).

    A singular reference covariance (a constant or duplicated column) raises
    ``ValueError``; a singular window covariance gives ``inf`` (the KL is
    infinite in both directions), with ``inf`` shares.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"multivariate: kl direction {direction!r} is not one of {DIRECTIONS}")
    ref_values, ref_vectors = torch.linalg.eigh(cov_ref)
    if ref_values.min() <= _SINGULAR * ref_values.max().clamp_min(1e-300):
        raise ValueError("multivariate: the reference covariance is singular (a constant or duplicated column)")
    whiten = (ref_vectors * ref_values.rsqrt()) @ ref_vectors.T
    a = whiten @ cov_cur @ whiten
    a = (a + a.T) / 2
    delta = whiten @ (mean_cur - mean_ref)
    values, vectors = torch.linalg.eigh(a)
    if values.min() <= _SINGULAR * values.max().clamp_min(1e-300):
        shares = torch.full_like(delta, float("inf"))
        return float("inf"), shares
    if direction == "reference_current":
        matrix_term = (vectors * (1 / values - 1 + torch.log(values))) @ vectors.T
        mean_term = ((vectors * values.rsqrt()) @ vectors.T @ delta) ** 2
    else:
        matrix_term = (vectors * (values - 1 - torch.log(values))) @ vectors.T
        mean_term = delta**2
    # The diagonal of a PSD matrix is >= 0 in exact arithmetic; clamp the rounding.
    shares = (torch.diagonal(matrix_term).clamp_min(0) + mean_term) / 2
    return float(shares.sum()), shares


def gaussian_kl(
    fit: ReconstructionFit,
    n: float,
    zsum: np.ndarray | Tensor,
    zz: np.ndarray | Tensor,
    direction: str = "reference_current",
    device: str | torch.device = "cpu",
) -> GaussianKL:
    """KL between the reference's Gaussian (mean 0, covariance ``fit.correlation``) and a window's.

    ``direction`` follows driftmon's ``kl_direction`` (default KL(reference || current)).
    """
    mean_cur, cov_cur = window_gaussian(n, zsum, zz, device)
    cov_ref = fit.correlation.to(device)
    value, shares = kl_between(torch.zeros_like(mean_cur), cov_ref, mean_cur, cov_cur, direction)
    return GaussianKL(value, shares.cpu(), tuple(c.name for c in fit.columns), direction)
