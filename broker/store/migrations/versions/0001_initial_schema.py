"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customer",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("login", sa.String(length=128), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("language", sa.String(length=2), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("login"),
    )
    op.create_table(
        "recipient",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("legal_entity", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("headquarters_country", sa.String(length=2), nullable=False),
        sa.Column(
            "processing_countries",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "storage_countries",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("dpf_certified_until", sa.Date(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "vehicle",
        sa.Column("vin", sa.String(length=17), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=True),
        sa.Column("location_collection", sa.Boolean(), nullable=False),
        sa.Column("location_sharing", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("vin"),
    )
    op.create_table(
        "contract",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("recipient_id", sa.String(length=64), nullable=False),
        sa.Column(
            "document", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["recipient.id"],
        ),
        sa.PrimaryKeyConstraint("id", "version"),
    )
    with op.batch_alter_table("contract", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_contract_recipient_id"), ["recipient_id"], unique=False
        )

    op.create_table(
        "fleet_membership",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("operator_id", sa.String(length=64), nullable=False),
        sa.Column("vin", sa.String(length=17), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["recipient.id"],
        ),
        sa.ForeignKeyConstraint(
            ["vin"],
            ["vehicle.vin"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("fleet_membership", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fleet_membership_operator_id"), ["operator_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_fleet_membership_vin"), ["vin"], unique=False)

    op.create_table(
        "oauth_client",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("recipient_id", sa.String(length=64), nullable=True),
        sa.Column("auth_method", sa.String(length=32), nullable=False),
        sa.Column("secret_digest", sa.String(length=128), nullable=True),
        sa.Column("jwks", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column(
            "redirect_uris",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "grant_types", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "scopes", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["recipient.id"],
        ),
        sa.PrimaryKeyConstraint("client_id"),
    )
    with op.batch_alter_table("oauth_client", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_oauth_client_recipient_id"), ["recipient_id"], unique=False
        )

    op.create_table(
        "scc_agreement",
        sa.Column("reference", sa.String(length=128), nullable=False),
        sa.Column("recipient_id", sa.String(length=64), nullable=False),
        sa.Column("module", sa.Integer(), nullable=False),
        sa.Column("signed_on", sa.Date(), nullable=False),
        sa.Column("expires_on", sa.Date(), nullable=True),
        sa.Column("tia_reference", sa.String(length=128), nullable=True),
        sa.Column("tia_review_due", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["recipient.id"],
        ),
        sa.PrimaryKeyConstraint("reference"),
    )
    with op.batch_alter_table("scc_agreement", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_scc_agreement_recipient_id"), ["recipient_id"], unique=False
        )

    op.create_table(
        "telemetry_record",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("vin", sa.String(length=17), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.ForeignKeyConstraint(
            ["vin"],
            ["vehicle.vin"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("telemetry_record", schema=None) as batch_op:
        batch_op.create_index(
            "ix_telemetry_vin_category_time", ["vin", "category", "recorded_at"], unique=False
        )

    op.create_table(
        "vehicle_party",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("vin", sa.String(length=17), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
        ),
        sa.ForeignKeyConstraint(
            ["vin"],
            ["vehicle.vin"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("vehicle_party", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_vehicle_party_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index("ix_vehicle_party_vin_role", ["vin", "role"], unique=False)

    op.create_table(
        "data_grant",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("contract_id", sa.String(length=64), nullable=False),
        sa.Column("contract_version", sa.Integer(), nullable=False),
        sa.Column("recipient_id", sa.String(length=64), nullable=False),
        sa.Column("vin", sa.String(length=17), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=True),
        sa.Column("activation", sa.String(length=32), nullable=False),
        sa.Column(
            "categories", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("location_precision", sa.String(length=16), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contract_id", "contract_version"],
            ["contract.id", "contract.version"],
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["recipient.id"],
        ),
        sa.ForeignKeyConstraint(
            ["vin"],
            ["vehicle.vin"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("data_grant", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_data_grant_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_data_grant_recipient_id"), ["recipient_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_data_grant_vin"), ["vin"], unique=False)
        batch_op.create_index("ix_grant_contract_state", ["contract_id", "state"], unique=False)

    op.create_table(
        "grant_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(
            ["grant_id"],
            ["data_grant.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("grant_id", "seq"),
    )
    with op.batch_alter_table("grant_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_grant_event_grant_id"), ["grant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("grant_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_grant_event_grant_id"))

    op.drop_table("grant_event")
    with op.batch_alter_table("data_grant", schema=None) as batch_op:
        batch_op.drop_index("ix_grant_contract_state")
        batch_op.drop_index(batch_op.f("ix_data_grant_vin"))
        batch_op.drop_index(batch_op.f("ix_data_grant_recipient_id"))
        batch_op.drop_index(batch_op.f("ix_data_grant_customer_id"))

    op.drop_table("data_grant")
    with op.batch_alter_table("vehicle_party", schema=None) as batch_op:
        batch_op.drop_index("ix_vehicle_party_vin_role")
        batch_op.drop_index(batch_op.f("ix_vehicle_party_customer_id"))

    op.drop_table("vehicle_party")
    with op.batch_alter_table("telemetry_record", schema=None) as batch_op:
        batch_op.drop_index("ix_telemetry_vin_category_time")

    op.drop_table("telemetry_record")
    with op.batch_alter_table("scc_agreement", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_scc_agreement_recipient_id"))

    op.drop_table("scc_agreement")
    with op.batch_alter_table("oauth_client", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_client_recipient_id"))

    op.drop_table("oauth_client")
    with op.batch_alter_table("fleet_membership", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fleet_membership_vin"))
        batch_op.drop_index(batch_op.f("ix_fleet_membership_operator_id"))

    op.drop_table("fleet_membership")
    with op.batch_alter_table("contract", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contract_recipient_id"))

    op.drop_table("contract")
    op.drop_table("vehicle")
    op.drop_table("recipient")
    op.drop_table("customer")
