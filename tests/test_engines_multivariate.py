"""Multivariate drift (issue #27) on every other engine: the same rows give SQLite's numbers.

A small monitor with ``multivariate: {}`` runs through the daemon (``run_window``)
against each engine of tests/engines.py (MariaDB, DuckDB, ClickHouse/chDB, Spark),
and PostgreSQL where DRIFTMON_TEST_DATABASE_URL names a server, its results store
SQLite, and SQLite's own source is the yardstick: the fit (means, scales, count
encodings with levels of the column's own type, components kept) and, per window,
the rows, the reconstruction error, its sampling error, the Gaussian KL, both
thresholds and the status must equal SQLite's to 1e-12 relative. Both ways of
fitting: one statement grouped by the categorical levels, and two (level counts,
then the encoded rows' moments) where the profile keeps only a column's top levels.

The rows hold what the SQL must get right on each engine: NULLs in every column,
NaN and ±inf in a double column (NULL on MariaDB, which stores neither: driftmon
counts both as missing, so SQLite's numbers stand), a continuous BIGINT column,
an integer categorical column and a text one whose levels differ only in case or
a trailing space, or carry quotes, a backslash, a percent sign, non-ASCII text
and a 4-byte character; a level the reference never saw; a ``where`` filter; rows
on the slices' edges. Windows of a day on a 6-hour schedule: each is summed from
stored slices, the second reuses half of the first's.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from driftmon import app as application
from driftmon.config_file import parse_config
from driftmon.multivariate.result import MultivariateResult
from driftmon.store.database import create_db_engine
from driftmon.windows import TimeRange
from tests.conftest import POSTGRES_URL_ENV, PostgresServer
from tests.engines import NAMES, engine_factory  # noqa: F401  fixture
from tests.sourcedata import create_and_fill, events_table

START = datetime(2024, 3, 4, tzinfo=UTC)
DAY, HOUR = timedelta(days=1), timedelta(hours=1)
REFERENCE = TimeRange(START, START + 6 * DAY)  # six window-sized chunks calibrate the thresholds
WINDOWS = [
    TimeRange(START + 6 * DAY, START + 7 * DAY),  # like the reference
    TimeRange(START + 6 * DAY + 12 * HOUR, START + 7 * DAY + 12 * HOUR),  # half of it the first's slices
    TimeRange(START + 8 * DAY, START + 9 * DAY),  # drifted
]
ROWS_PER_DAY = 160
# Text levels a collation, an escaping or an encoding could merge or mangle.
COUNTRIES = ["DE", "de", "DE ", "O'Brien", 'say "hi"', "back\\slash", "50%", "é", "日本", "🙂", ""]
UNSEEN = "new'one"  # in the drifted days only: encoded as frequency 0
FEATURES = [
    {"column": "amount"},
    {"column": "score"},
    {"column": "clicks"},
    {"column": "level", "type": "categorical"},
    {"column": "country", "type": "categorical"},
]
# The fit's two ways (driftmon/multivariate/encoded_fit.py): one statement grouped by the categorical
# columns' levels, all known from the reference profile; or, where the profile keeps only the top
# levels of a column (the rest in __other__), the level counts and then the encoded rows' moments.
FITS = {"grouped": FEATURES, "two-statements": [*FEATURES[:4], {**FEATURES[4], "top_k": 4}]}
TOLERANCE = 1e-12
VALUES = ("rows", "reconstruction_error", "sampling_error", "threshold_lower", "threshold_upper", "gaussian_kl",
          "gaussian_kl_threshold")


def rows() -> list[dict]:
    """Nine days of the inference log; amount and score correlated until day 7, then not."""
    rng = np.random.default_rng(27)
    out = []
    for day in range(9):
        drifted = day >= 7
        for i in range(ROWS_PER_DAY):
            n = day * ROWS_PER_DAY + i
            seconds = 0.0 if i < 2 else 6 * 3600.0 if i < 4 else float(rng.uniform(0, 86400))  # slice edges
            base = float(rng.normal())
            amount = 100 + 20 * base + (15 if drifted else 0)
            score = float(rng.normal()) if drifted else 0.8 * base + 0.6 * float(rng.normal())
            if n % 41 == 0:
                score = math.nan
            elif n % 43 == 0:
                score = math.inf
            elif n % 47 == 0:
                score = -math.inf
            level = [9, 10, 9, 10, 1, 2, 3, 9, 10, None][n % 10] if not drifted else int(rng.choice([1, 1, 2, 9]))
            country = str(rng.choice(COUNTRIES)) if n % 13 else None
            if drifted and n % 5 == 0:
                country = UNSEEN
            out.append({
                "ts": START + day * DAY + timedelta(seconds=seconds),
                "model_version": "v3",
                "amount": None if n % 29 == 0 else amount,
                "score": score,
                "clicks": None if n % 31 == 0 else int(rng.poisson(3 + max(amount, 0) / 50)),
                "level": level,
                "country": country,
            })
            if i % 16 == 0:  # rows the monitor's filter leaves out
                out.append({**out[-1], "model_version": "V3", "amount": 1e6, "clicks": 10**6, "level": 7,
                            "country": "filtered"})
    return out


def table() -> sa.Table:
    return events_table(clicks=sa.BigInteger, level=sa.BigInteger)


def config(results: str, source: str, features: list[dict]) -> dict:
    return {
        "database": {"url": results}, "compute": {"device": "cpu"},
        "monitors": [{
            "name": "mv",
            "source": {"kind": "events", "url": source, "table": "inference_log", "timestamp_column": "ts",
                       "where": {"model_version": "v3"}},
            "features": features, "schedule": {"every": "6h"}, "window": {"size": "1d"},
            "reference": {"kind": "fixed", "start": REFERENCE.start.isoformat(), "end": REFERENCE.end.isoformat()},
            "multivariate": {},
        }],
    }


def run_monitor(source: sa.Engine, results: str, fit: str) -> tuple[list[MultivariateResult], object, bool]:
    """The windows' multivariate results, the fit and whether its moments were the encoded rows'
    (the two-statement fit), through the daemon, reading ``source``."""
    url = source.url.render_as_string(hide_password=False)
    parsed = parse_config(config(results, url, FITS[fit]), {})
    app, monitor = application.open_app(parsed), parsed.resolved_monitors()[0]
    # The engine under test is the source's engine (one chDB server per process; Spark's literals).
    app.engines._engines[url] = source
    seen: list[str] = []

    def record(connection, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(source, "before_cursor_execute", record)
    try:
        outcomes = [application.run_window(app, monitor, window, trigger="backfill") for window in WINDOWS]
        fitted = app.pipeline.multivariate._fits["mv"].fit
    finally:
        event.remove(source, "before_cursor_execute", record)
        app.engines._engines.pop(url, None)
        app.close()
    for outcome in outcomes:
        assert outcome.status == "ok", outcome.error
    moments = [s for s in seen if "q0_0" in s]  # the fit's moments statement (its first label)
    assert len(moments) == 1, moments
    return [o.multivariate for o in outcomes], fitted, "mv_encoded" in moments[0]


@pytest.fixture(scope="module")
def data() -> list[dict]:
    return rows()


@pytest.fixture(params=list(FITS))
def fit(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def yardstick(data, tmp_path_factory) -> dict:
    """SQLite's fits and results, each way: the yardstick."""
    folder = tmp_path_factory.mktemp("sqlite")
    engine = create_db_engine(f"sqlite:///{folder / 'source.db'}")
    try:
        create_and_fill(engine, table(), data)
        return {fit: run_monitor(engine, f"sqlite:///{folder / f'{fit}.db'}", fit) for fit in FITS}
    finally:
        engine.dispose()


@pytest.fixture
def expected(yardstick, fit):
    return yardstick[fit]


@pytest.fixture(scope="module", params=["postgresql", *NAMES])
def filled(request, data, engine_factory) -> Iterator[tuple[str, sa.Engine]]:  # noqa: F811
    """The engine under test holding the rows, filled once for both ways of fitting."""
    name = request.param
    opened = _postgres() if name == "postgresql" else engine_factory.open(name)
    engine = next(opened)
    try:
        started = time.perf_counter()
        create_and_fill(engine, table(), data)
        print(f"{name}: {len(data)} rows written in {time.perf_counter() - started:.2f} s")
        yield name, engine
    finally:
        next(opened, None)


def _postgres() -> Iterator[sa.Engine]:
    """A throw-away database on the PostgreSQL server of the results-store tests, when there is one."""
    if not os.environ.get(POSTGRES_URL_ENV):
        pytest.skip(f"{POSTGRES_URL_ENV} is not set")
    server = PostgresServer(os.environ[POSTGRES_URL_ENV])
    url = server.create()
    engine = create_db_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()
        server.drop(url)
        server.dispose()


def test_sqlites_numbers_are_worth_comparing(expected, fit):
    """The yardstick: calibrated thresholds, windows in and out of the band, every category encoded,
    the fit in one statement or two."""
    results, fitted, encoded = expected
    assert encoded == (fit == "two-statements")
    assert [r.status for r in results] == ["warning", "critical", "critical"]  # only the KL flags the first
    assert results[0].threshold_lower < results[0].reconstruction_error < results[0].threshold_upper
    assert all(r.rows > 100 for r in results) and results[0].threshold_lower is not None
    assert all(r.gaussian_kl is not None and r.gaussian_kl_threshold is not None for r in results)
    assert results[2].gaussian_kl > results[2].gaussian_kl_threshold
    assert set(fitted.encodings["country"].levels) == set(COUNTRIES)
    assert fitted.encodings["level"].levels == (1, 2, 3, 9, 10) and fitted.encodings["level"].mode == 9
    assert 0 < fitted.n_components < len(FEATURES)


def test_every_engine_gives_sqlites_multivariate_numbers(filled, fit, expected, tmp_path):
    name, engine = filled
    started = time.perf_counter()
    found, fitted, encoded = run_monitor(engine, f"sqlite:///{tmp_path / 'results.db'}", fit)
    print(f"{name} ({fit}): {len(WINDOWS)} windows in {time.perf_counter() - started:.2f} s")
    theirs, their_fit, their_encoded = expected
    assert encoded == their_encoded
    # The fit: the same columns, encodings (levels of their own type), scaler and subspace.
    assert fitted.columns == their_fit.columns and fitted.n_components == their_fit.n_components
    for column, encoding in their_fit.encodings.items():
        mine = fitted.encodings[column]
        assert (mine.levels, mine.mode) == (encoding.levels, encoding.mode), column
        np.testing.assert_allclose(mine.frequencies, encoding.frequencies, rtol=TOLERANCE, atol=0, err_msg=column)
    for name in ("means", "scales", "eigenvalues"):
        np.testing.assert_allclose(getattr(fitted, name).numpy(), getattr(their_fit, name).numpy(), rtol=TOLERANCE,
                                   atol=1e-15, err_msg=name)
    # Each window: every number to 1e-12 relative, the same status and the same columns named.
    for window, mine, yardstick in zip(WINDOWS, found, theirs, strict=True):
        assert mine.status == yardstick.status, window
        for name in VALUES:
            value, expected_value = getattr(mine, name), getattr(yardstick, name)
            assert (value is None) == (expected_value is None), (window, name)
            if value is not None:
                assert value == pytest.approx(expected_value, rel=TOLERANCE, abs=1e-300), (window, name)
        for key, named in yardstick.contributions.items():
            assert [c[0] for c in mine.contributions[key]] == [c[0] for c in named], (window, key)
