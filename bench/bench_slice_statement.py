"""Benchmark of PostgreSQL's slice-count statement at the size a cycle reads (issue #25).

Not a timed test: run it by hand, after bench_incremental.py or bench_rolling.py made the
10 M-row table of bench_sources.py:

    python bench/bench_slice_statement.py [rounds]

Two 5-minute slices (about 8,700 rows) of the 24 columns, counted by the statement in two
shapes, interleaved round by round on one connection: unnest(ARRAY[...]) as a LATERAL join
(the shape before issue #25) and in the SELECT list of a subquery (driftmon's now); beside
them a plain sum() of one column over the same rows, and whether both shapes' counts agree.
"""

import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_incremental as inc  # noqa: E402
import bench_sources as tb  # noqa: E402
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from driftmon.sources import open_source
from driftmon.sources.events import _ANY_WINDOW, _KEY_SPAN, MISSING_CODE, _bins_of
from driftmon.sources.sql import WindowStatement, slice_bounds, slice_index
from driftmon.store.database import create_db_engine
from driftmon.windows import TimeRange

url = tb.DEFAULT_URL
engine = create_db_engine(url)
monitor = inc.settings(url, "24h")
src = open_source(monitor, engine)
START = tb.START
profile = src.profile(TimeRange(START, START + timedelta(hours=2)))
cuts, categories = _bins_of(profile)
length = timedelta(minutes=5)

def old_shape(self, codes, extra):
    keys = postgresql.array([code + (i * _KEY_SPAN - MISSING_CODE) for i, code in enumerate(codes)])
    coded = sa.select(*extra, keys.label("keys")).where(*self._in_window(_ANY_WINDOW)).offset(0).subquery("coded")
    unpivot = sa.func.unnest(coded.c["keys"]).table_valued("key").render_derived().lateral("u")
    groups = [coded.c[e.name] for e in extra]
    joined = coded.join(unpivot, sa.true())
    return sa.select(*groups, unpivot.c.key, sa.func.count()).select_from(joined).group_by(*groups, unpivot.c.key)

with src.reader.reading("timing") as connection:
    codes = [src._code(f, cuts, categories) for f in src.features]
    extra = [slice_index("postgresql", src._timestamp, length, src.reader.epoch).label("slice")]
    shapes = {"lateral join (before)": WindowStatement.compile(old_shape(src, codes, extra), connection),
              "select list (after)": WindowStatement.compile(src._count_unnest(codes, extra), connection)}
    span = TimeRange(START + timedelta(days=7, hours=12), START + timedelta(days=7, hours=12, minutes=10))
    results, times = {}, {k: [] for k in shapes}
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 15):
        for name, statement in shapes.items():
            began = time.perf_counter()
            rows = statement.execute(connection, span, slice_bounds(span))
            times[name].append(time.perf_counter() - began)
            results[name] = sorted(tuple(r) for r in rows)
    scan = []
    for _ in range(5):
        began = time.perf_counter()
        connection.execute(sa.text("SELECT sum(f01) FROM inference_log WHERE ts >= :a AND ts < :b"),
                           {"a": span.start, "b": span.end}).all()
        scan.append(time.perf_counter() - began)
n = sum(r[-1] for r in results["select list (after)"]) // len(src.features)
rounds = len(times[next(iter(times))])
print(f"two 5-minute slices, {n:,} rows, 24 columns, PostgreSQL 10 M rows (median of {rounds}, interleaved):")
for name, t in times.items():
    print(f"  {name}: {statistics.median(t) * 1000:.1f} ms")
print(f"  plain sum() of one column over the same rows: {statistics.median(scan) * 1000:.1f} ms")
print("  identical counts:", results["lateral join (before)"] == results["select list (after)"])
