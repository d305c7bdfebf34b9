"""payment_totals: payments counted and summed per lab, currency, status and gateway, kept by
triggers, so the transactions page's totals read a few rows instead of every payment

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 17:00:00.000000
"""

from alembic import op
import sqlalchemy as sa

from portal import totals_ddl


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'payment_totals',
        sa.Column('lab_id', sa.Integer(), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('status', sa.String(length=24), nullable=False),
        sa.Column('gateway', sa.String(length=32), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.Column('amount', sa.BigInteger(), nullable=False),
        sa.Column('refunded', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['lab_id'], ['labs.id'], name=op.f('fk_payment_totals_lab_id')),
        sa.PrimaryKeyConstraint('lab_id', 'currency', 'status', 'gateway',
                                name=op.f('pk_payment_totals')),
    )
    dialect = op.get_bind().dialect.name
    # Filled and then kept: on PostgreSQL the lock stops payments changing in between.
    if dialect == "postgresql":
        op.execute("LOCK TABLE payments IN SHARE ROW EXCLUSIVE MODE")
    op.execute(totals_ddl.rebuild(slots=None))
    for statement in totals_ddl.create(dialect, slots=None):
        op.execute(statement)


def downgrade() -> None:
    for statement in totals_ddl.drop(op.get_bind().dialect.name):
        op.execute(statement)
    op.drop_table('payment_totals')
