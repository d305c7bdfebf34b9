"""transactions: keyset indexes per filter, case-insensitive prefix search, timeline per payment

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 15:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# lower(x) with text_pattern_ops: LIKE 'prefix%' uses the index whatever the collation.
LOWER_INDEXES = (
    ('ix_customers_lab_name_lower', 'customers', 'name', 'name_lower'),
    ('ix_customers_lab_email_lower', 'customers', 'email', 'email_lower'),
    ('ix_online_payments_lab_bill_lower', 'online_payments', 'bill_reference', 'bill_lower'),
)


def upgrade() -> None:
    # Indexes only: no table rebuild on SQLite.
    op.create_index('ix_payments_lab_status_created', 'payments',
                    ['lab_id', 'status', 'created_at', 'id'], unique=False)
    op.create_index('ix_payments_lab_gateway_created', 'payments',
                    ['lab_id', 'gateway', 'created_at', 'id'], unique=False)
    op.create_index('ix_payments_lab_currency_created', 'payments',
                    ['lab_id', 'currency', 'created_at', 'id'], unique=False)
    op.create_index('ix_payments_lab_gateway_txn', 'payments',
                    ['lab_id', 'gateway_transaction_id'], unique=False)
    op.create_index('ix_online_payments_customer', 'online_payments', ['customer_id', 'id'],
                    unique=False)
    op.create_index('ix_pgt_payment', 'payment_gateway_transactions', ['payment_id', 'id'],
                    unique=False)
    for name, table, column, label in LOWER_INDEXES:
        op.create_index(name, table, ['lab_id', sa.func.lower(sa.column(column)).label(label)],
                        unique=False, postgresql_ops={label: 'text_pattern_ops'})


def downgrade() -> None:
    for name, table, _column, _label in reversed(LOWER_INDEXES):
        op.drop_index(name, table_name=table)
    op.drop_index('ix_pgt_payment', table_name='payment_gateway_transactions')
    op.drop_index('ix_online_payments_customer', table_name='online_payments')
    op.drop_index('ix_payments_lab_gateway_txn', table_name='payments')
    op.drop_index('ix_payments_lab_currency_created', table_name='payments')
    op.drop_index('ix_payments_lab_gateway_created', table_name='payments')
    op.drop_index('ix_payments_lab_status_created', table_name='payments')
