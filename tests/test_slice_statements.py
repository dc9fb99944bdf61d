"""The count statement's shapes (driftmon/sources/slice_statements.py, issue #25): counts unchanged bin for bin.

PostgreSQL computes each column's value once, tests NULL, NaN and ±inf with one
``|x| <= largest float`` and looks text categories up in a jsonb object (past
``_JSONB_LOOKUP_FROM`` categories), then counts by GROUPING SETS. On SQLite and
PostgreSQL, full counts and counts summed from slices must equal an independent
pandas/numpy count, for awkward text (case, trailing spaces, quotes, backslashes,
control characters, non-ASCII, the empty string), integer categories, and numbers
on the cut points, beyond them, near the largest float, NaN, ±inf and NULL.
"""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from driftmon.config_file import parse_config
from driftmon.counting.incremental import SliceCounter
from driftmon.sources import events, open_source
from driftmon.sources.profile import MISSING, OTHER
from driftmon.store.repository import Repository
from driftmon.windows import TimeRange
from tests.sourcedata import START, create_and_fill, events_table

DAY, HOUR = timedelta(days=1), timedelta(hours=1)
REFERENCE = TimeRange(START, START + DAY)
WINDOW = TimeRange(START + DAY, START + DAY + HOUR)
TEXT = ["DE", "de", "DE ", "é", 'q"uote', "back\\slash", "new\nline", "{}", "x'y", "日本", "", "tab\t", "null"]
EXTREME = [math.nan, math.inf, -math.inf, None, 1e308, -1e308, 1.7976931348623157e308, -1.7976931348623157e308]


def settings(segments: dict | None = None):
    features = [{"column": "amount", "bins": 5}, {"column": "score", "binning": "explicit", "edges": [0.25, 0.5]},
                {"column": "country", "type": "categorical", "top_k": 20},
                {"column": "tier", "type": "categorical", "top_k": 20}]
    source = {"kind": "events", "table": "inference_log", "timestamp_column": "ts", "where": {"model_version": "v3"}}
    raw = {"defaults": {"schedule": {"every": "5m"}, "window": {"size": "1h"}},
           "monitors": [{"name": "m", "features": features, "source": source,
                         **({"segments": segments} if segments else {})}]}
    return parse_config(raw, {}).resolved_monitors()[0]


def rows() -> list[dict]:
    rng = np.random.default_rng(25)
    out = []
    for start, n, unseen in ((REFERENCE.start, 2000, False), (WINDOW.start, 600, True)):
        seconds = rng.uniform(0, HOUR.total_seconds(), n)
        for i in range(n):
            country = TEXT[i % len(TEXT)] if i % 17 else None
            if unseen and i % 29 == 0:
                country = "ZZ"  # never in the reference: other
            amount = EXTREME[i % len(EXTREME)] if i % 11 == 0 else float(rng.normal(0, 1))
            out.append({"ts": start + timedelta(seconds=float(seconds[i])), "model_version": "v3" if i % 7 else "v2",
                        "amount": amount, "country": country, "score": [0.25, 0.5, 0.1, 0.9][i % 4],
                        "tier": None if i % 19 == 0 else int(i % (12 if unseen else 10)),
                        "region": None if i % 23 == 0 else "ABCDEF"[i % 6], "app": ["web", "ios"][i % 2]})
    return out


@pytest.fixture
def source(engine):
    """The test's own database is the source too (SQLite, or PostgreSQL with DRIFTMON_TEST_DATABASE_URL)."""
    data = rows()
    if engine.dialect.name == "sqlite":  # SQLite stores a NaN as NULL: both count as missing
        data = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in data]
    create_and_fill(engine, events_table(tier=sa.Integer, region=sa.String(8), app=sa.String(8)), data)
    return pd.DataFrame(rows())


def expected(frame: pd.DataFrame, profile, column: str) -> list[float]:
    """pandas/numpy: the window's counts in the profile's bins, then other (categories) and missing."""
    ts = pd.to_datetime(frame["ts"], utc=True)
    values = frame[(ts >= WINDOW.start) & (ts < WINDOW.end) & (frame["model_version"] == "v3")][column]
    found = profile.column(column)
    if found.kind == "categorical":
        present = values[values.notna()]
        known = [float((present == c).sum()) for c in found.categories]
        return [*known, float(len(present) - sum(known)), float(values.isna().sum())]
    x = values.to_numpy(dtype=float)
    finite = x[np.isfinite(x)]
    edges = [-np.inf, *found.edges, np.inf]
    counts = [float(((finite >= lo) & (finite < hi)).sum()) for lo, hi in zip(edges, edges[1:], strict=False)]
    return [*counts, float(len(x) - len(finite))]


def window_counts(counts, column: str) -> list[float]:
    f = counts.columns.index(column)
    labels = counts.labels[f]
    current = dict(zip(labels, counts.current[f][: len(labels)], strict=True))
    other = [current.pop(OTHER)] if OTHER in current else []
    current.pop(MISSING, None)  # a missing bin's count is in current_missing too
    return [*current.values(), *other, float(counts.current_missing[f])]


@pytest.mark.parametrize("shape", ["few slices", "many slices"])
@pytest.mark.parametrize("lookup", ["engine's own", "case"])
def test_full_and_sliced_counts_equal_pandas(engine, source, lookup, shape, monkeypatch):
    if lookup == "case":  # PostgreSQL's CASE over the categories, as for a short list
        monkeypatch.setattr(events, "_JSONB_LOOKUP_FROM", 10**6)
    # The window's 12 slices counted in the shape of a steady cycle's few (GROUPING SETS on PostgreSQL).
    monkeypatch.setattr(events, "_FEW_SLICES", 12 if shape == "few slices" else 1)
    monitor = settings()
    src = open_source(monitor, engine)
    profile = src.profile(REFERENCE)
    assert len(profile.column("country").categories) == len(TEXT) and len(profile.column("tier").categories) == 10
    full = src.counts(profile, WINDOW)
    sliced = SliceCounter(Repository(), engine, lambda: WINDOW.end + DAY).window(monitor, src, profile, WINDOW)
    for column in ("amount", "score", "country", "tier"):
        want = expected(source, profile, column)
        assert window_counts(full, column) == want, column
        assert window_counts(sliced.counts, column) == want, column


@pytest.mark.parametrize("by", [["region"], ["region", "app"]])
def test_segmented_slices_are_the_same_in_both_shapes(engine, source, by, monkeypatch):
    """Slice and segment packed into one key (PostgreSQL's GROUPING SETS) give the unnest's counts."""
    monitor = settings({"by": by, "max": 4})
    src = open_source(monitor, engine)
    profile = src.profile(REFERENCE)
    found = {}
    for few in (12, 1):
        monkeypatch.setattr(events, "_FEW_SLICES", few)
        found[few] = src.slice_counts(profile, WINDOW, timedelta(minutes=5))
    assert found[12].keys() == found[1].keys() and len(found[12]) == 12
    for start, piece in found[12].items():
        assert piece.rows == found[1][start].rows
        assert np.array_equal(np.asarray(piece.payload), np.asarray(found[1][start].payload))
    ts = pd.to_datetime(source["ts"], utc=True)
    rows = (ts >= WINDOW.start) & (ts < WINDOW.end) & (source["model_version"] == "v3")
    assert sum(p.rows for p in found[12].values()) == rows.sum()


def test_postgresql_computes_each_value_once_and_groups_by_sets(engine, source):
    if engine.dialect.name != "postgresql":
        pytest.skip("the PostgreSQL shape")
    src = open_source(settings(), engine)
    profile = src.profile(REFERENCE)
    cuts, categories = events._bins_of(profile)
    with src.reader.reading("shape") as connection:
        sql = src._count_statement(connection, cuts, categories, [], timedelta(minutes=5), few=True).sql
        many = src._count_statement(connection, cuts, categories, [], timedelta(minutes=5)).sql
    assert "GROUPING SETS" in sql and "unnest" not in sql
    assert "unnest" in many and "GROUPING SETS" not in many  # parallel workers share a fill
    assert sql.count("CAST(inference_log.amount AS DOUBLE PRECISION)") == 1
    assert sql.count("OFFSET") == 2  # the values' and the codes' subqueries are fenced
    assert "JSONB" in sql.upper()  # 13 text categories: looked up in one jsonb object
    assert sql.count("CASE inference_log.tier") + sql.count("CASE picked.v3") == 1  # integers: CASE
