"""product media (uploaded cover, digital file metadata) and Stripe ids

Revision ID: 3c1d9a7e5b20
Revises: 67e6a0dee31f
Create Date: 2026-11-30 01:05:00.000000+00:00
"""

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op
sa.GUID = GUID  # autogenerate renders advanced-alchemy types as sa.<Type>
sa.DateTimeUTC = DateTimeUTC

revision = '3c1d9a7e5b20'
down_revision = '67e6a0dee31f'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('products', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cover_upload', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('digital_file_name', sa.String(length=255), nullable=False, server_default=''))
        batch_op.add_column(
            sa.Column('digital_file_content_type', sa.String(length=120), nullable=False, server_default='')
        )
        batch_op.add_column(sa.Column('digital_file_size', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('digital_file_sha256', sa.String(length=64), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('stripe_product_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('stripe_price_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('stripe_synced_at', sa.DateTimeUTC(timezone=True), nullable=True))
    # The server defaults only fill existing rows; the model sets these values itself.
    with op.batch_alter_table('products', schema=None) as batch_op:
        batch_op.alter_column('digital_file_name', server_default=None)
        batch_op.alter_column('digital_file_content_type', server_default=None)
        batch_op.alter_column('digital_file_sha256', server_default=None)


def downgrade() -> None:
    with op.batch_alter_table('products', schema=None) as batch_op:
        batch_op.drop_column('stripe_synced_at')
        batch_op.drop_column('stripe_price_id')
        batch_op.drop_column('stripe_product_id')
        batch_op.drop_column('digital_file_sha256')
        batch_op.drop_column('digital_file_size')
        batch_op.drop_column('digital_file_content_type')
        batch_op.drop_column('digital_file_name')
        batch_op.drop_column('cover_upload')
