"""Benchmark of the slice-count statement at the size a steady cycle reads (issue #25).

Not a timed test: run it by hand, after bench_incremental.py or bench_sources.py made the
10 M-row table of bench_sources.py in PostgreSQL (database driftmon_bench):

    .venv/bin/python bench/bench_slice_statement.py [--rounds 25] [--engines postgresql,sqlite,duckdb,mariadb]

Two 5-minute slices (about 8,700 rows) of the 24 columns, counted by the statement in each
shape, interleaved round by round on one connection per engine (median of ``--rounds``):
the shape before issue #25 (a copy of it is kept here), driftmon's shape now for a cycle's
few slices (``EventsSource._count_statement``) and, on PostgreSQL, driftmon's shape for many
slices (a fill: unnest, which parallel workers share) at the same size. Beside them, the
engine's own scan of the same rows with the same WHERE: ``count(*)``, ``sum()`` of one
column, and ONE ``SELECT`` of ``sum()`` over all 24 columns (``sum(length(c))`` for the 3
text columns): the baseline the ratios are taken to. Every shape's counts are checked
equal, slice by slice and bin for bin, to the first shape's.

SQLite, DuckDB and MariaDB get a copy of the PostgreSQL rows of the reference (the first
2 h, where the profile is cut) and of the 4 h around the counted span: the same rows at the
same density, so the same ~8,700 rows are counted (MariaDB: ``--mysql-url``, a database of
its own created there and dropped at the end).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_incremental as inc  # noqa: E402
import bench_sources as tb  # noqa: E402
import pandas as pd  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from sqlalchemy.dialects import postgresql  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from driftmon.sources import dialects, open_source, slice_statements  # noqa: E402
from driftmon.sources.events import (  # noqa: E402
    _ANY_WINDOW,
    _KEY_SPAN,
    _LARGEST_FLOAT,
    MISSING_CODE,
    OTHER_CODE,
    _bins_of,
)
from driftmon.sources.sql import WindowStatement, in_range, slice_bounds, slice_index  # noqa: E402
from driftmon.store.database import create_db_engine  # noqa: E402
from driftmon.windows import TimeRange  # noqa: E402

START, LENGTH = tb.START, timedelta(minutes=5)
REFERENCE = TimeRange(START, START + timedelta(hours=2))
SPAN = TimeRange(START + timedelta(days=7, hours=12), START + timedelta(days=7, hours=12, minutes=10))
AROUND = TimeRange(SPAN.start - timedelta(hours=2), SPAN.end + timedelta(hours=2))  # copied to the other engines


# --- the statement before issue #25, kept to time it beside driftmon's -------------------


def code_before(src, feature, cuts, categories):
    """EventsSource._code before issue #25: on PostgreSQL the value cast in every use, NULL/±inf
    by three tests, categories by a CASE."""
    name = src.engine.dialect.name
    value = src.table.c[feature.column]
    if feature.type == "categorical":
        value = src._category(feature)
        known = categories[feature.column]
        found = dialects.category_codes(name, value, known, OTHER_CODE) if known else sa.literal(OTHER_CODE)
        return sa.case((value.is_(None), MISSING_CODE), else_=found)
    if name == "postgresql":
        value = sa.cast(value, sa.Double)
    edges = cuts[feature.column]
    if not edges:
        bucket = sa.literal(0)
    elif name == "postgresql":
        bucket = sa.func.width_bucket(value, sa.literal(edges, postgresql.ARRAY(sa.Double)))
    else:
        bucket = sa.case(*((value < dialects.double(name, c), i) for i, c in enumerate(edges)), else_=len(edges))
    largest = dialects.double(name, _LARGEST_FLOAT)
    missing = sa.or_(value.is_(None), value > largest, value < -largest, *dialects.non_finite(name, value))
    return sa.case((missing, MISSING_CODE), else_=bucket)


def unnest_before(src, codes, extra):
    """PostgreSQL: unnest(ARRAY[codes]) in a subquery's SELECT list."""
    keys = postgresql.array([code + (i * _KEY_SPAN - MISSING_CODE) for i, code in enumerate(codes)])
    coded = sa.select(*extra, keys.label("keys")).where(*src._in_window(_ANY_WINDOW)).offset(0).subquery("coded")
    groups = [coded.c[e.name] for e in extra]
    unpivoted = sa.select(*groups, sa.func.unnest(coded.c["keys"]).label("key")).subquery("unpivoted")
    names = [unpivoted.c[e.name] for e in extra]
    return sa.select(*names, unpivoted.c.key, sa.func.count()).group_by(*names, unpivoted.c.key)


def union_before(src, codes, extra):
    """SQLite and DuckDB: codes into a CTE (materialised on SQLite), one GROUP BY per column."""
    coded = (sa.select(*extra, *(code.label(f"c{i}") for i, code in enumerate(codes)))
             .where(*src._in_window(_ANY_WINDOW)).cte("coded").prefix_with("MATERIALIZED", dialect="sqlite"))
    groups = [coded.c[e.name] for e in extra]
    return sa.union_all(*(sa.select(sa.literal(i).label("index"), *groups, coded.c[f"c{i}"], sa.func.count())
                          .group_by(*groups, coded.c[f"c{i}"]) for i in range(len(codes))))


def joined_before(src, codes, extra):
    """MariaDB: codes into a derived table kept by LIMIT, joined to one row per column."""
    coded = (sa.select(*extra, *(code.label(f"c{i}") for i, code in enumerate(codes)))
             .where(*src._in_window(_ANY_WINDOW)).limit(2**63 - 1).subquery("coded"))
    columns = sa.union_all(*(sa.select(sa.literal(i).label("idx")) for i in range(len(codes)))).subquery("columns")
    code = sa.case({i: coded.c[f"c{i}"] for i in range(len(codes))}, value=columns.c.idx)
    groups = [coded.c[e.name] for e in extra]
    return (sa.select(columns.c.idx, *groups, code.label("code"), sa.func.count())
            .select_from(coded.join(columns, sa.true())).group_by(columns.c.idx, *groups, code))


BEFORE = {"postgresql": unnest_before, "sqlite": union_before, "duckdb": union_before, "mysql": joined_before,
          "mariadb": joined_before}


# --- the engines ------------------------------------------------------------------------


def rows_from_postgresql(url: str) -> pd.DataFrame:
    """The reference's and the span's surroundings' rows of the 10 M-row table, naive UTC."""
    columns = ", ".join(["ts", *tb.NUMERIC, *tb.CATEGORICAL, tb.SCORE])
    engine = create_db_engine(url)
    frames = []
    with engine.connect() as connection:
        for part in (REFERENCE, AROUND):
            query = sa.text(f"SELECT {columns} FROM inference_log WHERE ts >= :a AND ts < :b ORDER BY ts")  # noqa: S608
            frames.append(pd.read_sql(query, connection, params={"a": part.start, "b": part.end}))
    engine.dispose()
    frame = pd.concat(frames, ignore_index=True)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.tz_convert(None)
    return frame


def load(name: str, frame: pd.DataFrame, folder: Path, mysql_url: str) -> sa.Engine:
    import bench_engines as eng  # its loaders: the same table on every engine

    if name == "sqlite":
        return eng.load_sqlite(frame, folder)
    if name == "duckdb":
        parquet = folder / "rows.parquet"
        frame.to_parquet(parquet, index=False)
        return eng.load_duckdb(parquet, folder, view=False)
    url = make_url(mysql_url)
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS `{MYSQL_DATABASE}`")
    admin.dispose()
    own = url.set(database=MYSQL_DATABASE).render_as_string(hide_password=False)
    return eng.load_mariadb(frame, folder, own)


MYSQL_DATABASE = "driftmon_bench_slice_statement"


def drop_mysql(mysql_url: str) -> None:
    admin = sa.create_engine(make_url(mysql_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"DROP DATABASE IF EXISTS `{MYSQL_DATABASE}`")
    admin.dispose()


def scans(src) -> dict[str, sa.Select]:
    """The engine's own scans of the same rows with the same WHERE (no binning)."""
    table = sa.table("inference_log", *(sa.column(c) for c in ["ts", *tb.WATCHED]))
    where = in_range(src.engine.dialect.name, table.c.ts, _ANY_WINDOW, src.reader.epoch)
    every = [sa.func.sum(table.c[c]) for c in [*tb.NUMERIC, tb.SCORE]]
    every += [sa.func.sum(sa.func.length(table.c[c])) for c in tb.CATEGORICAL]
    return {"count(*)": sa.select(sa.func.count()).where(where),
            "sum(f01)": sa.select(sa.func.sum(table.c.f01)).where(where),
            "sum() of 24 columns": sa.select(*every).where(where)}


def counted(rows, keyed: bool) -> dict[tuple[int, int, int], int]:
    """{(slice, column index, code): count} from either result layout."""
    out = {}
    for row in rows:
        if keyed:
            piece, key, n = row
            index, code = divmod(int(key), _KEY_SPAN)
            out[int(piece), index, code + MISSING_CODE] = int(n)
        else:
            index, piece, code, n = row
            out[int(piece), int(index), int(code)] = int(n)
    return out


def bench_engine(title: str, engine: sa.Engine, rounds: int) -> list[dict]:
    src = open_source(inc.settings("sqlite://", "24h"), engine)  # the results store is not used here
    profile = src.profile(REFERENCE)
    cuts, categories = _bins_of(profile)
    name = engine.dialect.name
    with src.reader.reading("timing") as connection:
        extra = [slice_index(name, src._timestamp, LENGTH, src.reader.epoch).label("slice")]
        before = [code_before(src, f, cuts, categories) for f in src.features]
        shapes = {"before #25": (WindowStatement.compile(BEFORE[name](src, before, extra), connection,
                                                         src.reader.epoch), name == "postgresql")}
        if name == "postgresql":  # driftmon's shape for many slices (a fill), timed at a cycle's size
            shapes["unnest, codes once (fill shape)"] = (WindowStatement.compile(
                slice_statements.unnest(src, cuts, categories, extra), connection, src.reader.epoch), True)
        shapes["driftmon now"] = (src._count_statement(connection, cuts, categories, [], LENGTH, few=True),
                                  slice_statements.keyed(name))
        plain = {k: WindowStatement.compile(s, connection, src.reader.epoch) for k, s in scans(src).items()}
        times = {k: [] for k in [*shapes, *plain]}
        found = {}
        for _ in range(rounds):
            for k, (statement, keyed) in shapes.items():
                began = time.perf_counter()
                rows = statement.execute(connection, SPAN, slice_bounds(SPAN))
                times[k].append(time.perf_counter() - began)
                found[k] = counted(rows, keyed)
            for k, statement in plain.items():
                began = time.perf_counter()
                statement.execute(connection, SPAN)
                times[k].append(time.perf_counter() - began)
    first = next(iter(found.values()))
    n = sum(v for (_, index, _), v in first.items() if index == 0)
    base = statistics.median(times["sum() of 24 columns"])
    table = []
    for k, t in times.items():
        same = "" if k not in found else ("yes" if found[k] == first else "NO")
        table.append({"engine": title, "rows": n, "statement": k, "ms": statistics.median(t) * 1000,
                      "min": min(t) * 1000, "ratio": statistics.median(t) / base, "same": same})
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--engines", default="postgresql,sqlite,duckdb,mariadb")
    parser.add_argument("--pg-url", default=tb.DEFAULT_URL)
    parser.add_argument("--mysql-url", default="mysql+pymysql://root@127.0.0.1:3306/test")
    args = parser.parse_args(argv)
    engines = args.engines.split(",")
    pg = create_db_engine(args.pg_url)
    if tb.existing_rows(pg) is None:
        raise SystemExit(f"no bench table in {args.pg_url}: run bench/bench_incremental.py --pg-rows 10000000 first")
    results = []
    if "postgresql" in engines:
        results += bench_engine(f"PostgreSQL, {tb.existing_rows(pg):,} rows", pg, args.rounds)
    pg.dispose()
    others = [e for e in engines if e != "postgresql"]
    if others:
        frame = rows_from_postgresql(args.pg_url)
        with tempfile.TemporaryDirectory() as folder:
            for name in others:
                engine = load(name, frame, Path(folder), args.mysql_url)
                try:
                    results += bench_engine(f"{name}, {len(frame):,} rows", engine, args.rounds)
                finally:
                    engine.dispose()
                    if name == "mariadb":
                        drop_mysql(args.mysql_url)
    print(f"\ntwo 5-minute slices of 24 columns, median of {args.rounds} rounds, interleaved")
    print("| engine | rows counted | statement | median ms | fastest ms | median / sum() of 24 columns | same counts |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['engine']} | {r['rows']:,} | {r['statement']} | {r['ms']:.2f} | {r['min']:.2f} | "
              f"{r['ratio']:.1f}x | {r['same']} |")
    if any(r["same"] == "NO" for r in results):
        raise SystemExit("counts differ between shapes")


if __name__ == "__main__":
    main()
