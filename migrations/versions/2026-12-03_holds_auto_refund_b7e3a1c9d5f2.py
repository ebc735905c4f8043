"""stock_holds (#13 item 5), and orders.refund_reason: why an order was refunded automatically (item 4)

Revision ID: b7e3a1c9d5f2
Revises: e3a9d1f7b642
Create Date: 2026-12-03 07:05:00.000000+00:00
"""

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

revision = "b7e3a1c9d5f2"
down_revision = "e3a9d1f7b642"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refund_reason", sa.String(length=255), server_default="", nullable=False))
    op.create_table(
        "stock_holds",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("order_id", GUID(length=16), nullable=False),
        sa.Column("product_id", GUID(length=16), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("expires_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("released_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("converted_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_stock_holds_stock_hold_quantity_positive")),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_stock_holds_order_id_orders"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_stock_holds_product_id_products"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stock_holds")),
    )
    with op.batch_alter_table("stock_holds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stock_holds_order_id"), ["order_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_stock_holds_product_id"), ["product_id"], unique=False)
        batch_op.create_index(
            "ix_stock_holds_open_expires", ["released_at", "converted_at", "expires_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("stock_holds")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("refund_reason")
