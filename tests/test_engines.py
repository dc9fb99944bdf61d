"""The source tests of SQLite and PostgreSQL, run on every other engine (issue 17).

The bodies are tests/test_sources.py's and tests/test_slices.py's own, imported
here: the fixtures of tests/engines.py give them a source database on each
engine (``source_engine``) while the results store stays SQLite.
"""

from __future__ import annotations

import math

import pytest
import sqlalchemy as sa

from driftmon.errors import SourceError
from driftmon.sources import open_source
from tests.engines import (  # noqa: F401  fixtures
    backend,
    engine_factory,
    engine_name,
    results_engine,
    results_store,
    source_engine,
)
from tests.test_sources import (  # noqa: F401  collected here, on every engine
    REFERENCE,
    log,
    monitor,
    test_a_categorical_column_with_more_values_than_top_k_is_logged_once,
    test_a_text_column_declared_numeric_fails_naming_monitor_table_column_and_type,
    test_categorical_top_k_other_and_missing,
    test_category_ties_broken_by_value,
    test_empty_window_and_one_distinct_value,
    test_histograms_bad_counts_fail_only_their_column,
    test_histograms_sum_windows_with_label_union,
    test_hostile_identifiers_are_quoted,
    test_missing_table_and_column_are_named,
    test_numeric_timestamps_are_time_since_the_epoch,
    test_profile_computed_once_per_range,
    test_quantile_bins_match_numpy,
    test_stored_profile_round_trips,
    test_timestamp_unit_on_a_datetime_column_is_an_error,
    test_uniform_bins,
    test_values_exactly_on_edges_go_right,
    test_window_is_half_open_and_filtered,
    test_window_statement_applies_bind_processors_and_binds_each_window,
    test_windows_reuse_the_compiled_count_statement,
)

pytestmark = pytest.mark.usefixtures("results_store")

# Where an engine's own words differ from the SQLite/PostgreSQL body, its own test says what it does.
NOT_THE_SAME_WORDS = {
    ("test_a_text_column_declared_numeric_fails_naming_monitor_table_column_and_type", "clickhouse"):
        "ClickHouse names the type String, not VARCHAR: test_clickhouse_names_a_text_column_declared_numeric",
}


@pytest.fixture(autouse=True)
def _own_words(request, engine_name):  # noqa: F811
    reason = NOT_THE_SAME_WORDS.get((request.node.originalname, engine_name))
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("engine_name", ["clickhouse"], indirect=False)
def test_clickhouse_names_a_text_column_declared_numeric(source_engine, log):  # noqa: F811
    src = open_source(monitor([{"column": "country", "binning": "uniform", "bins": 4}]), source_engine)
    with pytest.raises(SourceError, match=r"monitor 'm', table 'inference_log'.*column 'country' is declared "
                                          r"numeric but its type is String"):
        src.profile(REFERENCE)


@pytest.mark.parametrize("engine_name", ["mariadb"])
def test_mariadb_stores_no_nan_or_infinity(source_engine):  # noqa: F811
    """Why the MariaDB tables hold NULL where the others hold NaN and ±inf (tests/engines.py)."""
    with source_engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE finite (x DOUBLE)")
    for text in ("1e308 * 10", "0e0 / 0e0", "'nan' + 0"):
        with source_engine.begin() as connection:
            try:
                connection.exec_driver_sql(f"INSERT INTO finite VALUES ({text})")
            except sa.exc.DBAPIError:
                continue  # refused (overflow, or division by zero in strict mode)
        with source_engine.connect() as connection:
            stored = connection.exec_driver_sql("SELECT x FROM finite").scalars().all()
        assert all(x is None or math.isfinite(x) for x in stored), stored
