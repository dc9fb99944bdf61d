"""Multivariate drift from in-database moments (issue #27 groundwork).

NannyML's data-reconstruction error (PCA fitted on the reference) and a
Gaussian KL between moment-matched Gaussians, both computed from sums that a
database returns and that add up across slices. No raw rows leave the database.

- :mod:`.moments`: the reference fit's one aggregate statement and its parsing.
- :mod:`.fit`: imputation, count encoding, standardisation and PCA from those moments (torch, float64).
- :mod:`.reconstruction`: the per-row reconstruction-error SQL and the per-slice sums.
- :mod:`.gaussian`: KL between the reference and a window's Gaussians, with per-column contributions.

See DESIGN.md beside this file for what is wired and what is not.
"""

from driftmon.multivariate.fit import ReconstructionFit, fit_from_moments
from driftmon.multivariate.gaussian import GaussianKL, gaussian_kl
from driftmon.multivariate.moments import Column, ReferenceMoments, reference_moments_select
from driftmon.multivariate.reconstruction import (
    WindowSums,
    ensure_sqlite_sqrt,
    outside,
    reference_band,
    row_errors_subquery,
    slice_sums_select,
)

__all__ = [
    "Column",
    "GaussianKL",
    "ReconstructionFit",
    "ReferenceMoments",
    "WindowSums",
    "ensure_sqlite_sqrt",
    "fit_from_moments",
    "gaussian_kl",
    "outside",
    "reference_band",
    "reference_moments_select",
    "row_errors_subquery",
    "slice_sums_select",
]
