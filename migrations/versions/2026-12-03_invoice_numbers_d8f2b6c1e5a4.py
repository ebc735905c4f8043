"""invoice numbers: gap-free sequences for order invoices and credit notes

Revision ID: d8f2b6c1e5a4
Revises: c4e1a7b2d9f3
Create Date: 2026-12-03 06:10:00.000000+00:00
"""

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

sa.GUID = GUID  # autogenerate renders advanced-alchemy types as sa.<Type>
sa.DateTimeUTC = DateTimeUTC

revision = "d8f2b6c1e5a4"
down_revision = "c4e1a7b2d9f3"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Orders paid before this revision get their invoice number on first view (app/domain/orders/invoices.py);
    # counter rows are created on first use.
    op.create_table('document_counters',
    sa.Column('id', sa.GUID(length=16), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('last_value', sa.Integer(), nullable=False),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_document_counters')),
    sa.UniqueConstraint('name', name=op.f('uq_document_counters_name'))
    )
    op.create_table('order_invoices',
    sa.Column('id', sa.GUID(length=16), nullable=False),
    sa.Column('order_id', sa.GUID(length=16), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('issued_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_order_invoices_order_id_orders'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_order_invoices')),
    sa.UniqueConstraint('number', name=op.f('uq_order_invoices_number')),
    sa.UniqueConstraint('order_id', name=op.f('uq_order_invoices_order_id'))
    )
    op.create_table('credit_notes',
    sa.Column('id', sa.GUID(length=16), nullable=False),
    sa.Column('order_id', sa.GUID(length=16), nullable=False),
    sa.Column('refund_id', sa.GUID(length=16), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('amount', sa.Integer(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('issued_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_credit_notes_order_id_orders'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['refund_id'], ['refunds.id'], name=op.f('fk_credit_notes_refund_id_refunds'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_credit_notes')),
    sa.UniqueConstraint('number', name=op.f('uq_credit_notes_number')),
    sa.UniqueConstraint('refund_id', name=op.f('uq_credit_notes_refund_id'))
    )
    with op.batch_alter_table("credit_notes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_credit_notes_order_id"), ["order_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("credit_notes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credit_notes_order_id"))
    op.drop_table("credit_notes")
    op.drop_table("order_invoices")
    op.drop_table("document_counters")

