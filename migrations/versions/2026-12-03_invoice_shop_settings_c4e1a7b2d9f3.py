"""shop settings: one row an admin edits at /admin/settings (legal name, tax numbers, time zone, ...)

Revision ID: c4e1a7b2d9f3
Revises: 7a3d9c2e6b14
Create Date: 2026-12-03 06:10:00.000000+00:00
"""

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

sa.GUID = GUID  # autogenerate renders advanced-alchemy types as sa.<Type>
sa.DateTimeUTC = DateTimeUTC

revision = "c4e1a7b2d9f3"
down_revision = "7a3d9c2e6b14"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No row means the defaults; the first save inserts it.
    op.create_table('shop_settings',
    sa.Column('id', sa.GUID(length=16), nullable=False),
    sa.Column('key', sa.String(length=16), nullable=False),
    sa.Column('legal_name', sa.String(length=200), nullable=False),
    sa.Column('address', sa.Text(), nullable=False),
    sa.Column('gst_hst_number', sa.String(length=40), nullable=False),
    sa.Column('qst_number', sa.String(length=40), nullable=False),
    sa.Column('support_email', sa.String(length=320), nullable=False),
    sa.Column('time_zone', sa.String(length=64), nullable=False),
    sa.Column('receipt_footer', sa.Text(), nullable=False),
    sa.Column('download_limit', sa.Integer(), nullable=False),
    sa.Column('link_lifetime_hours', sa.Integer(), nullable=False),
    sa.Column('low_stock_threshold', sa.Integer(), nullable=False),
    sa.Column('alert_recipients', sa.JSON(), nullable=False),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_shop_settings')),
    sa.UniqueConstraint('key', name=op.f('uq_shop_settings_key'))
    )


def downgrade() -> None:
    op.drop_table("shop_settings")

