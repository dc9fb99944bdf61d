"""``driftmon.compare`` against an independent numpy/scipy computation (tests/apidata.py), to 1e-9.

Every binning mode (quantile with merged ties, uniform with and without a range,
explicit, one bin, bins empty in both windows), categorical columns of every
dtype (object, string, category, bool) with NULLs and unseen values, numeric
ones with NaN, None, ±inf and nullable dtypes, both smoothings and KL directions.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import driftmon
from driftmon.api.comparison import BIN_COLUMNS, RESULT_COLUMNS
from tests.apidata import FEATURES, bh, edge_frames, expected

TOLERANCE = 1e-9

@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    return edge_frames()


def assert_close(actual: float | None, wanted: float | None, what: str) -> None:
    assert actual is not None and wanted is not None, (what, actual, wanted)
    assert abs(actual - wanted) <= TOLERANCE * max(1.0, abs(wanted)), (what, actual, wanted)


def check_against_scipy(comparison, reference, current, features, smoothing=None,
                        kl_direction="reference_current") -> None:
    frame = comparison.to_df()
    wanted = {f["column"]: expected(reference[f["column"]], current[f["column"]], f, smoothing, kl_direction)
              for f in features}
    for row in frame.itertuples():
        want = wanted[row.feature]
        for name in ("kl", "psi", "js", "p_value"):
            assert_close(getattr(row, name), getattr(want, name), f"{row.feature} {name}")
        assert row.samples_reference == want.reference.sum() == len(reference)
        assert row.samples_current == want.current.sum() == len(current)
    for actual, q in zip(frame.q_value, bh([wanted[f].p_value for f in frame.feature]), strict=True):
        assert_close(actual, q, "q_value")


def test_every_dtype_and_edge_case_equals_numpy_and_scipy(frames):
    reference, current = frames
    comparison = driftmon.compare(reference, current, FEATURES)
    check_against_scipy(comparison, reference, current, FEATURES)
    frame = comparison.to_df()
    assert list(frame.feature) == [f["column"] for f in FEATURES]
    assert dict(frame.dtypes.astype(str)) == RESULT_COLUMNS
    assert frame.segment.isna().all()
    assert frame.set_index("feature").status["amount"] == "critical"


def test_bins_are_the_readme_bins(frames):
    reference, current = frames
    comparison = driftmon.compare(reference, current, FEATURES)
    for feature in FEATURES:
        table = comparison.explain(feature["column"])
        want = expected(reference[feature["column"]], current[feature["column"]], feature)
        assert len(table) == len(want.labels)
        by_count = sorted(zip(table.reference_count, table.current_count, strict=True))
        assert by_count == sorted(zip(want.reference, want.current, strict=True)), feature["column"]
    # Four integer values: nine quantile cuts merge to 0, 1, 2, 3, so five value bins (the lowest,
    # below 0, empty in both windows) and the missing one.
    tier = comparison.explain("tier")
    assert len(tier) == 6 and "__missing__" in set(tier.bin)
    assert tier.set_index("bin").loc["(-inf, 0.0)", ["reference_count", "current_count"]].tolist() == [0.0, 0.0]
    assert "__other__" in set(comparison.explain("country").bin)


@pytest.mark.parametrize("smoothing", [{"method": "pseudocount", "alpha": 0.5}, {"method": "pseudocount", "alpha": 2},
                                       {"method": "epsilon", "epsilon": 1e-4}])
@pytest.mark.parametrize("direction", ["reference_current", "current_reference"])
def test_smoothings_and_directions(frames, smoothing, direction):
    reference, current = frames
    features = FEATURES[:3]
    comparison = driftmon.compare(reference, current, features, smoothing=smoothing, kl_direction=direction)
    check_against_scipy(comparison, reference, current, features, smoothing, direction)


def test_explicit_edges_one_bin_and_bins_empty_in_both_windows():
    rng = np.random.default_rng(11)
    reference = pd.DataFrame({"x": rng.uniform(0, 10, 1_000), "y": rng.normal(0, 1, 1_000)})
    current = pd.DataFrame({"x": rng.uniform(0, 12, 1_200), "y": rng.normal(0.1, 1, 1_200)})
    features = [
        # 100 and 200 cut bins that no row reaches: empty in both windows, still bins.
        {"column": "x", "type": "numeric", "edges": [2.0, 4.0, 8.0, 100.0, 200.0]},
        {"column": "y", "type": "numeric", "bins": 1},  # one bin: every statistic 0
    ]
    comparison = driftmon.compare(reference, current, features)
    check_against_scipy(comparison, reference, current, features)
    x = comparison.explain("x")
    assert len(x) == 6 and ((x.reference_count == 0) & (x.current_count == 0)).sum() == 2
    row = comparison.to_df().set_index("feature").loc["y"]
    assert (row.kl, row.psi, row.js) == (0.0, 0.0, 0.0)


def test_default_features_follow_the_dtypes(frames):
    reference, current = frames
    stamped = reference.assign(seen=pd.Timestamp("2024-01-01", tz="UTC"))
    comparison = driftmon.compare(stamped, current.assign(seen=pd.Timestamp("2024-01-02")))
    frame = comparison.to_df()
    assert list(frame.feature) == list(reference.columns)  # the timestamps left out
    kinds = {f.column: f.type for f in comparison.monitor.features}
    assert kinds == {"amount": "numeric", "country": "categorical", "tier": "numeric", "score": "numeric",
                     "plan": "categorical", "device": "categorical", "loyal": "categorical",
                     "clicks": "numeric"}
    # Defaults as a config file's: quantile 10 bins, top_k 20, thresholds 0.1/0.25, q <= 0.01.
    defaults = [{"column": c, "type": t} for c, t in kinds.items()]
    check_against_scipy(comparison, reference, current, defaults)


def test_insufficient_data_and_settings_as_keywords(frames):
    reference, current = frames
    few = current.head(50)
    comparison = driftmon.compare(reference, few, ["amount", "country"], min_samples=100)
    frame = comparison.to_df()
    assert list(frame.status) == ["insufficient_data"] * 2
    assert frame[["kl", "psi", "js", "p_value", "q_value"]].isna().all().all()
    assert list(frame.samples_current) == [50.0, 50.0]
    loose = driftmon.compare(reference, current, ["amount"], thresholds={"statistic": "psi", "warning": 50,
                                                                         "critical": 60}, significance=None)
    assert loose.status("amount") == "ok"


def test_missing_ratio_counts_nan_none_and_inf(frames):
    reference, current = frames
    comparison = driftmon.compare(reference, current, ["amount", "device"])
    frame = comparison.to_df().set_index("feature")
    amount = current.amount.to_numpy()
    assert frame.missing_ratio["amount"] == (~np.isfinite(amount)).sum() / len(current)
    assert frame.missing_ratio["device"] == current.device.isna().sum() / len(current)


def test_explain_is_the_explain_command_table(frames):
    reference, current = frames
    comparison = driftmon.compare(reference, current, FEATURES[:2])
    table = comparison.explain("country")
    assert dict(table.dtypes.astype(str)) == BIN_COLUMNS
    assert table.psi_term.is_monotonic_decreasing
    assert table.iloc[0].bin == "__other__"  # the new country moved most
    kl = comparison.to_df().set_index("feature").kl["country"]
    assert math.isclose(table.contribution.sum(), kl, rel_tol=1e-12, abs_tol=1e-15)
    assert math.isclose(table.share_of_movement.sum(), 1.0, rel_tol=1e-12)
    assert comparison.explanation() is comparison.explanation()  # one engine call per segment, kept


def test_segments(frames):
    reference, current = frames
    features = [{"column": "amount", "type": "numeric"}, {"column": "country", "type": "categorical"}]
    whole = driftmon.compare(reference, current, features)
    split = driftmon.compare(reference, current, features, segments="device")
    frame = split.to_df()
    population = frame[frame.segment.isna()]
    assert list(population.feature) == ["amount", "country", "segment"]
    # The whole population's rows are the unsegmented comparison's, q-values included (their own family).
    pd.testing.assert_frame_equal(population.head(2).reset_index(drop=True), whole.to_df())
    assert {"device=web", "device=android", "device=ios", "device=__missing__"} <= set(split.segments)
    # One segment's column: the whole reference's bins, that segment's rows.
    ios = frame[frame.segment == "device=ios"].set_index("feature")
    want = expected(reference.amount, current.amount, features[0])
    cuts_rows = expected(reference.amount[reference.device == "ios"], current.amount[current.device == "ios"],
                         {"column": "amount", "type": "numeric", "edges": _cuts(reference.amount)})
    assert len(want.labels) == len(cuts_rows.labels)
    assert_close(ios.kl["amount"], cuts_rows.kl, "segment kl")
    assert split.explain("amount", segment="device=ios").reference_count.sum() == (reference.device == "ios").sum()


def _cuts(series: pd.Series) -> list[float]:
    from tests.apidata import cuts_of

    return cuts_of(series, {"type": "numeric"})


def test_bad_input_names_the_keyword(frames):
    reference, current = frames
    with pytest.raises(driftmon.ConfigError, match=r"smoothing\.alpha"):
        driftmon.compare(reference, current, ["amount"], smoothing={"method": "pseudocount", "alpha": -1})
    with pytest.raises(driftmon.ConfigError, match=r"features\[0\]\.bins"):
        driftmon.compare(reference, current, [{"column": "amount", "bins": 0}])
    with pytest.raises(driftmon.ConfigError, match="unknown setting"):
        driftmon.compare(reference, current, ["amount"], window="1h")
    with pytest.raises(driftmon.ConfigError, match="current DataFrame has no column 'amount'"):
        driftmon.compare(reference, current.drop(columns="amount"), ["amount"])
    stamped = reference.assign(seen=pd.Timestamp("2024-01-01", tz="UTC"))
    with pytest.raises(driftmon.ConfigError, match=r"features\[0\]: column 'seen' holds datetime64.*UTC"):
        driftmon.compare(stamped, stamped, ["seen"])
    with pytest.raises(driftmon.ConfigError, match=r"features\[0\]: column 'country' is declared numeric but"):
        driftmon.compare(reference, current, [{"column": "country", "type": "numeric"}])
    with pytest.raises(TypeError, match="DataFrame"):
        driftmon.compare(reference.to_dict(), current)
    with pytest.raises(driftmon.ConfigError, match="no feature 'nope'"):
        driftmon.compare(reference, current, ["amount"]).explain("nope")


def test_inline_report(frames):
    reference, current = frames
    comparison = driftmon.compare(reference, current, FEATURES[:2])
    page = comparison.to_html()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "critical" in page
    shown = comparison._repr_html_()
    assert shown.startswith("<iframe srcdoc=") and "&lt;svg" in shown
    assert "2 result(s)" in repr(comparison)
