"""lab logo: the image itself, kept and served by the portal (no third-party request)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 10:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain nullable columns: no table rebuild on SQLite. logo_url stays, unused.
    op.add_column('labs', sa.Column('logo_image', sa.LargeBinary(), nullable=True))
    op.add_column('labs', sa.Column('logo_content_type', sa.String(length=32), nullable=True))
    op.add_column('labs', sa.Column('logo_sha256', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('labs', schema=None) as batch_op:
        batch_op.drop_column('logo_sha256')
        batch_op.drop_column('logo_content_type')
        batch_op.drop_column('logo_image')
