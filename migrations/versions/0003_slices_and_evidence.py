"""slices, stored window counts, significance

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

- slice_counts: per-slice bin counts, so a cycle counts only new source rows;
- results: the window's bins and counts (explain without the source), and the
  G-test p-value with its Benjamini-Hochberg q-value;
- runs.trigger: why a run happened (schedule, late data, recount, ...).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import driftmon.store.models

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RESULT_COLUMNS = [
    ("p_value", sa.Double()),
    ("q_value", sa.Double()),
    ("labels", sa.JSON()),
    ("reference_counts", sa.JSON()),
    ("current_counts", sa.JSON()),
]


def upgrade() -> None:
    op.create_table(
        "slice_counts",
        sa.Column("monitor", sa.String(length=200), nullable=False),
        sa.Column("profile_key", sa.String(length=64), nullable=False),
        sa.Column("slice_start", driftmon.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("slice_end", driftmon.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("sealed", sa.Boolean(), nullable=False),
        sa.Column("counted_at", driftmon.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("monitor", "profile_key", "slice_start", name=op.f("pk_slice_counts")),
    )
    op.create_index("ix_slice_counts_monitor_slice_end", "slice_counts", ["monitor", "slice_end"])
    with op.batch_alter_table("results") as batch:
        for name, column_type in _RESULT_COLUMNS:
            batch.add_column(sa.Column(name, column_type, nullable=True))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("trigger", sa.String(length=20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("trigger")
    with op.batch_alter_table("results") as batch:
        for name, _ in reversed(_RESULT_COLUMNS):
            batch.drop_column(name)
    op.drop_index("ix_slice_counts_monitor_slice_end", table_name="slice_counts")
    op.drop_table("slice_counts")
