"""leases: one replica computes each monitor window

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import driftmon.store.models

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("monitor", sa.String(length=200), nullable=False),
        sa.Column("window_end", driftmon.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("expires_at", driftmon.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("monitor", "window_end", name=op.f("pk_leases")),
    )


def downgrade() -> None:
    op.drop_table("leases")
