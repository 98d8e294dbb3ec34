"""webhooks: index the open messages of each ordering chain only

Claiming asks, for each due message, whether an earlier message of its
(subscription, order_key) chain is still open. The full chain index made that
walk every delivered message of the chain first; a partial index over the open
messages keeps it as small as the backlog, however long the history.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_OPEN = "state IN ('pending', 'sending')"


def upgrade() -> None:
    op.create_index(
        "ix_webhook_message_open_chain",
        "webhook_message",
        ["subscription_id", "order_key", "seq"],
        unique=False,
        sqlite_where=sa.text(_OPEN),
        postgresql_where=sa.text(_OPEN),
    )
    op.drop_index("ix_webhook_message_chain", table_name="webhook_message")


def downgrade() -> None:
    op.create_index(
        "ix_webhook_message_chain",
        "webhook_message",
        ["subscription_id", "order_key", "seq"],
        unique=False,
    )
    op.drop_index("ix_webhook_message_open_chain", table_name="webhook_message")
