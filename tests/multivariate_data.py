"""Data for tests/test_multivariate_core.py: NannyML's reconstruction-error test case and an
independent numpy implementation of its calculator.

``nannyml_sample`` rebuilds the ``sample_drift_data`` fixture of NannyML's
tests/drift/test_multiv_pca.py (NannyML/nannyml) in numpy: the same seeded
draws in the same order, the same replacement rules, 20 ISO weeks of 1,008
rows from Monday 2020-01-06 at 10-minute steps (so ``week = isoweek - 1 =
1 + row // 1008``), reference = weeks < 11. The expected values below are the
ones that test hard-codes.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import sqlalchemy as sa

ROWS_PER_WEEK = 1008
WEEKS = 20

# test_data_reconstruction_drift_calculator_numeric_results: chunk_period='W', 20 weekly chunks.
NANNYML_WEEKLY = [
    0.795939312162986, 0.7840110463966236, 0.8119098730091425, 0.7982130082187159, 0.807815521612754,
    0.8492042669464963, 0.7814127409090083, 0.8022621626300768, 0.8104742129966831, 0.7703901270625767,
    0.8007070128606296, 0.7953169982962172, 0.7862784182468701, 0.838376989270861, 0.8019280640410021,
    0.7154339372837247, 0.7171169593894968, 0.7255999561968017, 0.73493013255886, 0.7777717388501538,
]  # fmt: skip
# test_data_reconstruction_drift_calculator_works_with_chunker: chunk_number=5, chunk_period='M',
# the default (10 chunks), and chunk_size=5000 (to 5 decimals, the last chunk has 160 rows).
NANNYML_CHUNK_NUMBER_5 = [
    0.7975183099468669, 0.8101736730245841, 0.7942220878040264, 0.7855043522106143, 0.7388546967488279,
]  # fmt: skip
NANNYML_MONTHLY = [0.7925562396242019, 0.81495562506899, 0.7914354678003803, 0.7766351972000973, 0.7442465240638783]
NANNYML_DEFAULT_10 = [
    0.7899751792798048, 0.805061440613929, 0.828509894279626, 0.7918374517695422, 0.7904321700296298,
    0.798012005578423, 0.8123277037588652, 0.7586810006623634, 0.721358457793149, 0.7563509357045066,
]  # fmt: skip
NANNYML_SIZE_5000 = [0.79987, 0.80210, 0.80430, 0.73552, 0.76087]
# Sampling errors, published rounded to 4 decimals: chunk_period='M', and chunk_size=2500 on the first 7,500 rows.
NANNYML_MONTHLY_SAMPLING = [0.0095, 0.0090, 0.0086, 0.0086, 0.0092]
NANNYML_SIZE_2500_SAMPLING = [0.0118, 0.0115, 0.0118]

# NOT published by NannyML: the fixture's `sample_drift_data_with_nans` (11 % of f1 and of f4 missing)
# through the calculator's own steps (SimpleImputer, category_encoders.CountEncoder(normalize=True),
# StandardScaler, PCA(n_components=0.65)) with scikit-learn 1.9.1, category_encoders 2.11.2 and pandas
# 3.1.2, in a separate venv (the script is described in driftmon/multivariate/DESIGN.md). Weekly values and
# sampling errors; and the full-precision monthly sampling errors of the published case.
LIBRARY_NANS_WEEKLY = [
    0.8029953697541895, 0.7638589482330229, 0.7980878749424423, 0.7822396488802057, 0.8234888414531791,
    0.8220443148016334, 0.7765603863965973, 0.812535504053476, 0.8154071210566816, 0.7678042056300743,
    0.8014358531243322, 0.7929821212211511, 0.7684268418731066, 0.8326757512695376, 0.7750914227195426,
    0.7550963171319018, 0.7447247602909163, 0.7381279692966434, 0.7381701838066859, 0.7850188135545688,
]  # fmt: skip
LIBRARY_NANS_WEEKLY_SAMPLING = [
    0.018619383997794045, 0.01897769369184303, 0.018229630679644945, 0.019092260158755137, 0.018474463225196698,
    0.01899876895350465, 0.01926970280525538, 0.018836784671006572, 0.01892663022174937, 0.0172321001670388,
    0.018280338980221408, 0.018720547485185337, 0.0182957244061444, 0.01932738008016462, 0.018540283972820107,
    0.017602304056959377, 0.016973603705604155, 0.017466735798090702, 0.018365282164638702, 0.018905633226300556,
]  # fmt: skip
LIBRARY_MONTHLY_SAMPLING = [
    0.009542581960163539, 0.009042607568036263, 0.008605084731348567, 0.008596096459175338, 0.009168698817096966,
]  # fmt: skip

_RULE2A = ["white"] * 5 + ["red"] * 5 + ["green"] * 5 + ["blue"] * 5
_RULE2B = ["white"] * 5 + ["red"] * 5 + ["green"] * 3 + ["white"] * 2 + ["blue"] * 3 + ["white", "red"]


def nannyml_sample(with_nans: bool = False) -> dict[str, np.ndarray]:
    """The fixture's columns f1..f4 plus row id, week (1..20), month, and chunk keys."""
    n = WEEKS * ROWS_PER_WEEK
    rid = np.arange(n)
    week = 1 + rid // ROWS_PER_WEEK
    np.random.seed(167)  # noqa: NPY002 - the fixture's own global-state draws, in its order
    f1 = np.random.randn(n)  # noqa: NPY002
    f2 = np.random.rand(n)  # noqa: NPY002
    f3 = np.random.randint(4, size=n)  # noqa: NPY002
    f4 = np.random.randint(20, size=n)  # noqa: NPY002
    late = week >= 16
    f3 = np.where(f3 == 2, 0, np.where(f3 == 3, np.where(late, 0, 1), f3))
    f4 = np.where(late, np.array(_RULE2B)[f4], np.array(_RULE2A)[f4]).astype(object)
    f1 = np.where(late, f1 + 0.6, f1)
    f2 = np.where(late, np.sqrt(f2), f2)
    stamps = np.datetime64("2020-01-06T00:00") + rid * np.timedelta64(10, "m")
    month = stamps.astype("datetime64[M]").astype(str)
    f1 = f1.astype(object)
    if with_nans:
        # Like the fixture's sample(frac=0.11, random_state=13/14) (pandas draws
        # RandomState(seed).choice(n, round(frac * n), replace=False)); no published values depend on it.
        f1[np.random.RandomState(13).choice(n, round(0.11 * n), replace=False)] = None
        f4[np.random.RandomState(14).choice(n, round(0.11 * n), replace=False)] = None
    return {
        "rid": rid, "week": week, "month": month, "chunk5": rid // (n // 5), "chunk10": rid // (n // 10),
        "size2500": rid // 2500, "size5000": rid // 5000, "day": rid // 144, "f1": f1, "f2": f2, "f3": f3, "f4": f4,
    }  # fmt: skip


def write_table(engine: sa.Engine, name: str, data: dict[str, np.ndarray]) -> sa.Table:
    """A source table holding ``data`` (None is NULL); column types from the arrays."""
    columns = []
    for key, values in data.items():
        first = next((v for v in values if v is not None), 0)
        kind = sa.String(20) if isinstance(first, str) else sa.Double if isinstance(first, float) else sa.BigInteger
        columns.append(sa.Column(key, kind))
    table = sa.Table(name, sa.MetaData(), *columns)
    table.create(engine)
    keys = list(data)
    rows = [
        {k: (None if v is None else v.item() if hasattr(v, "item") else v) for k, v in zip(keys, row, strict=True)}
        for row in zip(*(data[k] for k in keys), strict=True)
    ]
    with engine.begin() as connection:
        connection.execute(table.insert(), rows)
    return table


def _most_frequent(values: list) -> object:
    counts = Counter(values)
    top = max(counts.values())
    return min(v for v, c in counts.items() if c == top)


class NumpyReconstruction:
    """NannyML's calculator on raw rows in plain numpy: the independent check of the SQL path.

    Mean / most-frequent imputation, count encoding (frequency in the imputed
    reference, 0 for unseen levels), population standardisation, PCA by SVD of
    the centred standardised reference with sklearn's n_components rule, and
    ``||z - inverse_transform(transform(z))||`` per row.
    """

    def __init__(self, reference: dict[str, np.ndarray], columns: list[str], categorical: set[str], fraction=0.65):
        self.columns, self.categorical = columns, categorical
        self.fill, self.freq = {}, {}
        for c in columns:
            values = list(reference[c])
            present = [v for v in values if v is not None]
            if c in categorical:
                self.fill[c] = _most_frequent(present)
                filled = [self.fill[c] if v is None else v for v in values]
                self.freq[c] = {k: v / len(filled) for k, v in Counter(filled).items()}
            else:
                self.fill[c] = float(np.mean(np.array(present, dtype=float)))
        x = self.encode(reference)
        self.mean, self.scale = x.mean(0), x.std(0)
        self.scale[self.scale == 0] = 1.0  # StandardScaler's scale for a constant column
        z = (x - self.mean) / self.scale
        self.z_mean = z.mean(0)
        _, s, vt = np.linalg.svd(z - self.z_mean, full_matrices=False)
        ratios = s**2 / (s**2).sum()
        self.k = int(np.searchsorted(np.cumsum(ratios), fraction, side="right")) + 1
        self.v = vt[: self.k].T
        self.correlation = np.cov(z, rowvar=False, bias=True)

    def encode(self, data: dict[str, np.ndarray]) -> np.ndarray:
        """Imputed, count-encoded columns as a float matrix."""
        out = []
        for c in self.columns:
            filled = [self.fill[c] if v is None else v for v in data[c]]
            if c in self.categorical:
                out.append([self.freq[c].get(v, 0.0) for v in filled])
            else:
                out.append(np.array(filled, dtype=float))
        return np.array(out, dtype=float).T

    def standardize(self, data: dict[str, np.ndarray]) -> np.ndarray:
        return (self.encode(data) - self.mean) / self.scale

    def errors(self, data: dict[str, np.ndarray]) -> np.ndarray:
        """Each row's reconstruction error."""
        z = self.standardize(data)
        back = (z - self.z_mean) @ self.v @ self.v.T + self.z_mean
        return np.linalg.norm(z - back, axis=1)


def subset(data: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    """The rows of ``data`` where ``mask`` holds."""
    return {k: v[mask] for k, v in data.items()}


def correlated_sample(rows: int, rho: float, seed: int, columns: int = 4) -> dict[str, np.ndarray]:
    """Standard-normal columns x0..x{columns-1}; x0 and x1 with correlation ``rho``, the rest independent.

    Flipping the sign of ``rho`` leaves every marginal N(0, 1) and changes only the joint distribution.
    """
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((rows, columns))
    x1 = rho * base[:, 0] + np.sqrt(1 - rho * rho) * base[:, 1]
    data = {f"x{j}": base[:, j].astype(object) for j in range(columns)}
    data["x1"] = x1.astype(object)
    data["chunk"] = np.arange(rows) // 1000
    return data
