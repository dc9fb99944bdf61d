"""The sparse payload of a segmented slice: exact round trips, whatever the counts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from driftmon.sources.segment_slices import SegmentedLayout, decode, encode, is_segmented


@pytest.mark.parametrize("largest", [0, 1, 255, 256, 65_535, 65_536, 2**32, 2**40])
def test_round_trip_is_exact_for_any_count_size(largest):
    rng = np.random.default_rng(largest % 97)
    counts = np.zeros((52, 290), dtype=np.int64)
    counts[rng.integers(0, 52, 10), rng.integers(0, 290, 10)] = rng.integers(0, largest + 1, 10)
    if largest:
        counts[3, 7] = largest
    payload = json.loads(json.dumps(encode(counts)))  # as the JSON column stores it
    assert is_segmented(payload) and np.array_equal(decode(payload), counts)
    assert decode(payload).dtype == np.int64


def test_a_slice_without_rows_keeps_its_shape_and_sums_with_the_others():
    layout = SegmentedLayout([3, 2], segments=4)
    empty, full = np.zeros((4, layout.size), dtype=np.int64), np.arange(4 * layout.size).reshape(4, -1)
    payloads = [decode(encode(empty)), decode(encode(full))]
    assert payloads[0].shape == (4, layout.size) and not payloads[0].any()
    tallies = layout.segment_tallies(payloads)
    # Column 1 of segment 2: its 2 value bins, then __other__ (-1) and __missing__ (-2), at cells 5-8.
    assert tallies[2][1] == {0: float(full[2, 5]), 1: float(full[2, 6]), -1: float(full[2, 7]),
                             -2: float(full[2, 8])}


def test_only_segments_with_rows_are_stored_and_sparse_slices_stay_small():
    counts = np.zeros((52, 290), dtype=np.int64)
    counts[0] = 1000
    payload = encode(counts)
    assert payload["rows"] == [0] and payload["dtype"] == "<u2"
    assert len(json.dumps(payload)) < 200  # 52 × 290 int64 cells would be 120 KB


def test_other_payloads_are_refused():
    with pytest.raises(ValueError, match="not a segmented slice payload"):
        decode({"encoding": "other"})
