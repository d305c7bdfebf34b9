"""payment_totals: each key spread over 16 slots (payment id modulo 16), so that a lab's
concurrent payments no longer queue on one totals row's lock until they commit

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 20:10:00.000000
"""

from alembic import op
import sqlalchemy as sa

from portal import totals_ddl


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

SLOTS = 16  # fixed here: totals_ddl.SLOTS may change in a later migration


def _table(slotted: bool) -> None:
    columns = [
        sa.Column('lab_id', sa.Integer(), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('status', sa.String(length=24), nullable=False),
        sa.Column('gateway', sa.String(length=32), nullable=False),
    ]
    key = ['lab_id', 'currency', 'status', 'gateway']
    if slotted:
        columns.append(sa.Column('slot', sa.SmallInteger(), nullable=False))
        key.append('slot')
    op.create_table(
        'payment_totals', *columns,
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.Column('amount', sa.BigInteger(), nullable=False),
        sa.Column('refunded', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['lab_id'], ['labs.id'], name=op.f('fk_payment_totals_lab_id')),
        sa.PrimaryKeyConstraint(*key, name=op.f('pk_payment_totals')),
    )


def _reshape(slots: int | None) -> None:
    dialect = op.get_bind().dialect.name
    for statement in totals_ddl.drop(dialect):
        op.execute(statement)
    # Rebuilt from the payments: on PostgreSQL the lock stops payments changing in between.
    if dialect == "postgresql":
        op.execute("LOCK TABLE payments IN SHARE ROW EXCLUSIVE MODE")
    op.drop_table('payment_totals')
    _table(slotted=slots is not None)
    op.execute(totals_ddl.rebuild(slots=slots))
    for statement in totals_ddl.create(dialect, slots=slots):
        op.execute(statement)


def upgrade() -> None:
    _reshape(SLOTS)


def downgrade() -> None:
    _reshape(None)
