"""Membership sales tax (#13 item 6): stripe_tax_rates (our tax table's components as Stripe Tax Rates),
users.billing_province, and the tax Stripe charged on each mirrored invoice

Revision ID: f1c7a2e9b3d5
Revises: a4c8e2f61d37
Create Date: 2026-12-03 08:45:00.000000+00:00
"""

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "f1c7a2e9b3d5"
down_revision = "a4c8e2f61d37"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stripe_tax_rates",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("code", sa.String(length=8), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("province", sa.String(length=2), nullable=False),
        sa.Column("rate", sa.String(length=16), nullable=False),
        sa.Column("stripe_tax_rate_id", sa.String(length=255), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_tax_rates")),
        sa.UniqueConstraint("key", name=op.f("uq_stripe_tax_rates_key")),
    )
    with op.batch_alter_table("stripe_tax_rates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stripe_tax_rates_province"), ["province"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_stripe_tax_rates_stripe_tax_rate_id"), ["stripe_tax_rate_id"], unique=False
        )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("billing_province", sa.String(length=2), nullable=True))
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tax", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(
            sa.Column(
                "tax_breakdown",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                server_default="[]",
                nullable=False,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_column("tax_breakdown")
        batch_op.drop_column("tax")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("billing_province")
    with op.batch_alter_table("stripe_tax_rates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_tax_rates_stripe_tax_rate_id"))
        batch_op.drop_index(batch_op.f("ix_stripe_tax_rates_province"))
    op.drop_table("stripe_tax_rates")
