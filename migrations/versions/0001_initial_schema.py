"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import driftmon.store.models

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('reference_profiles',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('monitor', sa.String(length=200), nullable=False),
    sa.Column('column', sa.String(length=200), nullable=False),
    sa.Column('reference_start', driftmon.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('reference_end', driftmon.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('config_hash', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('edges', sa.JSON(), nullable=False),
    sa.Column('categories', sa.JSON(), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('counts', sa.JSON(), nullable=False),
    sa.Column('other', sa.Double(), nullable=False),
    sa.Column('missing', sa.Double(), nullable=False),
    sa.Column('total', sa.Double(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', driftmon.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reference_profiles')),
    sa.UniqueConstraint('monitor', 'column', 'reference_start', 'reference_end', 'config_hash', name='uq_reference_profiles_range')
    )
    op.create_table('runs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('monitor', sa.String(length=200), nullable=False),
    sa.Column('scheduled_at', driftmon.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('started_at', driftmon.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', driftmon.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('window_start', driftmon.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('window_end', driftmon.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('reference_start', driftmon.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('reference_end', driftmon.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('columns', sa.Integer(), nullable=True),
    sa.Column('rows_scanned', sa.BigInteger(), nullable=True),
    sa.Column('duration_seconds', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs'))
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index('ix_runs_monitor_window_end', ['monitor', 'window_end'], unique=False)

    op.create_table('results',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('monitor', sa.String(length=200), nullable=False),
    sa.Column('column', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('window_start', driftmon.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('window_end', driftmon.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('reference_start', driftmon.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('reference_end', driftmon.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('samples_current', sa.Double(), nullable=False),
    sa.Column('samples_reference', sa.Double(), nullable=False),
    sa.Column('missing_current', sa.Double(), nullable=False),
    sa.Column('missing_ratio', sa.Double(), nullable=True),
    sa.Column('kl', sa.Double(), nullable=True),
    sa.Column('psi', sa.Double(), nullable=True),
    sa.Column('js', sa.Double(), nullable=True),
    sa.Column('statistic', sa.String(length=10), nullable=False),
    sa.Column('threshold_warning', sa.Double(), nullable=False),
    sa.Column('threshold_critical', sa.Double(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('computed_at', driftmon.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_results_run_id_runs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_results')),
    sa.UniqueConstraint('monitor', 'column', 'window_end', name=op.f('uq_results_monitor_column_window_end'))
    )
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.create_index('ix_results_monitor_window_end', ['monitor', 'window_end'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.drop_index('ix_results_monitor_window_end')

    op.drop_table('results')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_monitor_window_end')

    op.drop_table('runs')
    op.drop_table('reference_profiles')
