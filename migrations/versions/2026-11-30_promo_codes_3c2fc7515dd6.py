"""promo codes: codes, their product/plan restrictions, redemptions; order discounts

Revision ID: 3c2fc7515dd6
Revises: 3c1d9a7e5b20
Create Date: 2026-11-30 00:54:03.460321+00:00
"""

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

sa.GUID = GUID  # autogenerate renders advanced-alchemy types as sa.<Type>
sa.DateTimeUTC = DateTimeUTC

revision = '3c2fc7515dd6'
down_revision = '3c1d9a7e5b20'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('promo_codes',
    sa.Column('id', sa.GUID(length=16), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('percent_off_bps', sa.Integer(), nullable=True),
    sa.Column('amount_off', sa.Integer(), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('duration', sa.String(length=16), nullable=False),
    sa.Column('duration_in_months', sa.Integer(), nullable=True),
    sa.Column('max_redemptions', sa.Integer(), nullable=True),
    sa.Column('times_redeemed', sa.Integer(), nullable=False),
    sa.Column('expires_at', sa.DateTimeUTC(timezone=True), nullable=True),
    sa.Column('minimum_amount', sa.Integer(), nullable=True),
    sa.Column('first_order_only', sa.Boolean(), nullable=False),
    sa.Column('stripe_coupon_id', sa.String(length=255), nullable=True),
    sa.Column('stripe_promotion_code_id', sa.String(length=255), nullable=True),
    sa.Column('archived_at', sa.DateTimeUTC(timezone=True), nullable=True),
    sa.Column('created_by_id', sa.GUID(length=16), nullable=True),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.CheckConstraint('(percent_off_bps IS NULL) <> (amount_off IS NULL)', name=op.f('ck_promo_codes_promo_code_one_kind_of_discount')),
    sa.CheckConstraint('amount_off IS NULL OR amount_off > 0', name=op.f('ck_promo_codes_promo_code_amount_positive')),
    sa.CheckConstraint('percent_off_bps IS NULL OR (percent_off_bps > 0 AND percent_off_bps <= 10000)', name=op.f('ck_promo_codes_promo_code_percent_range')),
    sa.CheckConstraint('times_redeemed >= 0', name=op.f('ck_promo_codes_promo_code_redeemed_not_negative')),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_promo_codes_created_by_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_promo_codes')),
    sa.UniqueConstraint('code', name=op.f('uq_promo_codes_code')),
    sa.UniqueConstraint('stripe_promotion_code_id', name=op.f('uq_promo_codes_stripe_promotion_code_id'))
    )
    op.create_table('promo_code_plans',
    sa.Column('promo_code_id', sa.GUID(length=16), nullable=False),
    sa.Column('plan_id', sa.GUID(length=16), nullable=False),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], name=op.f('fk_promo_code_plans_plan_id_plans'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['promo_code_id'], ['promo_codes.id'], name=op.f('fk_promo_code_plans_promo_code_id_promo_codes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('promo_code_id', 'plan_id', name=op.f('pk_promo_code_plans'))
    )
    op.create_table('promo_code_products',
    sa.Column('promo_code_id', sa.GUID(length=16), nullable=False),
    sa.Column('product_id', sa.GUID(length=16), nullable=False),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], name=op.f('fk_promo_code_products_product_id_products'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['promo_code_id'], ['promo_codes.id'], name=op.f('fk_promo_code_products_promo_code_id_promo_codes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('promo_code_id', 'product_id', name=op.f('pk_promo_code_products'))
    )
    op.create_table('promo_redemptions',
    sa.Column('id', sa.GUID(length=16), nullable=False),
    sa.Column('promo_code_id', sa.GUID(length=16), nullable=False),
    sa.Column('order_id', sa.GUID(length=16), nullable=True),
    sa.Column('stripe_subscription_id', sa.String(length=255), nullable=True),
    sa.Column('user_id', sa.GUID(length=16), nullable=True),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('amount', sa.Integer(), nullable=False),
    sa.Column('counted', sa.Boolean(), nullable=False),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_promo_redemptions_order_id_orders'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['promo_code_id'], ['promo_codes.id'], name=op.f('fk_promo_redemptions_promo_code_id_promo_codes'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_promo_redemptions_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_promo_redemptions')),
    sa.UniqueConstraint('order_id', name='uq_promo_redemptions_order'),
    sa.UniqueConstraint('stripe_subscription_id', name='uq_promo_redemptions_subscription')
    )
    with op.batch_alter_table('promo_redemptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_promo_redemptions_promo_code_id'), ['promo_code_id'], unique=False)

    with op.batch_alter_table('order_lines', schema=None) as batch_op:
        batch_op.add_column(sa.Column('discount', sa.Integer(), server_default='0', nullable=False))

    # SQLite rebuilds the table in batch mode; the check constraint is replaced because the total now has a
    # discount in it (total = subtotal - discount_total + tax_total).
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('discount_total', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('promo_code', sa.String(length=40), server_default='', nullable=False))
        batch_op.add_column(sa.Column('promo_code_id', sa.GUID(length=16), nullable=True))
        batch_op.create_index(batch_op.f('ix_orders_promo_code_id'), ['promo_code_id'], unique=False)
        batch_op.create_foreign_key(
            batch_op.f('fk_orders_promo_code_id_promo_codes'), 'promo_codes', ['promo_code_id'], ['id'],
            ondelete='SET NULL',
        )
        batch_op.drop_constraint(batch_op.f('ck_orders_order_total_adds_up'), type_='check')
        batch_op.create_check_constraint('order_total_adds_up', 'total = subtotal - discount_total + tax_total')
        batch_op.create_check_constraint(
            'order_discount_within_subtotal', 'discount_total >= 0 AND discount_total <= subtotal'
        )


def downgrade() -> None:
    # Orders with a discount cannot satisfy the old constraint: fold the discount away first would be a lie, so
    # downgrading with discounted orders in the table fails loudly on the constraint instead.
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_orders_order_discount_within_subtotal'), type_='check')
        batch_op.drop_constraint(batch_op.f('ck_orders_order_total_adds_up'), type_='check')
        batch_op.create_check_constraint('order_total_adds_up', 'total = subtotal + tax_total')
        batch_op.drop_constraint(batch_op.f('fk_orders_promo_code_id_promo_codes'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_orders_promo_code_id'))
        batch_op.drop_column('promo_code_id')
        batch_op.drop_column('promo_code')
        batch_op.drop_column('discount_total')

    with op.batch_alter_table('order_lines', schema=None) as batch_op:
        batch_op.drop_column('discount')

    with op.batch_alter_table('promo_redemptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_promo_redemptions_promo_code_id'))

    op.drop_table('promo_redemptions')
    op.drop_table('promo_code_products')
    op.drop_table('promo_code_plans')
    op.drop_table('promo_codes')
