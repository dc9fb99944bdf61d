"""Multivariate drift through the daemon (issue #27): ``multivariate:`` in a monitor's config,
the fit from one statement, windows summed from stored slices, thresholds calibrated on the
reference, the ``__multivariate__`` output, on SQLite and on PostgreSQL.

NannyML's published weekly ``reconstruction_error`` values (tests/multivariate_data.py) are the
bar: the monitor reads the same rows from a source table, one ISO week a window.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from driftmon import app as application
from driftmon.commands.outputs import as_json
from driftmon.config_file import parse_config
from driftmon.multivariate.reconstruction import reference_band
from driftmon.windows import TimeRange
from tests.multivariate_data import (
    LIBRARY_NANS_WEEKLY,
    LIBRARY_NANS_WEEKLY_SAMPLING,
    NANNYML_WEEKLY,
    ROWS_PER_WEEK,
    WEEKS,
    NumpyReconstruction,
    correlated_sample,
    nannyml_sample,
    subset,
)

START = datetime(2020, 1, 6, tzinfo=UTC)  # a Monday: ISO week 2 of 2020, the fixture's week 1
WEEK = timedelta(days=7)
REFERENCE_END = START + 10 * WEEK  # the fixture's reference: weeks < 11
FEATURES = [{"column": "f1"}, {"column": "f2"}, {"column": "f3", "type": "categorical"},
            {"column": "f4", "type": "categorical"}]


def write_events(url: str, data: dict[str, np.ndarray], columns: dict[str, sa.types.TypeEngine], step: timedelta,
                 start: datetime = START, table: str = "events") -> None:
    """``data``'s rows as an inference log, one row every ``step`` from ``start``."""
    engine = sa.create_engine(url)
    events = sa.Table(table, sa.MetaData(), sa.Column("ts", sa.DateTime(timezone=False)),
                      *(sa.Column(name, kind) for name, kind in columns.items()))
    events.metadata.drop_all(engine)
    events.metadata.create_all(engine)
    n = len(next(iter(data.values())))
    naive = start.replace(tzinfo=None)
    rows = [{"ts": naive + i * step, **{c: _plain(data[c][i]) for c in columns}} for i in range(n)]
    with engine.begin() as connection:
        connection.execute(events.insert(), rows)
    engine.dispose()


def _plain(value):
    return None if value is None else value.item() if hasattr(value, "item") else value


def nannyml_config(results: str, source: str, **monitor) -> dict:
    return {
        "database": {"url": results}, "compute": {"device": "cpu"},
        "monitors": [{
            "name": "nml",
            "source": {"kind": "events", "url": source, "table": "events", "timestamp_column": "ts"},
            "features": FEATURES, "schedule": {"cron": "0 0 * * 1"}, "window": {"size": "7d"},
            "reference": {"kind": "fixed", "start": START.isoformat(), "end": REFERENCE_END.isoformat()},
            "multivariate": {}, **monitor,
        }],
    }


NANNYML_TYPES = {"f1": sa.Double, "f2": sa.Double, "f3": sa.BigInteger, "f4": sa.String(10)}


def _source_url(backend: str, db_url: str, tmp_path) -> str:
    """The source table beside the results on PostgreSQL; its own file on SQLite."""
    return db_url if backend == "postgresql" else f"sqlite:///{tmp_path / 'source.db'}"


def _query(url: str, sql: str) -> list:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(sql)).all()
    finally:
        engine.dispose()


def _weeks(app, monitor, weeks=range(WEEKS), **options):
    return [application.run_window(app, monitor, TimeRange(START + w * WEEK, START + (w + 1) * WEEK),
                                   trigger="backfill", **options) for w in weeks]


def _open(raw: dict):
    config = parse_config(raw, {})
    return application.open_app(config), config.resolved_monitors()[0]


def test_nannyml_published_weekly_values_through_the_daemon(backend, db_url, tmp_path):
    source = _source_url(backend, db_url, tmp_path)
    data = nannyml_sample()
    write_events(source, data, NANNYML_TYPES, timedelta(minutes=10))
    app, monitor = _open(nannyml_config(db_url, source))
    try:
        outcomes = _weeks(app, monitor)
    finally:
        app.close()
    got = [o.multivariate for o in outcomes]
    assert all(o.status == "ok" for o in outcomes)
    # NannyML's published values, to 1e-8 (the bar); in fact to a few ulps.
    assert max(abs(r.reconstruction_error - e) for r, e in zip(got, NANNYML_WEEKLY, strict=True)) < 1e-13
    # Sampling errors: NannyML publishes none for weekly chunks; an independent numpy computation on the rows.
    reference = NumpyReconstruction(subset(data, data["week"] < 11), ["f1", "f2", "f3", "f4"], {"f3", "f4"})
    for week, result in enumerate(got, start=1):
        errors = reference.errors(subset(data, data["week"] == week))
        assert result.rows == ROWS_PER_WEEK
        assert result.sampling_error == pytest.approx(errors.std(ddof=1) / np.sqrt(len(errors)), rel=1e-11)
    # NannyML's thresholds: mean -+ 3 std of the reference chunks' values; its alerts: weeks 16-19.
    lower, upper = reference_band(NANNYML_WEEKLY[:10])
    assert got[0].threshold_lower == pytest.approx(lower, rel=1e-12)
    assert got[0].threshold_upper == pytest.approx(upper, rel=1e-12)
    flagged = [w for w, r in enumerate(got, start=1) if r.status == "critical"]
    assert flagged == [16, 17, 18, 19]
    # Stored per window, and printed as one __multivariate__ object per window.
    stored = _query(db_url, "SELECT reconstruction_error, status FROM multivariate_results ORDER BY window_end")
    assert [s for _, s in stored] == [r.status for r in got]
    assert [v for v, _ in stored] == [r.reconstruction_error for r in got]
    printed = [o for o in json.loads(as_json(outcomes, [monitor])) if o["column"] == "__multivariate__"]
    assert len(printed) == WEEKS and printed[15]["status"] == "critical"
    assert printed[0]["reconstruction_error"] == got[0].reconstruction_error
    assert {"threshold_lower", "threshold_upper", "gaussian_kl", "gaussian_kl_threshold", "sampling_error"} <= set(
        printed[0])


def test_missing_values_match_the_library_pipeline(tmp_path):
    """The fixture's with_nans variant (11 % of f1 and f4 missing): the values of the calculator's own
    scikit-learn steps (tests/multivariate_data.py, LIBRARY_*), sampling errors too."""
    source = f"sqlite:///{tmp_path / 'source.db'}"
    write_events(source, nannyml_sample(with_nans=True), NANNYML_TYPES, timedelta(minutes=10))
    app, monitor = _open(nannyml_config(f"sqlite:///{tmp_path / 'r.db'}", source))
    try:
        got = [o.multivariate for o in _weeks(app, monitor)]
    finally:
        app.close()
    assert np.allclose([r.reconstruction_error for r in got], LIBRARY_NANS_WEEKLY, rtol=0, atol=1e-12)
    assert np.allclose([r.sampling_error for r in got], LIBRARY_NANS_WEEKLY_SAMPLING, rtol=1e-10, atol=0)


def test_summed_slices_equal_a_recount_and_a_steady_cycle_reads_only_its_new_slice(tmp_path):
    """Daily slices summed to a week equal the week counted whole (``slice: off``) to 1e-12."""
    source = f"sqlite:///{tmp_path / 'source.db'}"
    write_events(source, nannyml_sample(), NANNYML_TYPES, timedelta(minutes=10))
    sliced_app, sliced = _open(nannyml_config(f"sqlite:///{tmp_path / 'a.db'}", source))
    whole_app, whole = _open(nannyml_config(f"sqlite:///{tmp_path / 'b.db'}", source, slice="off"))
    try:
        weeks = range(12, 16)
        by_slices = [o.multivariate for o in _weeks(sliced_app, sliced, weeks)]
        by_window = [o.multivariate for o in _weeks(whole_app, whole, weeks)]
        src = sliced_app.pipeline.source_for(sliced, source)
        # A window whose slices are all stored and sealed reads nothing for its multivariate sums.
        stage = sliced_app.pipeline.multivariate
        before = src.statements
        again = _weeks(sliced_app, sliced, [15])[0].multivariate
        assert src.statements - before == 0
        assert again.reconstruction_error == by_slices[-1].reconstruction_error
        assert stage._fits["nml"].fit is not None
    finally:
        sliced_app.close()
        whole_app.close()
    for a, b in zip(by_slices, by_window, strict=True):
        assert a.rows == b.rows
        for name in ("reconstruction_error", "sampling_error", "gaussian_kl"):
            assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-12, abs=1e-15), name


def test_the_fit_is_one_statement_and_is_reused_from_the_store(tmp_path):
    source = f"sqlite:///{tmp_path / 'source.db'}"
    write_events(source, nannyml_sample(), NANNYML_TYPES, timedelta(minutes=10))
    raw = nannyml_config(f"sqlite:///{tmp_path / 'r.db'}", source)
    app, monitor = _open(raw)
    seen = []
    src = app.pipeline.source_for(monitor, source)
    event.listen(src.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    try:
        _weeks(app, monitor, [11])
    finally:
        app.close()
    moments = [s for s in seen if "mv_x" in s]
    assert len(moments) == 1  # the reference fit's moments: one aggregate statement
    # Another process (a restart) reads the stored fit back: no moments statement, the same numbers.
    app, monitor = _open(raw)
    seen.clear()
    src = app.pipeline.source_for(monitor, source)
    event.listen(src.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    try:
        again = _weeks(app, monitor, [11, 12])
    finally:
        app.close()
    assert not [s for s in seen if "mv_x" in s]
    assert again[1].multivariate.reconstruction_error == pytest.approx(NANNYML_WEEKLY[12], abs=1e-13)


def test_a_changed_setting_refits_instead_of_reusing_the_stored_fit(tmp_path):
    source = f"sqlite:///{tmp_path / 'source.db'}"
    write_events(source, nannyml_sample(), NANNYML_TYPES, timedelta(minutes=10))
    results = f"sqlite:///{tmp_path / 'r.db'}"
    app, monitor = _open(nannyml_config(results, source))
    try:
        first = _weeks(app, monitor, [12])[0].multivariate
    finally:
        app.close()
    app, monitor = _open(nannyml_config(results, source, multivariate={"columns": ["f1", "f2", "f4"]}))
    try:
        second = _weeks(app, monitor, [12])[0].multivariate
    finally:
        app.close()
    assert second.fit_key != first.fit_key
    assert second.reconstruction_error != first.reconstruction_error
    keys = [key for key, in _query(results, "SELECT DISTINCT fit_key FROM multivariate_slices")]
    assert keys == [second.fit_key]  # the old fit's slices went with it


def test_a_correlation_flip_is_flagged_while_every_column_stays_ok(tmp_path):
    """Every marginal N(0, 1) throughout; corr(x0, x1) goes from +0.8 to -0.8 in the last two days."""
    source = f"sqlite:///{tmp_path / 'source.db'}"
    before = correlated_sample(8 * 2_000, 0.8, seed=3)
    after = correlated_sample(2 * 2_000, -0.8, seed=4)
    data = {k: np.concatenate([before[k], after[k]]) for k in ("x0", "x1", "x2", "x3")}
    write_events(source, data, {f"x{j}": sa.Double for j in range(4)}, timedelta(seconds=43.2))
    raw = {
        "database": {"url": f"sqlite:///{tmp_path / 'r.db'}"}, "compute": {"device": "cpu"},
        "monitors": [{
            "name": "flip",
            "source": {"kind": "events", "url": source, "table": "events", "timestamp_column": "ts"},
            "features": [{"column": f"x{j}"} for j in range(4)],
            "schedule": {"every": "1d"}, "window": {"size": "1d"},
            "reference": {"kind": "fixed", "start": START.isoformat(), "end": (START + timedelta(days=8)).isoformat()},
            "multivariate": {},
        }],
    }
    app, monitor = _open(raw)
    try:
        days = [application.run_window(app, monitor, TimeRange(START + d * timedelta(days=1),
                                                               START + (d + 1) * timedelta(days=1)),
                                       trigger="backfill") for d in range(10)]
    finally:
        app.close()
    for day in days:
        assert {r.status for r in day.results} == {"ok"}, [(r.column, r.kl, r.p_value) for r in day.results]
    assert [d.multivariate.status for d in days[:8]] == ["ok"] * 8
    assert [d.multivariate.status for d in days[8:]] == ["critical"] * 2
    flipped = days[8].multivariate
    assert flipped.reconstruction_error > flipped.threshold_upper
    assert flipped.gaussian_kl > 10 * flipped.gaussian_kl_threshold
    assert {c for c, _ in flipped.contributions["gaussian_kl"][:2]} == {"x0", "x1"}
    assert {c for c, *_ in flipped.contributions["residuals"][:2]} == {"x0", "x1"}


@pytest.mark.parametrize(("multivariate", "message"), [
    ({"columns": ["f1", "nope"]}, "multivariate.columns names column(s) not in features: nope"),
    ({"columns": ["f1"]}, "at least 2"),
    ({"columns": ["f1", "f1"]}, "a column is listed twice"),
    ({"n_components": 9}, "multivariate.n_components (9) exceeds its 4 columns"),
    ({"n_components": 1.5}, "n_components"),
    ({"thresholds": {"reconstruction_error": {}}}, "give lower, upper or both"),
    ({"thresholds": {"reconstruction_error": {"lower": 2, "upper": 1}}}, "lower (2.0) must be below upper (1.0)"),
    ({"thresholds": {"gaussian_kl": {"upper": -1}}}, "greater than 0"),
    ({"colums": ["f1", "f2"]}, "colums"),
])
def test_a_wrong_multivariate_block_is_refused_naming_the_key(tmp_path, multivariate, message):
    from driftmon.errors import ConfigError

    raw = nannyml_config("sqlite:///r.db", "sqlite:///s.db", multivariate=multivariate)
    with pytest.raises(ConfigError) as raised:
        parse_config(raw, {})
    assert message in str(raised.value)
    assert "multivariate" in str(raised.value)


def test_check_config_says_what_is_compared_and_warns_when_thresholds_cannot_be_calibrated(tmp_path):
    from driftmon.commands.setup_checks import offline_checks

    good = offline_checks(parse_config(nannyml_config("sqlite:///r.db", "sqlite:///s.db"), {}))
    assert any("multivariate drift over 4 columns (f1, f2, f3, f4; count-encoded: f3, f4)" in n and
               "10 reference chunk(s)" in n for n in good.notes)
    assert not good.warnings
    short = nannyml_config("sqlite:///r.db", "sqlite:///s.db", window={"size": "70d"}, schedule={"every": "70d"})
    report = offline_checks(parse_config(short, {}))
    assert any("monitors[0].multivariate" in w and "insufficient_data" in w for w in report.warnings)
    explicit = nannyml_config("sqlite:///r.db", "sqlite:///s.db", window={"size": "70d"}, schedule={"every": "70d"},
                              multivariate={"thresholds": {"reconstruction_error": {"upper": 1.0},
                                                           "gaussian_kl": {"upper": 0.1}}})
    assert not offline_checks(parse_config(explicit, {})).warnings


def test_a_histograms_monitor_cannot_have_multivariate_drift():
    from driftmon.errors import ConfigError

    raw = nannyml_config("sqlite:///r.db", "sqlite:///s.db")
    raw["monitors"][0]["source"] = {"kind": "histograms", "url": "sqlite:///s.db", "table": "h",
                                    "timestamp_column": "ts"}
    with pytest.raises(ConfigError, match="multivariate drift needs an events source"):
        parse_config(raw, {})


def test_many_categorical_levels_fit_in_two_statements_with_the_same_values(tmp_path):
    """A categorical column whose profile keeps only its top level (the rest in __other__) has levels the
    profile does not know: level counts first, then the encoded rows' moments (encoded_fit.py)."""
    source = f"sqlite:///{tmp_path / 'source.db'}"
    write_events(source, nannyml_sample(), NANNYML_TYPES, timedelta(minutes=10))
    features = [*FEATURES[:3], {"column": "f4", "type": "categorical", "top_k": 1}]
    app, monitor = _open(nannyml_config(f"sqlite:///{tmp_path / 'r.db'}", source, features=features))
    seen = []
    src = app.pipeline.source_for(monitor, source)
    event.listen(src.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    try:
        got = [o.multivariate for o in _weeks(app, monitor)]
    finally:
        app.close()
    assert len([s for s in seen if "mv_encoded" in s]) == 1 and not [s for s in seen if "GROUP BY" in s and
                                                                       "mv_x" in s and "mv_encoded" not in s]
    assert max(abs(r.reconstruction_error - e) for r, e in zip(got, NANNYML_WEEKLY, strict=True)) < 1e-13
    assert [w for w, r in enumerate(got, start=1) if r.status == "critical"] == [16, 17, 18, 19]


def test_residual_shares_from_the_moments_equal_the_rows_residuals(tmp_path):
    """explain's per-column residuals come from Σzzᵀ (the projector off the kept components), not from
    a residual per row in SQL: the two agree."""
    from driftmon.multivariate.reconstruction import WindowSums, row_errors_subquery, slice_sums_select
    from driftmon.multivariate.stage import residual_shares

    source = f"sqlite:///{tmp_path / 'source.db'}"
    write_events(source, nannyml_sample(with_nans=True), NANNYML_TYPES, timedelta(minutes=10))
    app, monitor = _open(nannyml_config(f"sqlite:///{tmp_path / 'r.db'}", source))
    try:
        _weeks(app, monitor, [16])
        fit = app.pipeline.multivariate._fits["nml"].fit
        src = app.pipeline.source_for(monitor, source)
        errors = row_errors_subquery(fit, src.table, residuals=True, dialect="sqlite")
        with src.engine.connect() as connection:
            row = connection.execute(slice_sums_select(errors, d=4)).mappings().one()
    finally:
        app.close()
    sums = WindowSums.from_row(row, 4)
    assert np.allclose(residual_shares(fit, sums), sums.rr / sums.n, rtol=1e-10, atol=1e-14)


def test_a_steady_cycle_is_one_source_statement_with_the_multivariate_sums_inside(backend, db_url, tmp_path):
    """The count statement carries the multivariate sums of the same slices (companion.py): a window
    after the first reads the source once, and its numbers are NannyML's still."""
    source = _source_url(backend, db_url, tmp_path)
    write_events(source, nannyml_sample(), NANNYML_TYPES, timedelta(minutes=10))
    app, monitor = _open(nannyml_config(db_url, source))
    seen = []
    try:
        _weeks(app, monitor, [10])  # the reference profile, the fit, the chunks: the first run
        src = app.pipeline.source_for(monitor, source)
        event.listen(src.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
        before = src.statements
        steady = _weeks(app, monitor, [11, 12, 13])
        statements = src.statements - before
    finally:
        app.close()
    assert statements == 3  # one a window
    reads = [s for s in seen if "mv_sums" in s]
    assert len(reads) == 3 and all("GROUP BY" in s for s in reads)  # the sums inside the count statement
    for week, outcome in zip([11, 12, 13], steady, strict=True):
        assert outcome.multivariate.reconstruction_error == pytest.approx(NANNYML_WEEKLY[week], abs=1e-13)
        assert outcome.multivariate.rows == ROWS_PER_WEEK
