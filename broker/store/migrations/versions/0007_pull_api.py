"""pull api: rate-limit windows, who acknowledged a notice

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_window",
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", "window_start"),
    )
    with op.batch_alter_table("rate_window", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rate_window_expires_at"), ["expires_at"], unique=False)
    with op.batch_alter_table("notice", schema=None) as batch_op:
        batch_op.add_column(sa.Column("acknowledged_by", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notice", schema=None) as batch_op:
        batch_op.drop_column("acknowledged_by")
    with op.batch_alter_table("rate_window", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rate_window_expires_at"))
    op.drop_table("rate_window")
