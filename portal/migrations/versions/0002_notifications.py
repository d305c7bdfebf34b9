"""notifications: dedupe key, index per link

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 14:30:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain column and indexes: no table rebuild on SQLite.
    op.add_column('notifications', sa.Column('dedupe_key', sa.String(length=120), nullable=True))
    op.create_index('ix_notifications_dedupe_key', 'notifications', ['dedupe_key'], unique=True)
    op.create_index('ix_notifications_link', 'notifications', ['online_payment_id', 'id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_notifications_link', table_name='notifications')
    op.drop_index('ix_notifications_dedupe_key', table_name='notifications')
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_column('dedupe_key')
