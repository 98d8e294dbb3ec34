"""Erasing a customer (GDPR Art. 17) by crypto-shredding, inside the caller's transaction.

Destroying the customer's data key makes everything sealed under it unreadable
at once, wherever it lies: telemetry records, quarantined input, the contact,
queued copies. The contact row is deleted as well, and so are the customer's
entries in the identifier index (keyed hashes of their identifiers); the
account's login and password hash are replaced by unusable placeholders, so
nobody can sign in as the customer again.

Two things are kept on purpose. The audit log holds no personal data and must
keep verifying, so it is never touched. Grants and their events are the legal
record of what the customer agreed to, so they stay (they name the customer by
an opaque id only).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import sqlalchemy as sa
from sqlmodel import Session, col, select

from broker.clock import ensure_utc
from broker.domain.grants import GrantAction
from broker.errors import NotFound
from broker.services.grants import GrantService
from broker.store import grants as grant_store
from broker.store import identifier_index
from broker.store.tables import CustomerContactRow, CustomerRow, QuarantineRow, TelemetryRecordRow
from broker.vault.vault import Vault, customer_owner

#: The password hash of an erased account: no Argon2 hash, so no password ever matches.
ERASED_PASSWORD_HASH: Final = "!"  # noqa: S105 - a placeholder, not a secret
#: Logins of erased accounts start with this, followed by random hex.
ERASED_LOGIN_PREFIX: Final = "erased-"


@dataclass(frozen=True)
class ErasureReport:
    """What erasing one customer did (counts only: no personal data)."""

    customer_id: str
    data_keys_destroyed: int  # 1 if a live key was destroyed by this call, else 0
    contacts_deleted: int
    accounts_disabled: int  # 1 if the login was still usable, else 0
    records_shredded: int  # telemetry records sealed under the destroyed key
    quarantined_shredded: int  # quarantine entries sealed under the destroyed key


def erase_customer(session: Session, vault: Vault, customer_id: str, at: datetime) -> ErasureReport:
    """Erase ``customer_id``: destroy their data key, delete their contact, disable the login.

    Idempotent: erasing twice reports zeros the second time. Raises
    :class:`NotFound` for an unknown customer.
    """
    at = ensure_utc(at)
    customer = session.exec(
        select(CustomerRow).where(col(CustomerRow.id) == customer_id).with_for_update()
    ).first()
    if customer is None:
        raise NotFound("no such customer")
    owner = customer_owner(customer_id)
    destroyed = vault.destroy(session, owner, at)
    contacts = session.exec(
        sa.delete(CustomerContactRow).where(col(CustomerContactRow.customer_id) == customer_id)
    ).rowcount
    identifier_index.drop(session, customer_id)
    disabled = customer.password_hash != ERASED_PASSWORD_HASH
    if disabled:
        customer.login = ERASED_LOGIN_PREFIX + secrets.token_hex(16)
        customer.password_hash = ERASED_PASSWORD_HASH
        session.add(customer)
    session.flush()
    return ErasureReport(
        customer_id=customer_id,
        data_keys_destroyed=int(destroyed),
        contacts_deleted=contacts,
        accounts_disabled=int(disabled),
        records_shredded=_count(session, TelemetryRecordRow, owner),
        quarantined_shredded=_count(session, QuarantineRow, owner),
    )


def _count(
    session: Session, table: type[TelemetryRecordRow] | type[QuarantineRow], owner: str
) -> int:
    statement = select(sa.func.count()).select_from(table).where(col(table.key_owner) == owner)
    return int(session.exec(statement).one())


def erase_customer_and_end_grants(
    session: Session,
    vault: Vault,
    grants: GrantService,
    customer_id: str,
    at: datetime,
) -> ErasureReport:
    """Art. 17 erasure: the customer's consent and service-contract grants end first
    (their recipients get the erase notice), then the customer's data is shredded."""
    for grant in grant_store.for_customer(session, customer_id):
        if grant.allows(GrantAction.WITHDRAW) is None:
            grants.transition(session, grant.id, GrantAction.WITHDRAW, at=at, reason="erasure")
    return erase_customer(session, vault, customer_id, at)
