"""orders.refund_reason: why an order was refunded automatically (charged but not delivered, #13 item 4)

Revision ID: b7e3a1c9d5f2
Revises: d8f2b6c1e5a4
Create Date: 2026-12-03 07:05:00.000000+00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "b7e3a1c9d5f2"
down_revision = "d8f2b6c1e5a4"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refund_reason", sa.String(length=255), server_default="", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("refund_reason")
