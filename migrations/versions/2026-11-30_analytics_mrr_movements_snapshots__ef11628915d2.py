"""analytics: MRR movements and daily snapshots; indexes for the dashboard's range aggregates

Revision ID: ef11628915d2
Revises: 3c2fc7515dd6
Create Date: 2026-11-30 00:49:15.694820+00:00
"""

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

sa.GUID = GUID  # autogenerate renders advanced-alchemy types as sa.<Type>
sa.DateTimeUTC = DateTimeUTC

revision = 'ef11628915d2'
down_revision = '3c2fc7515dd6'
branch_labels = None
depends_on = None

# (table, index name, columns): one-column range filters of the dashboard.
INDEXES = [
    ('orders', 'ix_orders_paid_at', ['paid_at']),
    ('refunds', 'ix_refunds_created_at', ['created_at']),
    ('payments', 'ix_payments_created_at', ['created_at']),
    ('users', 'ix_users_created_at', ['created_at']),
    ('credit_entries', 'ix_credit_entries_kind_created', ['kind', 'created_at']),
    ('subscriptions', 'ix_subscriptions_trial_end', ['trial_end']),
]


def upgrade() -> None:
    op.create_table('mrr_daily_snapshots',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('mrr', sa.Integer(), nullable=False),
    sa.Column('subscribers', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('day', 'currency', name=op.f('pk_mrr_daily_snapshots'))
    )
    op.create_table('mrr_movements',
    sa.Column('user_id', sa.GUID(length=16), nullable=False),
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('subscription_id', sa.GUID(length=16), nullable=True),
    sa.Column('occurred_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('mrr_delta', sa.Integer(), nullable=False),
    sa.Column('mrr_after', sa.Integer(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.ForeignKeyConstraint(['subscription_id'], ['subscriptions.id'], name=op.f('fk_mrr_movements_subscription_id_subscriptions'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_mrr_movements_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'seq', name=op.f('pk_mrr_movements'))
    )
    with op.batch_alter_table('mrr_movements', schema=None) as batch_op:
        batch_op.create_index('ix_mrr_movements_occurred_kind', ['occurred_at', 'kind'], unique=False)
    for table, name, columns in INDEXES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    for table, name, _columns in reversed(INDEXES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(name)
    with op.batch_alter_table('mrr_movements', schema=None) as batch_op:
        batch_op.drop_index('ix_mrr_movements_occurred_kind')
    op.drop_table('mrr_movements')
    op.drop_table('mrr_daily_snapshots')
