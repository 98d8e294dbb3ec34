"""seen jti

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oauth_seen_jti",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("jti", sa.String(length=256), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "jti"),
    )
    with op.batch_alter_table("oauth_seen_jti", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_oauth_seen_jti_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("oauth_seen_jti", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_seen_jti_expires_at"))

    op.drop_table("oauth_seen_jti")
