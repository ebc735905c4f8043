"""bookable resources in the back office: capacity, slot length, local opening hours, booking horizon, closures

Revision ID: 9d41c7e2a0b3
Revises: 3b9c5e1a7d42
Create Date: 2026-12-02 18:00:00.000000+00:00
"""

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "9d41c7e2a0b3"
down_revision = "3b9c5e1a7d42"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # Existing resources keep their hand-made slots: empty opening hours mean "slots are rows", as before.
    with op.batch_alter_table("bookable_resources", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=10), server_default="room", nullable=False))
        batch_op.add_column(sa.Column("capacity", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("slot_minutes", sa.Integer(), server_default="60", nullable=False))
        batch_op.add_column(sa.Column("opening_hours", JSON, server_default="{}", nullable=False))
        batch_op.add_column(sa.Column("book_ahead_days", sa.Integer(), server_default="14", nullable=False))
    op.create_table(
        "resource_closures",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("resource_id", GUID(length=16), nullable=True),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.CheckConstraint("ends_on >= starts_on", name=op.f("ck_resource_closures_closure_dates_in_order")),
        sa.ForeignKeyConstraint(
            ["resource_id"],
            ["bookable_resources.id"],
            name=op.f("fk_resource_closures_resource_id_bookable_resources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resource_closures")),
    )
    with op.batch_alter_table("resource_closures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_resource_closures_resource_id"), ["resource_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("resource_closures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_resource_closures_resource_id"))
    op.drop_table("resource_closures")
    with op.batch_alter_table("bookable_resources", schema=None) as batch_op:
        batch_op.drop_column("book_ahead_days")
        batch_op.drop_column("opening_hours")
        batch_op.drop_column("slot_minutes")
        batch_op.drop_column("capacity")
        batch_op.drop_column("kind")
