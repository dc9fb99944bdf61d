"""stored state that can be trusted: results' fingerprints, complete reference profiles

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

- results.fingerprint: the settings that made a stored window's numbers, so a
  backfill recomputes windows whose config changed;
- reference_profiles.complete: a profile counted before its range ended, or
  with fewer than min_samples rows, is recounted until it is complete (rows
  stored before this revision count as complete).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("fingerprint", sa.String(length=64), nullable=True))
    with op.batch_alter_table("reference_profiles") as batch:
        batch.add_column(sa.Column("complete", sa.Boolean(), server_default=sa.true(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("reference_profiles") as batch:
        batch.drop_column("complete")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("fingerprint")
