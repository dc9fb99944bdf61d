"""segments: results per segment, reference profiles counted per segment

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

- results.segment ({column: value}, NULL for the whole population) and
  results.segment_key ('' for the whole population), which joins the unique
  key: a segmented monitor stores one row per (column, segment) and window;
- reference_profiles.segment_counts: a column's reference counts per segment,
  and on the segments row, how many segment values the reference held.

Rows stored before this revision are whole-population rows (segment_key '').
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("segment", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("segment_key", sa.String(length=1000), server_default="", nullable=False))
        batch.drop_constraint("uq_results_monitor_column_window_end", type_="unique")
        batch.create_unique_constraint(
            "uq_results_monitor_column_segment_key_window_end", ["monitor", "column", "segment_key", "window_end"])
    with op.batch_alter_table("reference_profiles") as batch:
        batch.add_column(sa.Column("segment_counts", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reference_profiles") as batch:
        batch.drop_column("segment_counts")
    # Segment rows have no place in the old unique key: only the whole population stays.
    op.execute(sa.text("DELETE FROM results WHERE segment_key <> ''"))
    with op.batch_alter_table("results") as batch:
        batch.drop_constraint("uq_results_monitor_column_segment_key_window_end", type_="unique")
        batch.create_unique_constraint("uq_results_monitor_column_window_end", ["monitor", "column", "window_end"])
        batch.drop_column("segment_key")
        batch.drop_column("segment")
