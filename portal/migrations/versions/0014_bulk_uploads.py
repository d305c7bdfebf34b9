"""bulk uploads: a checked links file kept server-side between its check and its creation

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 16:30:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'bulk_uploads',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('public_id', sa.String(length=43), nullable=False),
        sa.Column('lab_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('filename', sa.String(length=255), nullable=False),
        sa.Column('row_count', sa.Integer(), nullable=False),
        sa.Column('bad_count', sa.Integer(), nullable=False),
        sa.Column('rows', sa.JSON(), nullable=False),
        sa.Column('results', sa.JSON(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=False),
        sa.Column('completed_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['lab_id'], ['labs.id'], name=op.f('fk_bulk_uploads_lab_id')),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_bulk_uploads_user_id')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_bulk_uploads')),
        sa.UniqueConstraint('public_id', name=op.f('uq_bulk_uploads_public_id')),
    )
    op.create_index('ix_bulk_uploads_expires_at', 'bulk_uploads', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_bulk_uploads_expires_at', table_name='bulk_uploads')
    op.drop_table('bulk_uploads')
