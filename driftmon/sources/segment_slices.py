"""Slices of a segmented monitor: per segment the counts an unsegmented slice holds, stored sparsely.

Most (segment, bin) cells of a short slice are zero, and a small segment has no
row at all in most slices. A payload keeps only the segments that have rows,
as a dense ``[segments with rows, cells]`` block of the smallest unsigned
integer type that holds its largest count, zlib-compressed and base64-encoded
into the JSON column (README, "Segments": what a day of slices weighs)::

    {"encoding": "segments-zlib", "segments": S, "cells": C, "rows": [0, 3, ...], "dtype": "<u2", "data": "eJz..."}

Decoded, a payload is an int64 array ``[S, cells]`` (cells as ``EventsLayout``
places them), so a window is the plain sum of its slices, segment by segment.
"""

from __future__ import annotations

import base64
import zlib
from datetime import datetime, timedelta

import numpy as np

from driftmon.sources.slicing import EventsLayout, SliceCount, slice_starts
from driftmon.windows import TimeRange

ENCODING = "segments-zlib"


def encode(counts: np.ndarray) -> dict:
    """A ``[segments, cells]`` array of counts as a compact JSON payload."""
    rows = np.flatnonzero(counts.any(axis=1))
    block = counts[rows]
    largest = int(block.max()) if block.size else 0
    dtype = next(t for t in ("<u1", "<u2", "<u4", "<u8") if largest <= np.iinfo(np.dtype(t)).max)
    data = zlib.compress(np.ascontiguousarray(block, dtype=dtype).tobytes(), 6)
    return {"encoding": ENCODING, "segments": int(counts.shape[0]), "cells": int(counts.shape[1]),
            "rows": rows.tolist(), "dtype": dtype,
            "data": base64.b64encode(data).decode("ascii")}


def decode(payload: dict) -> np.ndarray:
    """The int64 ``[segments, cells]`` array of a payload written by ``encode`` (a slice without
    rows included: its width is stored, so it sums with the others)."""
    if payload.get("encoding") != ENCODING:
        raise ValueError(f"not a segmented slice payload: encoding {payload.get('encoding')!r}")
    rows = payload["rows"]
    flat = np.frombuffer(zlib.decompress(base64.b64decode(payload["data"])), dtype=np.dtype(payload["dtype"]))
    width = payload["cells"]
    counts = np.zeros((payload["segments"], width), dtype=np.int64)
    if rows:
        counts[rows] = flat.reshape(len(rows), width)
    return counts


def is_segmented(payload: object) -> bool:
    return isinstance(payload, dict) and payload.get("encoding") == ENCODING


class SegmentedLayout(EventsLayout):
    """``EventsLayout``'s cells, once per segment (SegmentProfile's order)."""

    def __init__(self, value_bins: list[int], segments: int):
        super().__init__(value_bins)
        self.segments = segments

    def slices(self, index: np.ndarray, piece: np.ndarray, code: np.ndarray, count: np.ndarray,
               span: TimeRange, length: timedelta, segment: np.ndarray | None = None) -> dict[datetime, SliceCount]:
        """Counts of (column index, slice number, code) in each row's segment, one SliceCount per slice."""
        starts = slice_starts(span, length)
        counts = np.zeros((len(starts), self.segments, self.size), dtype=np.int64)
        np.add.at(counts, (piece, segment, self.positions(index, code)), count)
        first = slice(0, self.widths[0]) if self.widths else slice(0, 0)
        rows = counts[:, :, first].sum(axis=(1, 2))
        return {start: SliceCount(encode(counts[i]), int(rows[i])) for i, start in enumerate(starts)}

    def segment_tallies(self, payloads: list[np.ndarray]) -> list[list[dict[int, float]]]:
        """Per segment, per column ``{code: count}`` of the payloads' sum (decoded arrays)."""
        total = np.zeros((self.segments, self.size), dtype=np.int64)
        for payload in payloads:
            total += payload
        return [self.tallies([row]) for row in total]
