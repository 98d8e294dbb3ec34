"""grant amendments: the terms in force from each re-approval of a grant on

Approving the same recipient, contract and vehicle again while a grant is open amends
that grant instead of creating a second one. Each amendment (its time, categories and
location precision) is kept on the grant's row, so the gate releases a category or a
finer precision only for data recorded from the approval that added it. Existing
grants were never amended: an empty list.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("data_grant", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "amendments",
                sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                nullable=False,
                server_default=sa.text("'[]'"),
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("data_grant", schema=None) as batch_op:
        batch_op.drop_column("amendments")
