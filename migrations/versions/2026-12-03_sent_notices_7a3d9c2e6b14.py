"""sent_notices: emails that must go out at most once, claimed by a unique key

Revision ID: 7a3d9c2e6b14
Revises: 5e8b2f4c1a90
Create Date: 2026-12-03 06:20:00.000000+00:00
"""

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

revision = "7a3d9c2e6b14"
down_revision = "5e8b2f4c1a90"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sent_notices",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sent_notices")),
        sa.UniqueConstraint("key", name=op.f("uq_sent_notices_key")),
    )
    with op.batch_alter_table("sent_notices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sent_notices_kind"), ["kind"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sent_notices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sent_notices_kind"))
    op.drop_table("sent_notices")
