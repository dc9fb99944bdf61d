"""NannyML's reconstruction fit from the reference moments, in torch float64.

Reproduces ``DataReconstructionDriftCalculator._fit``: SimpleImputer (mean for
continuous columns, most frequent for categorical ones), category_encoders'
``CountEncoder(normalize=True)`` fitted on the imputed data, ``StandardScaler``
(population variance) and ``PCA(n_components=0.65)``. PCA of the standardised
reference is the eigendecomposition of its covariance (the correlation matrix);
component signs and the SVD-versus-eigh choice change neither the subspace nor
the reconstruction error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from driftmon.multivariate.moments import Column, ReferenceMoments

_EPS = np.finfo(np.float64).eps


@dataclass(frozen=True)
class CategoryEncoding:
    """Count encoding of one categorical column: each level's frequency in the imputed reference.

    A missing value is imputed with ``mode`` (so it encodes as the mode's
    frequency); a level the reference never saw encodes as 0, category_encoders'
    ``handle_unknown='value'``.
    """

    levels: tuple
    frequencies: tuple[float, ...]
    mode: object
    unknown: float = 0.0

    @property
    def missing(self) -> float:
        """The encoded value of a missing entry: the mode's frequency."""
        return self.frequencies[self.levels.index(self.mode)]


@dataclass(frozen=True)
class ReconstructionFit:
    """Everything the per-row SQL and the Gaussian KL need; small, storable with the reference profile.

    ``means``/``scales`` are the scaler's, per column in ``columns`` order (for a
    categorical column, of its encoded values); ``correlation`` is the population
    covariance of the standardised reference; ``components`` ``[d, k]`` spans the
    kept principal subspace and ``complement`` ``[d, d - k]`` the rest.
    """

    columns: tuple[Column, ...]
    n_reference: int
    means: Tensor
    scales: Tensor
    encodings: dict[str, CategoryEncoding]
    correlation: Tensor
    eigenvalues: Tensor
    components: Tensor
    complement: Tensor

    @property
    def n_components(self) -> int:
        """k, the number of kept principal components."""
        return int(self.components.shape[1])

    @property
    def explained_variance_ratio(self) -> Tensor:
        """Each component's share of the total variance, largest first (sklearn's attribute)."""
        clipped = self.eigenvalues.clamp_min(0)
        return clipped / clipped.sum()


def choose_components(ratios: Tensor, n_components: float | int) -> int:
    """sklearn's choice: an int as is; a fraction keeps the fewest components whose cumulative
    explained variance is strictly greater than it (``searchsorted(cumsum, f, side="right") + 1``)."""
    d = int(ratios.shape[0])
    if isinstance(n_components, int | np.integer) and not isinstance(n_components, bool):
        if not 0 <= n_components <= d:
            raise ValueError(f"multivariate: n_components={n_components} is not between 0 and {d}")
        return int(n_components)
    if not 0 < float(n_components) < 1:
        raise ValueError(f"multivariate: n_components={n_components} must be an int or a fraction in (0, 1)")
    cumulative = torch.cumsum(ratios, 0)
    k = int(torch.searchsorted(cumulative, torch.tensor([float(n_components)], dtype=cumulative.dtype), right=True))
    return min(k + 1, d)


def _encodings(moments: ReferenceMoments, n: float) -> dict[str, CategoryEncoding]:
    """Level counts per categorical column from the group counts; imputation adds the missing to the mode."""
    encodings = {}
    for c, column in enumerate(moments.categorical):
        counts: dict = {}
        for key, rows in zip(moments.keys, moments.rows, strict=True):
            counts[key[c]] = counts.get(key[c], 0.0) + rows
        encodings[column.name] = encoding_from_counts(column.name, counts, n)
    return encodings


def encoding_from_counts(name: str, counts: dict, n: float) -> CategoryEncoding:
    """A column's count encoding from its level counts (None: the missing values) over ``n`` rows."""
    counts = dict(counts)
    missing = counts.pop(None, 0.0)
    if not counts:
        raise ValueError(f"multivariate: column {name!r} has no value in the reference")
    top = max(counts.values())
    # SimpleImputer(strategy="most_frequent") breaks ties by the smallest value.
    mode = min(level for level, count in counts.items() if count == top)
    counts[mode] += missing
    levels = tuple(sorted(counts, key=lambda level: (str(type(level)), level)))
    # value_counts(normalize=True) divides each count by the rows: the same float division here.
    return CategoryEncoding(levels, tuple(float(counts[lv]) / n for lv in levels), mode)


def _centred_products(moments: ReferenceMoments, encodings, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum over the reference of (v_i - mean_i)(v_j - mean_j) for the imputed, encoded columns."""
    cols, n = moments.columns, moments.rows.sum()
    cont = [i for i, c in enumerate(cols) if not c.categorical]
    cats = [i for i, c in enumerate(cols) if c.categorical]
    d = len(cols)
    # Encoded categorical value of each group (a missing key takes the mode's frequency).
    lookups = [_lookup(encodings[col.name]) for col in moments.categorical]
    enc = np.array([[lookup[key[c]] for c, lookup in enumerate(lookups)] for key in moments.keys])
    enc = enc.reshape(len(moments.keys), len(cats))
    cat_means = (moments.rows[:, None] * enc).sum(0) / n
    means = np.zeros(d)
    means[cont], means[cats] = mu, cat_means
    products = np.zeros((d, d))
    # Continuous pairs: the masked-sum decomposition of moments.py, summed over groups.
    m = moments
    pair = m.cross - mu[None, None, :] * m.masked - mu[None, :, None] * m.masked.transpose(0, 2, 1)
    pair = pair + mu[None, :, None] * mu[None, None, :] * m.both
    products[np.ix_(cont, cont)] = pair.sum(0)
    # Continuous x categorical: the encoded value is constant within a group.
    centred_enc = enc - cat_means[None, :]
    mixed = (m.total - mu[None, :] * m.count).T @ centred_enc
    products[np.ix_(cont, cats)] = mixed
    products[np.ix_(cats, cont)] = mixed.T
    products[np.ix_(cats, cats)] = centred_enc.T @ (m.rows[:, None] * centred_enc)
    return products, means


def _lookup(encoding: CategoryEncoding) -> dict:
    """Each level's encoded value, and None's (a missing value, imputed with the mode)."""
    return {**dict(zip(encoding.levels, encoding.frequencies, strict=True)), None: encoding.missing}


def _scales(variances: Tensor, means: Tensor, n: float) -> Tensor:
    """StandardScaler's scale_: sqrt(var), but 1 for a constant column.

    StandardScaler calls a column constant when its variance is within rounding
    of 0 for its mean and row count (``_is_constant_feature``: var <= n eps var +
    (n mean eps)^2) and passes that mask to ``_handle_zeros_in_scale``.
    """
    constant = variances <= n * _EPS * variances + (n * means * _EPS) ** 2
    return torch.where(constant, torch.ones_like(variances), torch.sqrt(variances))


def fit_from_moments(moments: ReferenceMoments, n_components: float | int = 0.65) -> ReconstructionFit:
    """The reference fit: imputation, count encoding, standard scaling and PCA, from the moments alone."""
    n = float(moments.rows.sum())
    if n < 2:
        raise ValueError("multivariate: the reference needs at least 2 rows")
    present = moments.count.sum(0)
    empty = [c.name for c, k in zip(moments.continuous, present, strict=True) if k == 0]
    if empty:
        raise ValueError(f"multivariate: column(s) {empty} have no value in the reference")
    mu = moments.total.sum(0) / present
    encodings = _encodings(moments, n)
    products, means = _centred_products(moments, encodings, mu)
    cont_index = [i for i, c in enumerate(moments.columns) if not c.categorical]
    means[cont_index] += moments.shifts  # back to the columns' own coordinates
    products = torch.from_numpy(products)
    variances = torch.diagonal(products).clamp_min(0) / n
    scales = _scales(variances, torch.from_numpy(means), n)
    correlation = products / n / torch.outer(scales, scales)
    correlation = (correlation + correlation.T) / 2  # exact symmetry for eigh
    eigenvalues, vectors = torch.linalg.eigh(correlation)
    order = torch.argsort(eigenvalues, descending=True)
    eigenvalues, vectors = eigenvalues[order], vectors[:, order]
    clipped = eigenvalues.clamp_min(0)
    k = choose_components(clipped / clipped.sum(), n_components)
    return ReconstructionFit(
        columns=moments.columns,
        n_reference=int(n),
        means=torch.from_numpy(means),
        scales=scales,
        encodings=encodings,
        correlation=correlation,
        eigenvalues=eigenvalues,
        components=vectors[:, :k].contiguous(),
        complement=vectors[:, k:].contiguous(),
    )
