"""Segment columns for the engine tests, and segment counts computed independently with pandas.

The yardstick of tests/test_engines_agree.py and tests/test_engines_slices.py:
driftmon's segment counts on every engine must equal what a pandas ``groupby``
over the same rows gives, in the bins of the engine's own profile (the bins
themselves are checked against SQLite's elsewhere).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from driftmon.sources.profile import MISSING, OTHER, ReferenceProfile, WindowCounts
from driftmon.windows import TimeRange

# Reference rows per region, built so that the 4th and 5th largest tie ("b" and "b "):
# ties go by value, so "b" is a segment and "b " pooled into __other__ on every engine.
# "a", "A" and "a " differ only in case or a trailing space: an engine that compares
# them by its collation would merge them.
REFERENCE_REGIONS = [("a", 1300), ("A", 900), ("a ", 700), ("b", 450), ("b ", 450), ("é", 300)]
SMALL_REGIONS = ["c", "d", "e", "f"]  # the rest of the reference, pooled with max 4
CURRENT_REGIONS = ["a", "b", "b ", "zz", "é", "c", None]  # "zz" is new, "A" vanished


def with_segments(data: list[dict], reference: TimeRange, version: str = "v3", scale: float = 1.0,
                  seed: int = 23) -> list[dict]:
    """The rows with a text ``region`` and an integer ``tier``, NULL in some rows of each.

    ``scale`` shrinks REFERENCE_REGIONS' counts (ties stay ties) for a reference of fewer rows.
    """
    rng = np.random.default_rng(seed)
    chosen = [i for i, r in enumerate(data) if reference.start <= r["ts"] < reference.end
              and r["model_version"] == version]
    pool = [value for value, n in REFERENCE_REGIONS for _ in range(round(n * scale))]
    regions: dict[int, str | None] = {}
    for position, index in enumerate(rng.permutation(chosen)):
        if position % 25 == 0:
            regions[int(index)] = None
        elif pool:
            regions[int(index)] = pool.pop()
        else:
            regions[int(index)] = SMALL_REGIONS[position % len(SMALL_REGIONS)]
    assert not pool, "too few reference rows for REFERENCE_REGIONS"
    smallest = round(min(n for _, n in REFERENCE_REGIONS) * scale)
    assert (len(chosen) - sum(round(n * scale) for _, n in REFERENCE_REGIONS)) / len(SMALL_REGIONS) < smallest
    out = []
    for i, row in enumerate(data):
        if i in regions:
            region = regions[i]
        elif row["ts"] >= reference.end:
            region = CURRENT_REGIONS[int(rng.integers(len(CURRENT_REGIONS)))]
        else:  # filtered out by the monitor's where
            region = ["A", "zz", None][int(rng.integers(3))]
        tier = None if i % 37 == 0 else int(rng.integers(1, 4))
        out.append({**row, "region": region, "tier": tier})
    return out


@dataclass(frozen=True)
class SegmentCounts:
    """Per segment key, per column, ``{bin label: count}`` (zeros left out), and rows per segment."""

    keys: list[str]  # members largest first, then __other__ and __missing__
    current: dict[str, dict[str, dict[str, float]]]
    reference: dict[str, dict[str, dict[str, float]]]
    rows: dict[str, int]  # current rows per segment


def frame_of(data: list[dict], where: dict[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame(data)
    for column, value in where.items():
        frame = frame[frame[column] == value]  # exactly, as driftmon's where is
    if "tier" in frame:
        frame["tier"] = frame["tier"].astype("Int64")
    return frame


def expected_counts(frame: pd.DataFrame, by: list[str], k: int, profile: ReferenceProfile,
                    reference: TimeRange, window: TimeRange) -> SegmentCounts:
    """What a segmented count must give: membership, then a groupby over (segment, bin)."""
    ref = _within(frame, reference)
    sizes = ref.dropna(subset=by).groupby(by, dropna=True).size()
    ranked = sorted(((_key_tuple(index), int(n)) for index, n in sizes.items()),
                    key=lambda pair: (-pair[1], *pair[0]))
    members = [values for values, _ in ranked[:k]]
    keys = [_key(by, m) for m in members] + [_key(by, [OTHER] * len(by)), _key(by, [MISSING] * len(by))]

    def segment_of(table: pd.DataFrame) -> pd.Series:
        missing = table[by].isna().any(axis=1)
        index = {m: keys[i] for i, m in enumerate(members)}
        found = [index.get(_key_tuple(tuple(row)), keys[-2]) for row in table[by].itertuples(index=False)]
        return pd.Series(np.where(missing, keys[-1], found), index=table.index)

    def counted(table: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
        segments = segment_of(table)
        out = {key: {column.column: {} for column in profile.columns} for key in keys}
        for column in profile.columns:
            labels = _labels(column, table[column.column])
            grouped = pd.DataFrame({"segment": segments, "label": labels}).groupby(["segment", "label"]).size()
            for (segment, label), n in grouped.items():
                out[segment][column.column][label] = float(n)
        return out

    current = _within(frame, window)
    rows = segment_of(current).value_counts()
    return SegmentCounts(keys, counted(current), counted(ref), {key: int(rows.get(key, 0)) for key in keys})


def found_counts(counts: WindowCounts, which: str = "current") -> dict[str, dict[str, float]]:
    """One segment's (or the whole's) aligned counts as ``{column: {label: count}}``, zeros left out."""
    array = getattr(counts, which)
    return {column: {label: float(array[f, b]) for b, label in enumerate(labels) if array[f, b]}
            for f, (column, labels) in enumerate(zip(counts.columns, counts.labels, strict=True))}


def _within(frame: pd.DataFrame, window: TimeRange) -> pd.DataFrame:
    return frame[(frame["ts"] >= window.start) & (frame["ts"] < window.end)]


def _labels(column, values: pd.Series) -> list[str]:
    """Each value's bin label in the profile's bins: left-closed numeric bins, exact categories."""
    out = []
    for value in values:
        if value is None or value is pd.NA or (isinstance(value, float) and not math.isfinite(value)):
            out.append(MISSING)
        elif column.kind == "categorical":
            out.append(column.labels[column.categories.index(value)] if value in column.categories else OTHER)
        else:
            out.append(column.labels[int(np.searchsorted(column.edges, value, side="right"))])
    return out


def _key_tuple(index) -> tuple:
    values = index if isinstance(index, tuple) else (index,)
    return tuple(int(v) if isinstance(v, np.integer) else v for v in values)


def _key(by: list[str], values) -> str:
    return ",".join(f"{column}={value}" for column, value in zip(by, values, strict=True))
