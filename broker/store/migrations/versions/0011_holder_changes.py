"""holder changes: the car maker's backend's reports, kept by their idempotency key

The backend reports a sale, the start and end of a driver period, and fleet joins and
leaves over HTTP, each under its own change id. A repeat with the same id and body is
answered from this table and changes nothing; the same id with another body is refused.
Only a keyed digest of the body is kept, never the VIN or the customer.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "holder_change",
        sa.Column("change_id", sa.String(length=100), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "result", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.PrimaryKeyConstraint("change_id"),
    )


def downgrade() -> None:
    op.drop_table("holder_change")
