"""data health: each window's volume and freshness, each monitor's source schema

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

- window_health: per monitor and window, the row count against the reference's
  expected count, the rate test, a status, and the newest slice that held rows;
- source_schemas: per monitor, the source table's columns when its reference was
  counted, and what changed since (dropped, retyped, added columns).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from driftmon.store.models import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "window_health",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("monitor", sa.String(length=200), nullable=False),
        sa.Column("window_start", UTCDateTime(), nullable=False),
        sa.Column("window_end", UTCDateTime(), nullable=False),
        sa.Column("rows", sa.Double(), nullable=False),
        sa.Column("reference_rows", sa.Double(), nullable=False),
        sa.Column("expected", sa.Double(), nullable=True),
        sa.Column("change", sa.Double(), nullable=True),
        sa.Column("p_value", sa.Double(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("threshold_warning", sa.Double(), nullable=True),
        sa.Column("threshold_critical", sa.Double(), nullable=True),
        sa.Column("newest_row_at", UTCDateTime(), nullable=True),
        sa.Column("computed_at", UTCDateTime(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_window_health")),
        sa.UniqueConstraint("monitor", "window_end", name=op.f("uq_window_health_monitor_window_end")),
    )
    op.create_table(
        "source_schemas",
        sa.Column("monitor", sa.String(length=200), nullable=False),
        sa.Column("baseline", sa.JSON(), nullable=False),
        sa.Column("baseline_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("checked_at", UTCDateTime(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("monitor", name=op.f("pk_source_schemas")),
    )


def downgrade() -> None:
    op.drop_table("source_schemas")
    op.drop_table("window_health")
