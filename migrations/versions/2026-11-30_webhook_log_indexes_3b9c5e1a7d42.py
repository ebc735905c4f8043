"""webhook log indexes

Revision ID: 3b9c5e1a7d42
Revises: 45af9a8bb32c
Create Date: 2026-11-30 01:30:00.000000+00:00
"""

from alembic import op

revision = "3b9c5e1a7d42"
down_revision = "45af9a8bb32c"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Recent-events counts (health card, alert banner) and the event log's default sort; recent-orders count.
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.create_index("ix_stripe_events_received_at", ["received_at"], unique=False)
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_created_at", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_created_at")
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.drop_index("ix_stripe_events_received_at")
