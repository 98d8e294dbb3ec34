"""The broker's tables (SQLModel). Every schema change goes through a migration.

Times are :class:`~broker.store.types.UTCDateTime`; lists and documents are
:data:`~broker.store.types.PortableJSON`. Grants and their events are never
deleted: a grant's history is its legal record.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from broker.store.types import PortableJSON, UTCDateTime


def _json_column(nullable: bool = False) -> Any:
    return Field(sa_column=sa.Column(PortableJSON, nullable=nullable))


class CustomerRow(SQLModel, table=True):
    __tablename__ = "customer"

    id: str = Field(primary_key=True, max_length=64)
    login: str = Field(max_length=128, unique=True)
    password_hash: str = Field(max_length=256)
    language: str = Field(max_length=2, default="en")
    created_at: datetime = Field(sa_type=UTCDateTime)


class VehicleRow(SQLModel, table=True):
    __tablename__ = "vehicle"

    vin: str = Field(primary_key=True, max_length=17)
    model: str | None = Field(default=None, max_length=128)
    location_collection: bool = Field(default=True)
    location_sharing: bool = Field(default=True)
    created_at: datetime = Field(sa_type=UTCDateTime)


class VehiclePartyRow(SQLModel, table=True):
    """An owner or secondary driver of a vehicle, for a period."""

    __tablename__ = "vehicle_party"
    __table_args__ = (sa.Index("ix_vehicle_party_vin_role", "vin", "role"),)

    id: int | None = Field(default=None, primary_key=True)
    vin: str = Field(foreign_key="vehicle.vin", max_length=17)
    customer_id: str = Field(foreign_key="customer.id", max_length=64, index=True)
    role: str = Field(max_length=16)  # owner | secondary_driver
    since: datetime = Field(sa_type=UTCDateTime)
    until: datetime | None = Field(default=None, sa_type=UTCDateTime)


class RecipientRow(SQLModel, table=True):
    __tablename__ = "recipient"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=32)
    legal_entity: str = Field(max_length=200)
    role: str = Field(max_length=32)
    headquarters_country: str = Field(max_length=2)
    processing_countries: list[str] = _json_column()
    storage_countries: list[str] = _json_column()
    status: str = Field(max_length=16, default="active")
    dpf_certified_until: date | None = Field(default=None)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class SccAgreementRow(SQLModel, table=True):
    __tablename__ = "scc_agreement"

    reference: str = Field(primary_key=True, max_length=128)
    recipient_id: str = Field(foreign_key="recipient.id", max_length=64, index=True)
    module: int
    signed_on: date
    expires_on: date | None = None
    tia_reference: str | None = Field(default=None, max_length=128)
    tia_review_due: date | None = None


class OAuthClientRow(SQLModel, table=True):
    __tablename__ = "oauth_client"

    client_id: str = Field(primary_key=True, max_length=128)
    kind: str = Field(max_length=16)  # recipient | customer_app | backend
    recipient_id: str | None = Field(
        default=None, foreign_key="recipient.id", max_length=64, index=True
    )
    auth_method: str = Field(max_length=32)
    secret_digest: str | None = Field(default=None, max_length=128)
    jwks: dict[str, Any] | None = _json_column(nullable=True)
    redirect_uris: list[str] = _json_column()
    grant_types: list[str] = _json_column()
    scopes: list[str] = _json_column()
    status: str = Field(max_length=16, default="active")
    created_at: datetime = Field(sa_type=UTCDateTime)


class ContractRow(SQLModel, table=True):
    """One version of a data-sharing contract, as the document it was loaded from."""

    __tablename__ = "contract"

    id: str = Field(primary_key=True, max_length=64)
    version: int = Field(primary_key=True)
    recipient_id: str = Field(foreign_key="recipient.id", max_length=64, index=True)
    document: dict[str, Any] = _json_column()
    digest: str = Field(max_length=64)
    loaded_at: datetime = Field(sa_type=UTCDateTime)


class GrantRow(SQLModel, table=True):
    __tablename__ = "data_grant"
    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["contract_id", "contract_version"], ["contract.id", "contract.version"]
        ),
        sa.Index("ix_grant_contract_state", "contract_id", "state"),
    )

    id: str = Field(primary_key=True, max_length=64)
    contract_id: str = Field(max_length=64)
    contract_version: int
    recipient_id: str = Field(foreign_key="recipient.id", max_length=64, index=True)
    vin: str = Field(foreign_key="vehicle.vin", max_length=17, index=True)
    customer_id: str | None = Field(
        default=None, foreign_key="customer.id", max_length=64, index=True
    )
    activation: str = Field(max_length=32)
    categories: list[str] = _json_column()
    location_precision: str | None = Field(default=None, max_length=16)
    state: str = Field(max_length=16)
    valid_from: datetime = Field(sa_type=UTCDateTime)
    valid_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: The terms in force from each re-approval on (see broker.store.grants); [] if none.
    amendments: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_column=sa.Column(PortableJSON, nullable=False, server_default=sa.text("'[]'")),
    )
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class GrantEventRow(SQLModel, table=True):
    __tablename__ = "grant_event"
    __table_args__ = (sa.UniqueConstraint("grant_id", "seq"),)

    id: int | None = Field(default=None, primary_key=True)
    grant_id: str = Field(foreign_key="data_grant.id", max_length=64, index=True)
    seq: int
    at: datetime = Field(sa_type=UTCDateTime)
    action: str = Field(max_length=32)
    from_state: str | None = Field(default=None, max_length=16)
    to_state: str = Field(max_length=16)
    reason: str = Field(max_length=500)


class FleetMembershipRow(SQLModel, table=True):
    __tablename__ = "fleet_membership"

    id: int | None = Field(default=None, primary_key=True)
    operator_id: str = Field(foreign_key="recipient.id", max_length=64, index=True)
    vin: str = Field(foreign_key="vehicle.vin", max_length=17, index=True)
    since: datetime = Field(sa_type=UTCDateTime)
    until: datetime | None = Field(default=None, sa_type=UTCDateTime)


class TelemetryRecordRow(SQLModel, table=True):
    """One telemetry record of one data category, as the car maker's backend sent it."""

    __tablename__ = "telemetry_record"
    __table_args__ = (sa.Index("ix_telemetry_vin_category_time", "vin", "category", "recorded_at"),)

    id: str = Field(primary_key=True, max_length=128)
    vin: str = Field(foreign_key="vehicle.vin", max_length=17)
    category: str = Field(max_length=64)
    recorded_at: datetime = Field(sa_type=UTCDateTime)
    received_at: datetime = Field(sa_type=UTCDateTime, index=True)
    data: dict[str, Any] = _json_column()  # empty when the category is encrypted at rest
    key_owner: str | None = Field(default=None, max_length=96)  # whose data key encrypts it
    ciphertext: bytes | None = Field(default=None, sa_type=sa.LargeBinary)


metadata = SQLModel.metadata


class AuditEntryRow(SQLModel, table=True):
    """One entry of the tamper-evident audit log (see :mod:`broker.store.audit`).

    ``entry`` is the entry's canonical JSON (``seq`` included), ``leaf_hash`` its
    RFC 9162 leaf hash in hex; ``at``, ``kind``, ``recipient_id`` and
    ``subject_ref`` are copies for queries, checked against ``entry`` on verify.
    Rows are only ever inserted.
    """

    __tablename__ = "audit_entry"

    seq: int = Field(
        primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    at: datetime = Field(sa_type=UTCDateTime, index=True)
    kind: str = Field(max_length=32)
    recipient_id: str = Field(max_length=64, index=True)
    subject_ref: str = Field(max_length=128, index=True)
    entry: dict[str, Any] = _json_column()
    leaf_hash: str = Field(max_length=64)


class AuditCheckpointRow(SQLModel, table=True):
    """A signed checkpoint of the audit tree: its first ``tree_size`` entries have root
    ``root_hash``. ``note`` is the signed note; the other columns are copies of it."""

    __tablename__ = "audit_checkpoint"

    id: int | None = Field(default=None, primary_key=True)
    tree_size: int = Field(sa_type=sa.BigInteger, index=True)
    root_hash: str = Field(max_length=64)
    note: str = Field(sa_type=sa.Text)
    created_at: datetime = Field(sa_type=UTCDateTime)


class NoticeRow(SQLModel, table=True):
    """A notice released to a recipient (a grant ended: erase the data; EU Data Act Art. 6).

    Carries only the grant reference and the contract's identifier for the vehicle.
    """

    __tablename__ = "notice"
    __table_args__ = (sa.Index("ix_notice_recipient_created", "recipient_id", "created_at"),)

    id: str = Field(primary_key=True, max_length=64)
    recipient_id: str = Field(foreign_key="recipient.id", max_length=64)
    contract_id: str = Field(max_length=64)
    grant_id: str = Field(foreign_key="data_grant.id", max_length=64, index=True)
    vehicle_ref: str | None = Field(default=None, max_length=64)
    kind: str = Field(max_length=32)
    reason: str = Field(max_length=200)
    erase_by: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)
    audit_seq: int
    acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    acknowledged_by: str | None = Field(default=None, max_length=128)


class DataKeyRow(SQLModel, table=True):
    """A data-encryption key (AES-256-GCM), wrapped by the master key; one per owner.

    Owners are ``customer:<id>``, ``vehicle:<vin>`` (no owning customer) or
    ``broker:<purpose>``. Destroying a key (crypto-shredding) nulls ``wrapped``.
    """

    __tablename__ = "data_key"

    owner: str = Field(primary_key=True, max_length=96)
    wrapped: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    kek_id: str = Field(max_length=32)
    created_at: datetime = Field(sa_type=UTCDateTime)
    destroyed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class CustomerContactRow(SQLModel, table=True):
    """A customer's contact data (name, address, e-mail), encrypted under their data key."""

    __tablename__ = "customer_contact"

    customer_id: str = Field(primary_key=True, foreign_key="customer.id", max_length=64)
    key_owner: str = Field(max_length=96)
    ciphertext: bytes = Field(sa_type=sa.LargeBinary)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class CustomerIdentifierRow(SQLModel, table=True):
    """One identifier of a customer (name, street, e-mail, phone, login) as a keyed hash only.

    See :mod:`broker.protection.identifiers`: free text is checked against these.
    """

    __tablename__ = "customer_identifier"
    # AUTOINCREMENT on SQLite: ids never reused, so (count, largest id) is a version.
    __table_args__ = (sa.UniqueConstraint("customer_id", "digest"), {"sqlite_autoincrement": True})

    id: int | None = Field(default=None, primary_key=True)
    customer_id: str = Field(foreign_key="customer.id", max_length=64, index=True)
    digest: str = Field(max_length=64)
    words: int


class QuarantineRow(SQLModel, table=True):
    """A rejected record: the reason in clear (never a value), the raw input encrypted."""

    __tablename__ = "quarantine_record"

    id: int | None = Field(default=None, primary_key=True)
    received_at: datetime = Field(sa_type=UTCDateTime, index=True)
    source: str = Field(max_length=16)
    record_id: str | None = Field(default=None, max_length=128)
    category: str | None = Field(default=None, max_length=64)
    reason_code: str = Field(max_length=32)
    reason: str = Field(max_length=300)
    key_owner: str = Field(max_length=96)
    ciphertext: bytes = Field(sa_type=sa.LargeBinary)


class IngestWithheldRow(SQLModel, table=True):
    """Records counted but never kept (the location safeguard), per vehicle, category, day."""

    __tablename__ = "ingest_withheld"

    vin: str = Field(primary_key=True, foreign_key="vehicle.vin", max_length=17)
    category: str = Field(primary_key=True, max_length=64)
    day: date = Field(primary_key=True)
    reason: str = Field(primary_key=True, max_length=32)
    count: int = 0


class CustomerSessionRow(SQLModel, table=True):
    """A customer's browser session: only the SHA-256 of the cookie value is stored."""

    __tablename__ = "customer_session"

    id_hash: str = Field(primary_key=True, max_length=64)
    customer_id: str = Field(foreign_key="customer.id", max_length=64, index=True)
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    last_seen_at: datetime = Field(sa_type=UTCDateTime)


class LoginThrottleRow(SQLModel, table=True):
    """Failed logins per login name, for back-off (keyed by a hash: no login in clear)."""

    __tablename__ = "login_throttle"

    key_hash: str = Field(primary_key=True, max_length=64)
    failures: int = 0
    last_failure_at: datetime = Field(sa_type=UTCDateTime)
    locked_until: datetime | None = Field(default=None, sa_type=UTCDateTime)


class AuthorizationCodeRow(SQLModel, table=True):
    """An authorization code (RFC 6749 §4.1): single use, short-lived, stored as a hash."""

    __tablename__ = "oauth_authorization_code"

    code_hash: str = Field(primary_key=True, max_length=64)
    client_id: str = Field(foreign_key="oauth_client.client_id", max_length=128)
    customer_id: str = Field(foreign_key="customer.id", max_length=64)
    redirect_uri: str = Field(max_length=2000)
    scope: str = Field(max_length=2000)
    grant_ids: list[str] = _json_column()
    code_challenge: str = Field(max_length=128)
    code_challenge_method: str = Field(max_length=8)
    nonce: str | None = Field(default=None, max_length=256)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class RefreshTokenRow(SQLModel, table=True):
    """A refresh token (stored as a hash) in a rotation family; reuse revokes the family."""

    __tablename__ = "oauth_refresh_token"

    token_hash: str = Field(primary_key=True, max_length=64)
    family_id: str = Field(max_length=64, index=True)
    client_id: str = Field(foreign_key="oauth_client.client_id", max_length=128)
    customer_id: str | None = Field(default=None, foreign_key="customer.id", max_length=64)
    scope: str = Field(max_length=2000)
    grant_ids: list[str] = _json_column()
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    rotated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class RevokedAccessTokenRow(SQLModel, table=True):
    """Access tokens revoked before they expire (RFC 7009), by ``jti``, kept until ``exp``."""

    __tablename__ = "oauth_revoked_access_token"

    jti: str = Field(primary_key=True, max_length=64)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
    revoked_at: datetime = Field(sa_type=UTCDateTime)


class TokenGrantRow(SQLModel, table=True):
    """Which grants an issued access token relies on (so a revocation can find its tokens)."""

    __tablename__ = "oauth_token_grant"

    jti: str = Field(primary_key=True, max_length=64)
    grant_id: str = Field(primary_key=True, foreign_key="data_grant.id", max_length=64)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)


class SeenJtiRow(SQLModel, table=True):
    """One-time JWT ids already used (client assertions, DPoP proofs), across processes."""

    __tablename__ = "oauth_seen_jti"

    kind: str = Field(primary_key=True, max_length=32)
    jti: str = Field(primary_key=True, max_length=256)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)


class RateWindowRow(SQLModel, table=True):
    """Requests counted per contract and fixed window (its rate limit), shared by processes."""

    __tablename__ = "rate_window"

    key: str = Field(primary_key=True, max_length=160)
    window_start: datetime = Field(primary_key=True, sa_type=UTCDateTime)
    count: int = Field(default=0)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)


class WebhookSubscriptionRow(SQLModel, table=True):
    """A recipient's webhook endpoint (Standard Webhooks), its event types and secrets.

    ``secrets`` is the signing secrets' JSON, encrypted under the broker's webhook
    data key; a rotation keeps the previous secret until ``previous_until``.
    Subscriptions are never deleted: ``status`` moves active -> disabled -> active,
    or to ``deleted`` for good.
    """

    __tablename__ = "webhook_subscription"

    id: str = Field(primary_key=True, max_length=64)
    recipient_id: str = Field(foreign_key="recipient.id", max_length=64, index=True)
    url: str = Field(max_length=2000)
    description: str = Field(default="", max_length=500)
    event_types: list[str] = _json_column()
    status: str = Field(max_length=16)  # active | disabled | deleted
    status_reason: str = Field(default="", max_length=300)
    secrets: bytes = Field(sa_type=sa.LargeBinary)
    previous_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    failing_since: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


#: The open states of a webhook message (``broker.store.webhooks.OPEN``), as SQL.
OPEN_STATES_SQL = "state IN ('pending', 'sending')"


class WebhookMessageRow(SQLModel, table=True):
    """One outbox message for one subscription: a reference to what happened, never data.

    ``id`` is the ``webhook-id`` (stable across retries); ``seq`` orders messages;
    ``order_key`` (the VIN, kept only here) keeps a vehicle's messages in order.
    States: pending -> sending (claimed until ``claimed_until``) -> delivered |
    pending (retry) | dead (schedule exhausted; replayable) | dropped (the gate
    denied, or the subscription was deleted).
    """

    __tablename__ = "webhook_message"
    __table_args__ = (
        sa.Index("ix_webhook_message_due", "state", "next_attempt_at"),
        # The open messages of each (subscription, order_key) chain: claiming asks whether an
        # earlier one is open, and this stays as small as the backlog however long the history.
        sa.Index(
            "ix_webhook_message_open_chain",
            "subscription_id",
            "order_key",
            "seq",
            sqlite_where=sa.text(OPEN_STATES_SQL),
            postgresql_where=sa.text(OPEN_STATES_SQL),
        ),
    )

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=64, unique=True)
    subscription_id: str = Field(foreign_key="webhook_subscription.id", max_length=64)
    recipient_id: str = Field(max_length=64)
    contract_id: str | None = Field(default=None, max_length=64)
    event_type: str = Field(max_length=64)
    order_key: str = Field(max_length=64)
    vin: str | None = Field(default=None, max_length=17)
    category: str | None = Field(default=None, max_length=64)
    since: datetime | None = Field(default=None, sa_type=UTCDateTime)
    until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    grant_id: str | None = Field(default=None, max_length=64)
    state: str = Field(max_length=16)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(sa_type=UTCDateTime)
    claimed_by: str | None = Field(default=None, max_length=64)
    claimed_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_status: int | None = Field(default=None)
    last_error: str = Field(default="", max_length=300)
    audit_seq: int | None = Field(default=None, sa_type=sa.BigInteger)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class HolderChangeRow(SQLModel, table=True):
    """A holder change the car maker's backend reported (a sale, a driver period's start or
    end, a fleet join or leave), kept under its idempotency key so that a repeat is answered
    from here and never applied twice. Only a keyed digest of the body is kept: never the
    VIN or the customer. Rows are only ever inserted."""

    __tablename__ = "holder_change"

    change_id: str = Field(primary_key=True, max_length=100)
    digest: str = Field(max_length=64)
    kind: str = Field(max_length=16)
    applied_at: datetime = Field(sa_type=UTCDateTime)
    result: dict[str, Any] = _json_column()
