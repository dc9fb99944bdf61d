"""Storing a run's result rows: every value read back exactly as given, by either path.

PostgreSQL stores them in ONE statement from a JSON document (driftmon/store/repository.py);
a row with a value JSON cannot hold exactly (NaN) falls back to binding row by row.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from driftmon.store.models import Result
from driftmon.store.repository import Repository

END = datetime(2024, 3, 8, 1, tzinfo=UTC)


def row(column: str, segment: dict | None, **changes) -> dict:
    values = {
        "run_id": None, "monitor": "m", "column": column, "role": "feature",
        "window_start": END - timedelta(hours=1), "window_end": END,
        "reference_start": END - timedelta(days=8), "reference_end": END - timedelta(days=1),
        "samples_current": 1234.0, "samples_reference": 98765.0, "missing_current": 3.0,
        "missing_ratio": 3 / 1234, "kl": 0.1 + 0.2, "psi": 1e-300, "js": 2.2250738585072014e-308,
        "statistic": "kl", "threshold_warning": 0.1, "threshold_critical": 0.25, "status": "critical",
        "computed_at": datetime(2024, 3, 8, 1, 0, 7, 123456, tzinfo=UTC), "p_value": 5e-324, "q_value": None,
        "labels": ["(-inf, 0.1)", "[0.1, +inf)", "ä \"quoted\" \\ \u202e"], "reference_counts": [1.0, 2.5, 0.0],
        "current_counts": [3.0, 0.0, 1e17], "fingerprint": "f" * 64,
        "segment": segment, "segment_key": ",".join(f"{k}={v}" for k, v in (segment or {}).items()),
    }
    return {**values, **changes}


def stored(engine) -> dict[tuple[str, str], dict]:
    with engine.connect() as connection:
        rows = connection.execute(sa.select(Result.__table__)).mappings().all()
    return {(r["column"], r["segment_key"]): dict(r) for r in rows}


@pytest.mark.parametrize("nan", [False, True], ids=["one-statement", "row-by-row"])
def test_every_value_comes_back_exactly_and_a_rerun_replaces(engine, nan):
    rows = [row("amount", None), row("amount", {"region": "D", "app": "web"}),
            row("country", {"region": "D", "app": "web"}, kl=None, psi=None, js=None, p_value=None,
                status="insufficient_data")]
    if nan:
        rows[0]["missing_ratio"] = math.nan
    with engine.begin() as connection:
        Repository().upsert_results(connection, rows)
    found = stored(engine)
    assert len(found) == 3
    for given in rows:
        back = found[(given["column"], given["segment_key"])]
        for name, value in given.items():
            if isinstance(value, float) and math.isnan(value):  # SQLite stores a NaN as NULL
                assert back[name] is None if engine.dialect.name == "sqlite" else math.isnan(back[name])
            else:
                assert back[name] == value, name
        assert list(back["segment"] or {}) == list(given["segment"] or {})  # key order kept
    with engine.begin() as connection:
        Repository().upsert_results(connection, [row("amount", None, kl=0.5, status="ok")])
    again = stored(engine)
    assert len(again) == 3 and again[("amount", "")]["kl"] == 0.5 and again[("amount", "")]["status"] == "ok"
