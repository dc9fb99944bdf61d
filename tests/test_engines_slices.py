"""Incremental windows on every other engine: a window summed from slices equals a full count.

tests/test_slices.py's bodies, imported: their ``engine`` is the source here
(the engine under test, ``source_engine``), while the profiles and slices they
store go to a SQLite results database (``results_store``, tests/engines.py).
"""

from __future__ import annotations

import pytest

from driftmon.store.database import create_db_engine
from tests.engines import backend, engine_factory, engine_name, results_store, source_engine  # noqa: F401
from tests.test_slices import (  # noqa: F401  collected here, on every engine
    _dispose_source_engines,
    test_histogram_windows_from_slices_equal_a_full_count,
    test_window_from_slices_equals_a_full_count,
    traffic,
)

pytestmark = pytest.mark.usefixtures("results_store")


@pytest.fixture
def results_engine(db_url):
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(source_engine):  # noqa: F811
    """What the bodies read from: the engine under test."""
    return source_engine
