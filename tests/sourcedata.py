"""Generated source tables for tests: an inference log and a histogram table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import sqlalchemy as sa

START = datetime(2024, 3, 1, tzinfo=UTC)


def events_table(name: str = "inference_log", schema: str | None = None, **columns) -> sa.Table:
    extra = [sa.Column(c, t) for c, t in columns.items()]
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("ts", sa.DateTime),
        sa.Column("model_version", sa.String(10)),
        sa.Column("amount", sa.Double),
        sa.Column("country", sa.String(20)),
        sa.Column("score", sa.Double),
        *extra,
        schema=schema,
    )


def create_and_fill(engine: sa.Engine, table: sa.Table, rows: list[dict]) -> None:
    table.metadata.create_all(engine)
    with engine.begin() as connection:
        if rows:
            connection.execute(table.insert(), [_naive(r) for r in rows])


def _naive(row: dict) -> dict:
    # Naive source timestamps are UTC by the spec; store them naive.
    return {k: (v.astimezone(UTC).replace(tzinfo=None) if isinstance(v, datetime) else v)
            for k, v in row.items()}


def random_events(rng: np.random.Generator, n: int, start: datetime, span: timedelta,
                  shift: float = 0.0, version: str = "v3") -> list[dict]:
    seconds = rng.uniform(0, span.total_seconds(), n)
    amounts = rng.normal(100 + shift, 20, n)
    countries = rng.choice(["DE", "FR", "US", "GB", "NL", "ES"], n, p=[.3, .2, .2, .1, .1, .1])
    scores = rng.uniform(0, 1, n)
    rows = []
    for i in range(n):
        amount = float(amounts[i])
        if i % 37 == 0:
            amount = None
        rows.append({
            "ts": start + timedelta(seconds=float(seconds[i])),
            "model_version": version,
            "amount": amount,
            "country": None if i % 53 == 0 else str(countries[i]),
            "score": float(scores[i]),
        })
    return rows
