"""jobs: the dedupe key in an indexed column, so enqueue no longer reads every queued payload

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 18:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dedupe', sa.String(length=200), nullable=True))
        batch_op.create_index('ix_jobs_kind_dedupe', ['kind', 'dedupe'], unique=False)
    # Jobs still queued keep being deduplicated: their key moves from the payload.
    if op.get_bind().dialect.name == 'postgresql':
        key = "payload->>'dedupe'"
    else:
        key = "json_extract(payload, '$.dedupe')"
    op.execute(f"UPDATE jobs SET dedupe = {key} WHERE status = 'queued' AND {key} IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_kind_dedupe')
        batch_op.drop_column('dedupe')
