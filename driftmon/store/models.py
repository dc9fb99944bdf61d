"""Tables of the results database (README, "Running with PostgreSQL, and replicas").

Alembic's autogenerate reads ``metadata``; the migrations in ``migrations/`` must
equal these models (a test runs ``alembic check`` on SQLite and PostgreSQL).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names, so that migrations can alter them on every dialect.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every dialect.

    SQLite has no time zones: values are stored as naive UTC and come back
    tagged as UTC, so comparisons never mix naive and aware datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Run(Base):
    """One run of one monitor for one current window."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    monitor: Mapped[str] = mapped_column(String(200))
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    window_end: Mapped[datetime] = mapped_column(UTCDateTime)
    reference_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reference_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
    columns: Mapped[int | None] = mapped_column(Integer)
    rows_scanned: Mapped[int | None] = mapped_column(BigInteger)
    duration_seconds: Mapped[float | None] = mapped_column(Double)
    # Why the run happened: schedule | backfill | run_once | late_data (a recount changed
    # a slice that the window used) | recount (backfill --recount).
    trigger: Mapped[str | None] = mapped_column(String(20))

    __table_args__ = (Index("ix_runs_monitor_window_end", "monitor", "window_end"),)


class Result(Base):
    """The statistics of one column of one monitor for one current window."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    monitor: Mapped[str] = mapped_column(String(200))
    column: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    window_end: Mapped[datetime] = mapped_column(UTCDateTime)
    reference_start: Mapped[datetime] = mapped_column(UTCDateTime)
    reference_end: Mapped[datetime] = mapped_column(UTCDateTime)
    samples_current: Mapped[float] = mapped_column(Double)
    samples_reference: Mapped[float] = mapped_column(Double)
    missing_current: Mapped[float] = mapped_column(Double)
    missing_ratio: Mapped[float | None] = mapped_column(Double)
    kl: Mapped[float | None] = mapped_column(Double)
    psi: Mapped[float | None] = mapped_column(Double)
    js: Mapped[float | None] = mapped_column(Double)
    statistic: Mapped[str] = mapped_column(String(10))
    threshold_warning: Mapped[float] = mapped_column(Double)
    threshold_critical: Mapped[float] = mapped_column(Double)
    status: Mapped[str] = mapped_column(String(20))
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The G-test of homogeneity and its Benjamini-Hochberg q-value across the window's columns.
    p_value: Mapped[float | None] = mapped_column(Double)
    q_value: Mapped[float | None] = mapped_column(Double)
    # The bins the statistics were computed on, so a stored window can be explained
    # without reading the source: labels, and the raw reference and current counts.
    labels: Mapped[list | None] = mapped_column(JSON)
    reference_counts: Mapped[list | None] = mapped_column(JSON)
    current_counts: Mapped[list | None] = mapped_column(JSON)
    # driftmon.fingerprints.results_fingerprint of the settings that made these numbers:
    # a backfill recomputes a stored window whose fingerprint no longer matches (NULL: stored
    # before fingerprints, taken as matching).
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    # Segmented monitors (README, "Segments"): the segment as {column: value}, NULL for the
    # whole population; segment_key is its text ("country=DE"), '' for the whole population,
    # so that the unique key holds on every dialect (NULLs never collide in a unique key).
    segment: Mapped[dict | None] = mapped_column(JSON)
    segment_key: Mapped[str] = mapped_column(String(1000), server_default="")

    __table_args__ = (
        UniqueConstraint("monitor", "column", "segment_key", "window_end"),
        Index("ix_results_monitor_window_end", "monitor", "window_end"),
    )


class ReferenceProfile(Base):
    """Bin edges, categories and counts of one column over one reference range.

    ``config_hash`` fingerprints everything that shapes the column's profile (its
    settings, its source's, the database it reads: driftmon/fingerprints.py): a
    changed config gives a new profile instead of reusing one cut for the old.
    A profile that is not ``complete`` (its range had not ended when it was
    counted, or it held fewer than ``min_samples`` rows) is recounted until it is.
    """

    __tablename__ = "reference_profiles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    monitor: Mapped[str] = mapped_column(String(200))
    column: Mapped[str] = mapped_column(String(200))
    reference_start: Mapped[datetime] = mapped_column(UTCDateTime)
    reference_end: Mapped[datetime] = mapped_column(UTCDateTime)
    config_hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(20))
    edges: Mapped[list] = mapped_column(JSON)
    categories: Mapped[list] = mapped_column(JSON)
    labels: Mapped[list] = mapped_column(JSON)
    counts: Mapped[list] = mapped_column(JSON)
    other: Mapped[float] = mapped_column(Double)
    missing: Mapped[float] = mapped_column(Double)
    total: Mapped[float] = mapped_column(Double)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    complete: Mapped[bool] = mapped_column(Boolean, server_default=true())
    # Segmented monitors: on a column's row, per segment its counts (value bins, other,
    # missing); on the row of kind "segments" (column "segment"), whose categories are the
    # member segments and counts their reference rows, {"distinct": combinations seen}.
    segment_counts: Mapped[list | dict | None] = mapped_column(JSON)

    __table_args__ = (
        # Named by hand: the convention's name would pass PostgreSQL's 63-byte limit.
        UniqueConstraint(
            "monitor",
            "column",
            "reference_start",
            "reference_end",
            "config_hash",
            name="uq_reference_profiles_range",
        ),
    )


class Lease(Base):
    """Which replica computes a monitor window, until ``expires_at`` (database clock).

    Claimed atomically with INSERT … ON CONFLICT; a crashed replica's lease
    expires and is taken over. Transaction-scoped, unlike session advisory
    locks, so it survives connection pools and PgBouncer.
    """

    __tablename__ = "leases"

    monitor: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_end: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SliceCounts(Base):
    """Bin counts of one monitor over one time slice, under one profile.

    A window's counts are the sum of its slices, so each source row is counted
    once. ``profile_key`` fingerprints the bins the slice was counted in (edges,
    categories); a slice row never mixes profiles. ``sealed`` slices ended at
    least ``lateness`` before they were counted and are never read again.
    """

    __tablename__ = "slice_counts"

    monitor: Mapped[str] = mapped_column(String(200), primary_key=True)
    profile_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    slice_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    slice_end: Mapped[datetime] = mapped_column(UTCDateTime)
    counts: Mapped[dict | list] = mapped_column(JSON)
    rows: Mapped[int] = mapped_column(BigInteger)
    sealed: Mapped[bool] = mapped_column(Boolean)
    counted_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_slice_counts_monitor_slice_end", "monitor", "slice_end"),)


class WindowHealth(Base):
    """The health of one monitor's window beside its drift: volume and freshness (README, "Data health").

    ``rows`` against ``expected`` (the reference's rows for the same length: seasonal
    where the reference is) with the rate test's ``p_value`` gives ``status``;
    ``newest_row_at`` is the start of the newest slice (the window, where a monitor
    counts whole windows) that held rows: the freshness the run saw, to one slice.
    """

    __tablename__ = "window_health"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    monitor: Mapped[str] = mapped_column(String(200))
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    window_end: Mapped[datetime] = mapped_column(UTCDateTime)
    rows: Mapped[float] = mapped_column(Double)
    reference_rows: Mapped[float] = mapped_column(Double)
    expected: Mapped[float | None] = mapped_column(Double)
    change: Mapped[float | None] = mapped_column(Double)
    p_value: Mapped[float | None] = mapped_column(Double)
    status: Mapped[str] = mapped_column(String(20))
    threshold_warning: Mapped[float | None] = mapped_column(Double)
    threshold_critical: Mapped[float | None] = mapped_column(Double)
    newest_row_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # results_fingerprint with the volume settings: a changed check recomputes the row.
    fingerprint: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("monitor", "window_end"),)


class SourceSchema(Base):
    """What a monitor's source table looked like, and how it changed (README, "Data health").

    ``baseline`` ({column: type}) is the table as it was when the monitor's reference
    profile was counted; ``changes`` names what differs now (dropped, retyped, added
    columns) and ``status`` sums them up: ``ok``, ``changed`` (columns added: news, not
    harm) or ``broken`` (a watched column dropped or retyped).
    """

    __tablename__ = "source_schemas"

    monitor: Mapped[str] = mapped_column(String(200), primary_key=True)
    baseline: Mapped[dict] = mapped_column(JSON)
    baseline_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(20))
    changes: Mapped[list] = mapped_column(JSON)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The source's fingerprint (table, settings, database: driftmon/fingerprints.py): a baseline
    # of another table or database is not compared with this one.
    fingerprint: Mapped[str | None] = mapped_column(String(64))


class MultivariateFit(Base):
    """A monitor's multivariate fit (README, "Multivariate drift"): NannyML's imputation, count
    encoding, scaler and PCA, computed from the reference's moments, and its thresholds.

    ``fingerprint`` covers what shaped it (the source, the columns, ``n_components``, the
    reference range); ``fit_key`` is the fingerprint of its content, which the slices and
    results it produced carry. ``fit`` holds its numbers as exact JSON floats.
    """

    __tablename__ = "multivariate_fits"

    monitor: Mapped[str] = mapped_column(String(200), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    fit_key: Mapped[str] = mapped_column(String(64))
    range_start: Mapped[datetime] = mapped_column(UTCDateTime)
    range_end: Mapped[datetime] = mapped_column(UTCDateTime)
    fit: Mapped[dict] = mapped_column(JSON)
    # The reference's window-sized chunks: their values, for thresholds calibrated on them.
    chunks: Mapped[dict] = mapped_column(JSON)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MultivariateSlice(Base):
    """One slice's reconstruction-error and moment sums under one fit: they add up to a window's."""

    __tablename__ = "multivariate_slices"

    monitor: Mapped[str] = mapped_column(String(200), primary_key=True)
    fit_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    slice_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    slice_end: Mapped[datetime] = mapped_column(UTCDateTime)
    sums: Mapped[dict] = mapped_column(JSON)
    rows: Mapped[int] = mapped_column(BigInteger)
    sealed: Mapped[bool] = mapped_column(Boolean)
    counted_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_multivariate_slices_monitor_slice_end", "monitor", "slice_end"),)


class MultivariateResult(Base):
    """A window's multivariate drift: its ``"column": "__multivariate__"`` object of ``run-once``."""

    __tablename__ = "multivariate_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    monitor: Mapped[str] = mapped_column(String(200))
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    window_end: Mapped[datetime] = mapped_column(UTCDateTime)
    reference_start: Mapped[datetime] = mapped_column(UTCDateTime)
    reference_end: Mapped[datetime] = mapped_column(UTCDateTime)
    rows: Mapped[float] = mapped_column(Double)
    reconstruction_error: Mapped[float | None] = mapped_column(Double)
    sampling_error: Mapped[float | None] = mapped_column(Double)
    threshold_lower: Mapped[float | None] = mapped_column(Double)
    threshold_upper: Mapped[float | None] = mapped_column(Double)
    gaussian_kl: Mapped[float | None] = mapped_column(Double)
    gaussian_kl_threshold: Mapped[float | None] = mapped_column(Double)
    status: Mapped[str] = mapped_column(String(20))
    # The columns that moved most:
    # {"gaussian_kl": [[column, share], ...], "residuals": [[column, now, reference], ...]}.
    contributions: Mapped[dict] = mapped_column(JSON)
    fit_key: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("monitor", "window_end"),)
