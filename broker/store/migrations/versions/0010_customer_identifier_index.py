"""customer identifier index: every customer's identifiers as keyed hashes

Free text released to a recipient is scrubbed of every customer's identifiers,
not only the vehicle holders'. The index keeps them as HMAC digests under a key
derived from the master key (never in clear), maintained where contacts are
written and dropped when the customer is erased.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customer_identifier",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("words", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("customer_id", "digest"),
        sqlite_autoincrement=True,  # ids never reused: (count, largest id) is the version
    )
    with op.batch_alter_table("customer_identifier", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_customer_identifier_customer_id"), ["customer_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("customer_identifier", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_identifier_customer_id"))

    op.drop_table("customer_identifier")
