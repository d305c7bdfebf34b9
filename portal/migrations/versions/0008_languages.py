"""languages: a lab's default language for patients, and each link's own

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 17:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A server default fills existing labs; links made before stay NULL (the browser decides).
    with op.batch_alter_table('labs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('default_language', sa.String(length=16),
                                      nullable=False, server_default='en'))
    with op.batch_alter_table('online_payments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('language', sa.String(length=16), nullable=True))


def downgrade() -> None:
    # recreate='never': SQLite (3.35+) drops the column in place. A batch rebuild would copy
    # online_payments without its expression index (ix_online_payments_lab_bill_lower).
    with op.batch_alter_table('online_payments', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('language')
    with op.batch_alter_table('labs', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('default_language')
