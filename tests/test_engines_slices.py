"""Incremental windows on every other engine: a window summed from slices equals a full count.

tests/test_slices.py's bodies, imported: their ``engine`` is the source here
(the engine under test, ``source_engine``), while the profiles and slices they
store go to a SQLite results database (``results_store``, tests/engines.py).
Segmented monitors too: the sum of a window's slices equals a full count
segment by segment, and both equal a pandas ``groupby`` (tests/segmentdata.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from driftmon.counting.incremental import SliceCounter
from driftmon.counting.profiles import reference_profile
from driftmon.sources import open_source
from driftmon.store.database import create_db_engine
from driftmon.store.repository import Repository
from driftmon.windows import TimeRange
from tests.engines import backend, engine_factory, engine_name, results_store, source_engine  # noqa: F401
from tests.segmentdata import expected_counts, found_counts, frame_of, with_segments
from tests.sourcedata import START, create_and_fill, events_table, random_events
from tests.test_slices import (  # noqa: F401  collected here, on every engine
    DAY,
    HOUR,
    LIVE,
    MINUTE,
    REFERENCE,
    Clock,
    _dispose_source_engines,
    edge_rows,
    settings,
    test_histogram_windows_from_slices_equal_a_full_count,
    test_window_from_slices_equals_a_full_count,
    traffic,
)

pytestmark = pytest.mark.usefixtures("results_store")

SEGMENTS = [{"by": ["region"], "max": 4}, {"by": ["region", "tier"], "max": 5}]
SEGMENT_WINDOWS = [
    TimeRange(LIVE, LIVE + HOUR),
    TimeRange(LIVE + 30 * MINUTE, LIVE + 90 * MINUTE),  # holds the edge rows (NaN, ±inf, NULL)
    TimeRange(LIVE + 7 * HOUR, LIVE + 8 * HOUR),  # empty
    TimeRange(LIVE - 30 * MINUTE, LIVE + 30 * MINUTE),  # half in the reference's traffic, half empty
]


@pytest.fixture
def results_engine(db_url):
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(source_engine):  # noqa: F811
    """What the bodies read from: the engine under test."""
    return source_engine


@pytest.fixture
def segmented_traffic(engine):
    rng = np.random.default_rng(3)
    rows = random_events(rng, 2000, START, 2 * DAY) + random_events(rng, 1500, LIVE, 6 * HOUR, shift=10)
    rows += random_events(rng, 200, LIVE, 6 * HOUR, version="v2") + edge_rows(LIVE + HOUR)
    rows = with_segments(rows, REFERENCE, scale=0.4)
    create_and_fill(engine, events_table(region=sa.String(8), tier=sa.Integer), rows)
    return rows


def test_segmented_windows_from_slices_equal_a_full_count(engine, db_url, results_engine, segmented_traffic):
    frame = frame_of(segmented_traffic, {"model_version": "v3"})
    for segments in SEGMENTS:
        monitor = settings(db_url, segments=segments).resolved_monitors()[0]
        source = open_source(monitor, engine)
        profile = reference_profile(Repository(), results_engine, source, "m", REFERENCE)  # stored, read back
        assert profile.segments.size == segments["max"] + 2
        for window in SEGMENT_WINDOWS:
            full = source.counts(profile, window)
            sliced = SliceCounter(Repository(), results_engine, Clock(window.end + DAY)).window(
                monitor, source, profile, window)
            assert len(sliced.fresh) == 12 and sliced.counts.rows_scanned == full.rows_scanned
            pandas = expected_counts(frame, segments["by"], segments["max"], profile, REFERENCE, window)
            assert profile.segments.keys == pandas.keys
            for i, key in enumerate(pandas.keys):
                whole, summed = full.segments[i], sliced.counts.segments[i]
                assert summed.labels == whole.labels, f"{window} {key}"
                for name in ("current", "mask", "current_missing", "current_totals"):
                    np.testing.assert_array_equal(getattr(summed, name), getattr(whole, name),
                                                  err_msg=f"{window} {key} {name}")
                assert found_counts(summed) == pandas.current[key], f"{window} {key}"
                assert whole.current_totals[0] == pandas.rows[key], f"{window} {key}"
            np.testing.assert_array_equal(sliced.counts.mix.current, full.mix.current)
            np.testing.assert_array_equal(sliced.counts.current, full.current)
            assert sum(pandas.rows.values()) == full.rows_scanned
        assert sum(pandas.rows.values()) > 0 and pandas.rows[pandas.keys[-2]] > 0  # the windows are not all empty
