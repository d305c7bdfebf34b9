"""patient details kept on each link, links found by patient, and the lab's smallest part payment

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 16:40:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('labs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('min_part_payment', sa.BigInteger(), nullable=True))
    # recreate='never': columns added in place, so the expression index on bill_reference stays.
    with op.batch_alter_table('online_payments', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('patient_name', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('patient_phone', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('patient_email', sa.String(length=254), nullable=True))
    # Links made before keep the details their patient record has now: the best there is.
    op.execute(
        "UPDATE online_payments SET "
        "patient_name = (SELECT name FROM customers WHERE customers.id = online_payments.customer_id), "
        "patient_phone = (SELECT phone FROM customers WHERE customers.id = online_payments.customer_id), "
        "patient_email = (SELECT email FROM customers WHERE customers.id = online_payments.customer_id) "
        "WHERE customer_id IS NOT NULL")
    op.create_index('ix_online_payments_lab_patient_phone', 'online_payments',
                    ['lab_id', 'patient_phone'])


def downgrade() -> None:
    op.drop_index('ix_online_payments_lab_patient_phone', table_name='online_payments')
    with op.batch_alter_table('online_payments', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('patient_email')
        batch_op.drop_column('patient_phone')
        batch_op.drop_column('patient_name')
    with op.batch_alter_table('labs', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('min_part_payment')
