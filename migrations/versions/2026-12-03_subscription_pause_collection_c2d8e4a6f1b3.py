"""subscriptions.pause_collection: Stripe's paused collection, mirrored (staff pause it from the back office)

Revision ID: c2d8e4a6f1b3
Revises: f1c7a2e9b3d5
Create Date: 2026-12-03 09:00:00.000000+00:00
"""

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision = "c2d8e4a6f1b3"
down_revision = "f1c7a2e9b3d5"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pause_collection", sa.String(length=24), server_default="", nullable=False))
        batch_op.add_column(sa.Column("pause_resumes_at", DateTimeUTC(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_column("pause_resumes_at")
        batch_op.drop_column("pause_collection")
