"""ingest quarantine and encryption at rest

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "data_key",
        sa.Column("owner", sa.String(length=96), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("kek_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("owner"),
    )
    op.create_table(
        "quarantine_record",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("record_id", sa.String(length=128), nullable=True),
        sa.Column("category", sa.String(length=64), nullable=True),
        sa.Column("reason_code", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=False),
        sa.Column("key_owner", sa.String(length=96), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("quarantine_record", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_quarantine_record_received_at"), ["received_at"], unique=False
        )

    op.create_table(
        "customer_contact",
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("key_owner", sa.String(length=96), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
        ),
        sa.PrimaryKeyConstraint("customer_id"),
    )
    op.create_table(
        "ingest_withheld",
        sa.Column("vin", sa.String(length=17), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["vin"],
            ["vehicle.vin"],
        ),
        sa.PrimaryKeyConstraint("vin", "category", "day", "reason"),
    )
    with op.batch_alter_table("telemetry_record", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_owner", sa.String(length=96), nullable=True))
        batch_op.add_column(sa.Column("ciphertext", sa.LargeBinary(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_telemetry_record_received_at"), ["received_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("telemetry_record", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_telemetry_record_received_at"))
        batch_op.drop_column("ciphertext")
        batch_op.drop_column("key_owner")

    op.drop_table("ingest_withheld")
    op.drop_table("customer_contact")
    with op.batch_alter_table("quarantine_record", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quarantine_record_received_at"))

    op.drop_table("quarantine_record")
    op.drop_table("data_key")
