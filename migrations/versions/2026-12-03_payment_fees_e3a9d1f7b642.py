"""payments.fee and payments.net: Stripe's processing fee and what reached the balance, from the charge's
balance transaction

Revision ID: e3a9d1f7b642
Revises: d8f2b6c1e5a4
Create Date: 2026-12-03 07:15:00.000000+00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "e3a9d1f7b642"
down_revision = "d8f2b6c1e5a4"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fee", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("net", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_column("net")
        batch_op.drop_column("fee")
