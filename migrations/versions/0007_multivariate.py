"""multivariate drift: each monitor's fit, per-slice sums, per-window results

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08

- multivariate_fits: per monitor, the reference fit (imputation, count encoding,
  scaler, PCA) from in-database moments, and its reference chunks' values;
- multivariate_slices: per slice, the reconstruction-error and moment sums;
- multivariate_results: per window, the reconstruction error, the Gaussian KL,
  their thresholds and a status.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from driftmon.store.models import UTCDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "multivariate_fits",
        sa.Column("monitor", sa.String(length=200), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("fit_key", sa.String(length=64), nullable=False),
        sa.Column("range_start", UTCDateTime(), nullable=False),
        sa.Column("range_end", UTCDateTime(), nullable=False),
        sa.Column("fit", sa.JSON(), nullable=False),
        sa.Column("chunks", sa.JSON(), nullable=False),
        sa.Column("computed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("monitor", name=op.f("pk_multivariate_fits")),
    )
    op.create_table(
        "multivariate_slices",
        sa.Column("monitor", sa.String(length=200), nullable=False),
        sa.Column("fit_key", sa.String(length=64), nullable=False),
        sa.Column("slice_start", UTCDateTime(), nullable=False),
        sa.Column("slice_end", UTCDateTime(), nullable=False),
        sa.Column("sums", sa.JSON(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("sealed", sa.Boolean(), nullable=False),
        sa.Column("counted_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("monitor", "fit_key", "slice_start", name=op.f("pk_multivariate_slices")),
    )
    op.create_index("ix_multivariate_slices_monitor_slice_end", "multivariate_slices",
                    ["monitor", "slice_end"], unique=False)
    op.create_table(
        "multivariate_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("monitor", sa.String(length=200), nullable=False),
        sa.Column("window_start", UTCDateTime(), nullable=False),
        sa.Column("window_end", UTCDateTime(), nullable=False),
        sa.Column("reference_start", UTCDateTime(), nullable=False),
        sa.Column("reference_end", UTCDateTime(), nullable=False),
        sa.Column("rows", sa.Double(), nullable=False),
        sa.Column("reconstruction_error", sa.Double(), nullable=True),
        sa.Column("sampling_error", sa.Double(), nullable=True),
        sa.Column("threshold_lower", sa.Double(), nullable=True),
        sa.Column("threshold_upper", sa.Double(), nullable=True),
        sa.Column("gaussian_kl", sa.Double(), nullable=True),
        sa.Column("gaussian_kl_threshold", sa.Double(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("contributions", sa.JSON(), nullable=False),
        sa.Column("fit_key", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("computed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_multivariate_results")),
        sa.UniqueConstraint("monitor", "window_end", name=op.f("uq_multivariate_results_monitor_window_end")),
    )


def downgrade() -> None:
    op.drop_table("multivariate_results")
    op.drop_index("ix_multivariate_slices_monitor_slice_end", table_name="multivariate_slices")
    op.drop_table("multivariate_slices")
    op.drop_table("multivariate_fits")
