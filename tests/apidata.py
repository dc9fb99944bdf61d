"""Frames for the Python API's tests, and an independent numpy/scipy computation of their statistics.

The reference computation follows the README's rules ("What driftmon measures")
with nothing of driftmon's: numpy quantiles and searchsorted for the bins,
``scipy.stats.entropy`` for KL, PSI and JS on the smoothed shares,
``scipy.stats.chi2_contingency`` (log-likelihood) for G with Williams' correction,
``scipy.stats.false_discovery_control`` for the q-values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

OTHER, MISSING = "__other__", "__missing__"

# Every binning mode and dtype of edge_frames' columns.
FEATURES = [
    {"column": "amount", "type": "numeric"},  # quantile, 10 bins, NaN and ±inf missing
    {"column": "country", "type": "categorical", "top_k": 4},  # __other__ from the 5th and the new one
    {"column": "tier", "type": "numeric", "bins": 10},  # Int64 with NA: ties merge the cuts
    {"column": "score", "type": "numeric", "binning": "uniform", "range": [0, 1], "bins": 5},  # Float64
    {"column": "plan", "type": "categorical"},  # pandas category with NaN
    {"column": "device", "type": "categorical"},  # string dtype with NA
    {"column": "loyal", "type": "categorical"},  # bool
    {"column": "clicks", "type": "numeric", "binning": "uniform", "bins": 4},  # range from the reference
]



@dataclass(frozen=True)
class Expected:
    labels: list[str]
    reference: np.ndarray
    current: np.ndarray
    kl: float
    psi: float
    js: float
    p_value: float | None


def _is_missing(value) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float | np.floating):
        return not math.isfinite(value)
    return False


def numeric_values(series: pd.Series) -> tuple[np.ndarray, int]:
    """The present (finite) values as float64, and how many are missing."""
    values = [float(v) for v in series.astype(object) if not _is_missing(v)]
    array = np.array(values, dtype=np.float64)
    present = array[np.isfinite(array)]
    return present, len(series) - len(present)


def cuts_of(reference: pd.Series, feature: dict) -> list[float]:
    present, _ = numeric_values(reference)
    binning = feature.get("binning") or ("explicit" if "edges" in feature else "quantile")
    if binning == "explicit":
        return list(feature["edges"])
    bins = feature.get("bins", 10)
    if binning == "uniform":
        low, high = feature.get("range") or (present.min(), present.max())
        return sorted({low + i * (high - low) / bins for i in range(1, bins)})
    if bins == 1 or len(present) == 0:
        return []
    return sorted(set(np.quantile(present, [i / bins for i in range(1, bins)]).tolist()))


def numeric_counts(series: pd.Series, cuts: list[float]) -> tuple[np.ndarray, int]:
    present, missing = numeric_values(series)
    codes = np.searchsorted(np.array(cuts, dtype=np.float64), present, side="right")
    return np.bincount(codes, minlength=len(cuts) + 1).astype(np.float64), missing


def categories_of(reference: pd.Series, top_k: int) -> list:
    values = [v for v in reference.astype(object) if not _is_missing(v)]
    counted = pd.Series(values, dtype=object).value_counts()
    ranked = sorted(counted.items(), key=lambda pair: (-pair[1], pair[0]))
    return [value for value, _ in ranked[:top_k]]


def categorical_counts(series: pd.Series, categories: list) -> tuple[np.ndarray, int, int]:
    index = {c: i for i, c in enumerate(categories)}
    counts, other, missing = np.zeros(len(categories)), 0, 0
    for value in series.astype(object):
        if _is_missing(value):
            missing += 1
        elif value in index:
            counts[index[value]] += 1
        else:
            other += 1
    return counts, other, missing


def column_counts(reference: pd.Series, current: pd.Series, feature: dict) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The column's bins (value bins, then other and missing where either window has any)."""
    if feature["type"] == "numeric":
        cuts = cuts_of(reference, feature)
        (ref, ref_missing), (cur, cur_missing) = numeric_counts(reference, cuts), numeric_counts(current, cuts)
        labels = [str(i) for i in range(len(cuts) + 1)]
        extra = [(MISSING, ref_missing, cur_missing)]
    else:
        categories = categories_of(reference, feature.get("top_k", 20))
        ref, ref_other, ref_missing = categorical_counts(reference, categories)
        cur, cur_other, cur_missing = categorical_counts(current, categories)
        labels = [str(c) for c in categories]
        extra = [(OTHER, ref_other, cur_other), (MISSING, ref_missing, cur_missing)]
    ref, cur = list(ref), list(cur)
    for label, r, c in extra:
        if r or c:
            labels.append(label)
            ref.append(r)
            cur.append(c)
    return labels, np.array(ref, dtype=np.float64), np.array(cur, dtype=np.float64)


def smoothed(counts: np.ndarray, smoothing: dict) -> np.ndarray:
    if smoothing.get("method", "pseudocount") == "pseudocount":
        alpha = smoothing.get("alpha", 0.5)
        return (counts + alpha) / (counts.sum() + alpha * len(counts))
    shares = counts / counts.sum()
    shares = np.where(counts == 0, smoothing.get("epsilon", 1e-4), shares)
    return shares / shares.sum()


def g_test_p(reference: np.ndarray, current: np.ndarray) -> float | None:
    """The G-test of homogeneity with Williams' correction (bins empty in both dropped)."""
    kept = (reference + current) > 0
    table = np.vstack([reference[kept], current[kept]])
    if table.shape[1] < 2:
        return 1.0
    g, _, dof, _ = stats.chi2_contingency(table, lambda_="log-likelihood", correction=False)
    n, rows, columns = table.sum(), table.sum(axis=1), table.sum(axis=0)
    q = 1 + (n * (1 / rows).sum() - 1) * (n * (1 / columns).sum() - 1) / (6 * n * (table.shape[1] - 1))
    return float(stats.chi2.sf(g / q, dof))


def expected(reference: pd.Series, current: pd.Series, feature: dict, smoothing: dict | None = None,
             kl_direction: str = "reference_current") -> Expected:
    smoothing = smoothing or {}
    labels, ref, cur = column_counts(reference, current, feature)
    p, q = smoothed(ref, smoothing), smoothed(cur, smoothing)
    kl = stats.entropy(p, q) if kl_direction == "reference_current" else stats.entropy(q, p)
    m = (p + q) / 2
    return Expected(labels, ref, cur, float(kl), float(stats.entropy(p, q) + stats.entropy(q, p)),
                    float(0.5 * stats.entropy(p, m) + 0.5 * stats.entropy(q, m)), g_test_p(ref, cur))


def bh(p_values: list[float]) -> list[float]:
    return stats.false_discovery_control(np.array(p_values), method="bh").tolist()


def edge_frames(seed: int = 3, n: int = 3_000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every dtype and edge case compare() must take: NaN, None, ±inf, nullable and categorical
    dtypes, text with NA, booleans, ties that merge quantile cuts, an unseen category."""
    rng = np.random.default_rng(seed)

    def frame(shift: float, new_country: bool) -> pd.DataFrame:
        amount = rng.normal(100 + shift, 20, n)
        amount[rng.random(n) < 0.03] = np.nan
        amount[rng.random(n) < 0.01] = np.inf
        amount[rng.random(n) < 0.01] = -np.inf
        countries = ["DE", "FR", "US", "GB", "NL"] + (["BR"] if new_country else [])
        country = rng.choice(countries, n).astype(object)
        country[rng.random(n) < 0.02] = None
        tier = pd.array(rng.integers(0, 4, n), dtype="Int64")  # ties: quantile cuts merge
        tier[rng.random(n) < 0.05] = pd.NA
        score = pd.array(rng.uniform(0, 1, n) ** (1.5 if shift else 1.0), dtype="Float64")
        score[rng.random(n) < 0.02] = pd.NA
        plan = pd.Categorical(rng.choice(["free", "pro", "team"], n, p=[0.6, 0.3, 0.1]))
        plan[rng.random(n) < 0.02] = np.nan
        device = pd.array(rng.choice(["ios", "android", "web"], n), dtype="string")
        device[rng.random(n) < 0.04] = pd.NA
        return pd.DataFrame({
            "amount": amount, "country": country, "tier": tier, "score": score, "plan": plan,
            "device": device, "loyal": rng.random(n) < (0.4 + shift / 100),
            "clicks": rng.poisson(3 + shift / 10, n).astype(np.int64),
        })

    return frame(0.0, False), frame(25.0, True)
