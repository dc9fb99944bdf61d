"""driftmon.multivariate's core: NannyML's reconstruction error computed inside the database.

The acceptance of issue #27's groundwork: NannyML's published values for its
own test case (tests/drift/test_multiv_pca.py in NannyML/nannyml) reproduced to
1e-8 from one aggregate statement for the fit and one generated statement per
chunking, on SQLite, DuckDB and PostgreSQL; the same numbers as an independent
numpy implementation of NannyML's calculator, with missing values; summed
slices equal to a recount; and a correlation-only drift that every marginal misses.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import sqlalchemy as sa
import torch
from scipy import stats
from sqlalchemy import event

from driftmon.multivariate import (
    Column,
    WindowSums,
    ensure_sqlite_sqrt,
    fit_from_moments,
    gaussian_kl,
    outside,
    reference_band,
    reference_moments_select,
    row_errors_subquery,
    slice_sums_select,
)
from driftmon.multivariate.fit import choose_components
from driftmon.multivariate.gaussian import kl_between
from tests.multivariate_data import (
    LIBRARY_MONTHLY_SAMPLING,
    LIBRARY_NANS_WEEKLY,
    LIBRARY_NANS_WEEKLY_SAMPLING,
    NANNYML_CHUNK_NUMBER_5,
    NANNYML_DEFAULT_10,
    NANNYML_MONTHLY,
    NANNYML_MONTHLY_SAMPLING,
    NANNYML_SIZE_2500_SAMPLING,
    NANNYML_SIZE_5000,
    NANNYML_WEEKLY,
    NumpyReconstruction,
    correlated_sample,
    nannyml_sample,
    subset,
    write_table,
)

COLUMNS = [Column("f1"), Column("f2"), Column("f3", categorical=True), Column("f4", categorical=True)]
D = len(COLUMNS)


def _fit(engine, table, columns=COLUMNS, where=None, **kwargs):
    query = reference_moments_select(table, columns, where=where, dialect=engine.dialect.name, **kwargs)
    with engine.connect() as connection:
        rows = connection.execute(query.statement).mappings().all()
    return fit_from_moments(query.parse(rows))


def _sums(engine, table, fit, key: str, where=None, basis="auto", residuals=False) -> dict[object, WindowSums]:
    options = {"where": where, "basis": basis, "dialect": engine.dialect.name, "residuals": residuals}
    errors = row_errors_subquery(fit, table, carry={key: table.c[key]}, **options)
    with engine.connect() as connection:
        rows = connection.execute(slice_sums_select(errors, [key], d=len(fit.columns))).mappings().all()
    return {row[key]: WindowSums.from_row(row, len(fit.columns)) for row in sorted(rows, key=lambda r: r[key])}


@pytest.fixture(scope="module")
def sample() -> dict[str, np.ndarray]:
    return nannyml_sample()


@pytest.fixture
def sqlite_engine() -> Iterator[sa.Engine]:
    engine = sa.create_engine("sqlite://")
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "duckdb", "postgresql"])
def source_engine(request, tmp_path) -> Iterator[sa.Engine]:
    """A fresh source database per engine; PostgreSQL on the test server when one is configured."""
    if request.param == "sqlite":
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'source.db'}")
    elif request.param == "duckdb":
        pytest.importorskip("duckdb_engine")
        engine = sa.create_engine(f"duckdb:///{tmp_path / 'source.duckdb'}")
    else:
        server = request.getfixturevalue("postgres_server")
        url = server.create()
        engine = sa.create_engine(url)
        request.addfinalizer(lambda: server.drop(url))
    yield engine
    engine.dispose()


def test_nannyml_published_values_inside_the_database(source_engine, sample):
    """NannyML's published reconstruction errors, weekly and for other chunkings, to 1e-8."""
    table = write_table(source_engine, f"src_{uuid.uuid4().hex[:8]}", sample)
    statements = []
    def statements_listener(*args) -> None:
        statements.append(args[2])

    event.listen(source_engine, "before_cursor_execute", statements_listener)
    fit = _fit(source_engine, table, where=table.c.week < 11)
    assert fit.n_components == 3
    _sums(source_engine, table, fit, "week")
    assert len([s for s in statements if table.name in s]) == 2  # the fit, then all 20 weeks
    event.remove(source_engine, "before_cursor_execute", statements_listener)
    for key, expected in [
        ("week", NANNYML_WEEKLY),
        ("month", NANNYML_MONTHLY),
        ("chunk5", NANNYML_CHUNK_NUMBER_5),
        ("chunk10", NANNYML_DEFAULT_10),
    ]:
        got = [s.mean_error for s in _sums(source_engine, table, fit, key).values()]
        assert len(got) == len(expected)
        difference = np.max(np.abs(np.array(got) - np.array(expected)))
        print(f"{source_engine.dialect.name} {key}: max |driftmon - NannyML| = {difference:.3g}")
        assert difference < 1e-8, key
    # chunk_size=5000 keeps a last chunk of 160 rows; published to 5 decimals, compared as NannyML's test does.
    sized = [s.mean_error for s in _sums(source_engine, table, fit, "size5000").values()]
    assert [round(v, 5) for v in sized] == [round(v, 5) for v in NANNYML_SIZE_5000]
    weekly = [s.mean_error for s in _sums(source_engine, table, fit, "week").values()]
    band = reference_band(weekly[:10])  # NannyML's default: the reference chunks' mean -+ 3 std
    reference = np.array(NANNYML_WEEKLY[:10])
    assert np.allclose(band, (reference.mean() - 3 * reference.std(), reference.mean() + 3 * reference.std()))
    assert [outside(v, band) for v in weekly] == [False] * 15 + [True] * 4 + [False]
    monthly = [s.sampling_error for s in _sums(source_engine, table, fit, "month").values()]
    assert np.max(np.abs(np.array(monthly) - NANNYML_MONTHLY_SAMPLING)) <= 5e-5  # published to 4 decimals
    assert np.max(np.abs(np.array(monthly) - LIBRARY_MONTHLY_SAMPLING)) < 1e-12
    sized = _sums(source_engine, table, fit, "size2500", where=table.c.rid < 7500)
    assert np.max(np.abs(np.array([s.sampling_error for s in sized.values()]) - NANNYML_SIZE_2500_SAMPLING)) <= 5e-5


def test_non_finite_values_count_as_missing(source_engine, sample):
    """NaN and +-inf are missing, as in driftmon's univariate counts: the same numbers as NULLs there."""
    data = subset(sample, sample["week"] < 13)
    holes = np.zeros(len(data["rid"]), dtype=bool)
    holes[::5] = True
    nulls = dict(data, f1=np.where(holes, None, data["f1"]))
    odd = dict(data, f1=data["f1"].copy())
    odd["f1"][holes] = np.resize([math.nan, math.inf, -math.inf], int(holes.sum()))
    results = []
    for name, values in [("nulls", nulls), ("odd", odd)]:
        table = write_table(source_engine, f"{name}_{uuid.uuid4().hex[:8]}", values)
        fit = _fit(source_engine, table, where=table.c.week < 11)
        results.append([s.mean_error for s in _sums(source_engine, table, fit, "week").values()])
    assert np.max(np.abs(np.array(results[0]) - results[1])) < 1e-13


def test_same_numbers_as_numpy_with_missing_values(sqlite_engine):
    """Missing continuous and categorical values: the fit and every weekly error as NannyML's steps in numpy."""
    data = nannyml_sample(with_nans=True)
    table = write_table(sqlite_engine, "src", data)
    fit = _fit(sqlite_engine, table, where=table.c.week < 11)
    reference = NumpyReconstruction(subset(data, data["week"] < 11), ["f1", "f2", "f3", "f4"], {"f3", "f4"})
    assert fit.n_components == reference.k
    np.testing.assert_allclose(fit.means.numpy(), reference.mean, rtol=0, atol=1e-13)
    np.testing.assert_allclose(fit.scales.numpy(), reference.scale, rtol=1e-12)
    np.testing.assert_allclose(fit.correlation.numpy(), reference.correlation, rtol=0, atol=1e-12)
    kept = fit.components.numpy()
    np.testing.assert_allclose(kept @ kept.T, reference.v @ reference.v.T, rtol=0, atol=1e-10)
    sums = _sums(sqlite_engine, table, fit, "week")
    # The calculator's own libraries on the fixture's NaN variant (values computed off-project, see multivariate_data).
    assert np.max(np.abs([s.mean_error for s in sums.values()] - np.array(LIBRARY_NANS_WEEKLY))) < 1e-12
    assert np.max(np.abs([s.sampling_error for s in sums.values()] - np.array(LIBRARY_NANS_WEEKLY_SAMPLING))) < 1e-12
    for week, window in sums.items():
        errors = reference.errors(subset(data, data["week"] == week))
        assert window.n == len(errors)
        assert abs(window.mean_error - errors.mean()) < 1e-12
        assert abs(window.sampling_error - errors.std(ddof=1) / math.sqrt(len(errors))) < 1e-12


def test_shifted_moments_give_the_same_fit(sqlite_engine, sample):
    """Per-column shifts (against raw sums' cancellation) change nothing downstream."""
    table = write_table(sqlite_engine, "src", sample)
    plain = _fit(sqlite_engine, table, where=table.c.week < 11)
    shifted = _fit(sqlite_engine, table, where=table.c.week < 11, shifts={"f1": 0.3, "f2": 0.5})
    np.testing.assert_allclose(shifted.means.numpy(), plain.means.numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(shifted.correlation.numpy(), plain.correlation.numpy(), rtol=0, atol=1e-13)


def test_both_bases_and_summed_slices_agree(sqlite_engine, sample):
    """The kept and complement bases give the same errors; daily slices summed to weeks equal a weekly recount."""
    table = write_table(sqlite_engine, "src", sample)
    fit = _fit(sqlite_engine, table, where=table.c.week < 11)
    kept = _sums(sqlite_engine, table, fit, "week", basis="kept", residuals=True)
    complement = _sums(sqlite_engine, table, fit, "week", basis="complement", residuals=True)
    days = _sums(sqlite_engine, table, fit, "day")
    for week, window in complement.items():
        assert abs(window.mean_error - kept[week].mean_error) < 1e-13
        np.testing.assert_allclose(window.rr, kept[week].rr, rtol=1e-12)
        assert abs(window.rr.sum() - window.s2) < 1e-10 * window.s2  # the residuals square-sum to err^2
        merged = sum((days[day] for day in range((week - 1) * 7, week * 7)), start=WindowSums(0, 0, 0, 0, 0))
        assert merged.n == window.n
        assert abs(merged.s1 - window.s1) <= 1e-12 * window.s1
        assert abs(merged.s2 - window.s2) <= 1e-12 * window.s2
        np.testing.assert_allclose(merged.zz, window.zz, rtol=1e-12, atol=1e-9)


def test_derived_tables_stay_fenced(sqlite_engine, sample):
    """SQLite keeps every level a co-routine: flattened, each z and projection would be re-evaluated
    wherever it is referenced (24 columns, 20,000 rows: 65 s flattened, 0.6 s fenced)."""
    table = write_table(sqlite_engine, "src", subset(sample, sample["week"] < 3))
    query = reference_moments_select(table, COLUMNS, dialect="sqlite")

    def plan(statement) -> str:
        compiled = statement.compile(sqlite_engine)
        parameters = tuple(compiled.params[name] for name in compiled.positiontup)
        with sqlite_engine.connect() as connection:
            return str(connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", parameters).all())

    assert "CO-ROUTINE mv_x" in plan(query.statement)
    fit = _fit(sqlite_engine, table)
    errors = row_errors_subquery(fit, table, carry={"week": table.c.week}, basis="kept", dialect="sqlite")
    shown = plan(slice_sums_select(errors, ["week"]))
    assert all(f"CO-ROUTINE {name}" in shown for name in ("mv_z", "mv_p", "mv_r", "mv_err"))


def test_sqlite_without_math_functions(tmp_path, sample):
    """A SQLite build without sqrt gets Python's (both correctly rounded): the same numbers."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'source.db'}")
    table = write_table(engine, "src", subset(sample, sample["week"] < 13))
    fit = _fit(engine, table, where=table.c.week < 11)
    builtin = _sums(engine, table, fit, "week")
    assert ensure_sqlite_sqrt(engine) is False  # this build has one
    assert ensure_sqlite_sqrt(engine, force=True) is True
    python = _sums(engine, table, fit, "week")
    assert all(python[w].s1 == builtin[w].s1 for w in builtin)
    assert ensure_sqlite_sqrt(sa.create_engine("postgresql+psycopg://nobody@localhost/none")) is False  # no connect
    engine.dispose()


def test_identifiers_are_quoted(sqlite_engine):
    """Column names that are keywords or carry quotes and spaces stay identifiers."""
    rng = np.random.default_rng(5)
    data = {
        "select": rng.standard_normal(300),
        'a "b" c': rng.standard_normal(300).astype(object),
        "it's": rng.choice(["x", "y", "z"], 300, p=[0.5, 0.3, 0.2]).astype(object),
        "k": np.arange(300) // 100,
    }
    data['a "b" c'][::7] = None
    table = write_table(sqlite_engine, "odd table", data)
    columns = [Column("select"), Column('a "b" c'), Column("it's", categorical=True)]
    fit = _fit(sqlite_engine, table, columns)
    reference = NumpyReconstruction(data, [c.name for c in columns], {"it's"})
    sums = _sums(sqlite_engine, table, fit, "k")
    assert abs(sum(sums.values(), start=WindowSums(0, 0, 0, 0, 0)).s1 - reference.errors(data).sum()) < 1e-10


def test_every_component_kept_leaves_no_error(sqlite_engine, sample):
    """n_components=d reconstructs every row exactly (the empty complement); an int is taken as is."""
    table = write_table(sqlite_engine, "src", subset(sample, sample["week"] < 12))
    query = reference_moments_select(table, COLUMNS, where=table.c.week < 11)
    with sqlite_engine.connect() as connection:
        moments = query.parse(connection.execute(query.statement).mappings().all())
    assert fit_from_moments(moments, n_components=1).n_components == 1
    full = fit_from_moments(moments, n_components=D)
    for basis in ("kept", "complement"):
        assert all(s.s1 < 1e-9 for s in _sums(sqlite_engine, table, full, "week", basis=basis).values())


def test_constant_columns_scale_by_one(sqlite_engine):
    """A constant reference column (continuous, or a categorical with one level) is scaled by 1,
    as StandardScaler does; a later change in it is all residual. Its Gaussian KL is undefined: an error."""
    rng = np.random.default_rng(3)
    rows = 2000
    data = {
        "x0": rng.standard_normal(rows), "x1": rng.standard_normal(rows), "c": np.full(rows, 5.0),
        "g": np.array(["a"] * rows, dtype=object), "k": np.arange(rows) // 1000,
    }  # fmt: skip
    data["c"][1000:1500] = 6.0
    data["g"][1500:] = "b"
    table = write_table(sqlite_engine, "src", data)
    columns = [Column("x0"), Column("x1"), Column("c"), Column("g", categorical=True)]
    fit = _fit(sqlite_engine, table, columns, where=table.c.k == 0)
    assert fit.scales[2] == 1 and fit.scales[3] == 1
    reference = NumpyReconstruction(subset(data, data["k"] == 0), ["x0", "x1", "c", "g"], {"g"})
    for key, window in _sums(sqlite_engine, table, fit, "k").items():
        assert abs(window.mean_error - reference.errors(subset(data, data["k"] == key)).mean()) < 1e-12
    with pytest.raises(ValueError, match="singular"):
        gaussian_kl(fit, window.n, window.zsum, window.zz)


def test_n_components_rule_is_sklearns():
    """A fraction keeps the fewest components whose cumulative share is STRICTLY above it."""
    ratios = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    assert choose_components(ratios, 0.65) == 2
    assert choose_components(ratios, 0.75) == 3  # exactly 0.75 is not above 0.75
    assert choose_components(ratios, 0.4) == 1
    assert choose_components(ratios, 2) == 2
    with pytest.raises(ValueError):
        choose_components(ratios, 1.5)


def _numpy_kl(mean0, cov0, mean1, cov1) -> float:
    """KL(N0 || N1) by the textbook formula."""
    inverse = np.linalg.inv(cov1)
    delta = mean1 - mean0
    logdet = np.linalg.slogdet(cov1)[1] - np.linalg.slogdet(cov0)[1]
    return 0.5 * (np.trace(inverse @ cov0) - len(mean0) + delta @ inverse @ delta + logdet)


def test_gaussian_kl_closed_form_and_shares():
    """Both directions equal the textbook formula; the shares are >= 0 and sum to the KL."""
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    cov0, cov1 = a @ a.T + 0.5 * np.eye(5), b @ b.T + 0.5 * np.eye(5)
    mean0, mean1 = rng.standard_normal(5), rng.standard_normal(5)
    t = [torch.from_numpy(x) for x in (mean0, cov0, mean1, cov1)]
    forward, shares = kl_between(*t, direction="reference_current")
    assert abs(forward - _numpy_kl(mean0, cov0, mean1, cov1)) < 1e-10 * forward
    assert bool((shares >= 0).all()) and abs(float(shares.sum()) - forward) < 1e-12 * forward
    backward, shares = kl_between(*t, direction="current_reference")
    assert abs(backward - _numpy_kl(mean1, cov1, mean0, cov0)) < 1e-10 * backward
    assert bool((shares >= 0).all())
    same, _ = kl_between(t[0], t[1], t[0], t[1])
    assert abs(same) < 1e-12


def test_correlation_flip_is_caught_while_marginals_are_not(sqlite_engine):
    """Every marginal unchanged, one correlation's sign flipped: error and KL leave their reference bands."""
    reference = correlated_sample(8000, rho=0.8, seed=1)
    current = correlated_sample(2000, rho=-0.8, seed=2)
    columns = [Column(f"x{j}") for j in range(4)]
    ref_table = write_table(sqlite_engine, "ref", reference)
    cur_table = write_table(sqlite_engine, "cur", current)
    fit = _fit(sqlite_engine, ref_table, columns)
    for j in range(4):  # the univariate view: nothing moved
        p_value = stats.ks_2samp(reference[f"x{j}"].astype(float), current[f"x{j}"].astype(float)).pvalue
        assert p_value > 0.05, f"x{j}"
    ref_chunks = _sums(sqlite_engine, ref_table, fit, "chunk", residuals=True)
    cur_chunks = _sums(sqlite_engine, cur_table, fit, "chunk", residuals=True)
    # NannyML's default threshold: mean +- 3 std of the reference chunks' values.
    band = reference_band([s.mean_error for s in ref_chunks.values()])
    assert all(outside(s.mean_error, band) and s.mean_error > band[1] + 0.1 for s in cur_chunks.values())
    # explain: the columns whose residuals grew are the flipped pair.
    reference_shares = sum(ref_chunks.values(), start=WindowSums(0, 0, 0, 0, 0, np.zeros(4))).residual_shares()
    for window in cur_chunks.values():
        growth = window.residual_shares() - reference_shares
        assert set(np.argsort(growth)[-2:]) == {0, 1}
    ref_kl = np.array([gaussian_kl(fit, s.n, s.zsum, s.zz).value for s in ref_chunks.values()])
    kl_upper = ref_kl.mean() + 3 * ref_kl.std()
    for window in cur_chunks.values():
        kl = gaussian_kl(fit, window.n, window.zsum, window.zz)
        assert kl.value > 10 * kl_upper
        assert {name for name, _ in kl.largest(2)} == {"x0", "x1"}
