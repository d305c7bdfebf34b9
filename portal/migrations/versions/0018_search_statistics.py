"""Larger histograms (statistics target 1000) for the lower(...) search columns on
PostgreSQL: at the default 100, a prefix search's row estimate could land on a whole histogram
bin and the planner then read every payment of the lab instead of the few that matched

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 21:40:00.000000
"""

from alembic import op


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None

# Frozen here: models.SEARCH_STATISTICS may change in a later migration.
INDEXES = ('ix_customers_lab_name_lower', 'ix_customers_lab_email_lower',
           'ix_online_payments_lab_bill_lower')


def _set(target: int) -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for index in INDEXES:
            op.execute(f'ALTER INDEX {index} ALTER COLUMN 2 SET STATISTICS {target}')


def upgrade() -> None:
    _set(1000)


def downgrade() -> None:
    _set(-1)
