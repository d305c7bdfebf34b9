"""whatsapp: a third message channel beside SMS and email

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 17:00:00.000000
"""

import warnings

from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

TABLE = 'notifications'
CHECK = 'notification_channel'  # ck_notifications_notification_channel by the naming convention
BEFORE = ('email', 'sms')
AFTER = BEFORE + ('whatsapp',)


def _allow(channels: tuple[str, ...]) -> None:
    # SQLite cannot alter a CHECK: batch mode rebuilds the table with the new one.
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', 'Skipped unsupported reflection of expression-based',
                                sa.exc.SAWarning)
        with op.batch_alter_table(TABLE, schema=None) as batch_op:
            batch_op.drop_constraint(op.f(f'ck_{TABLE}_{CHECK}'), type_='check')
            batch_op.create_check_constraint(op.f(f'ck_{TABLE}_{CHECK}'),
                                             sa.column('channel').in_(channels))


def upgrade() -> None:
    _allow(AFTER)


def downgrade() -> None:
    # A WhatsApp message cannot become an SMS: its rows go, the links they were about stay.
    op.execute(sa.text(f"DELETE FROM {TABLE} WHERE channel = 'whatsapp'"))
    _allow(BEFORE)
