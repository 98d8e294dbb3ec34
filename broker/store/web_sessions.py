"""Customer browser sessions in the store: only the SHA-256 of a cookie value is kept."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col

from broker.domain.parties import Customer, Language
from broker.store.tables import CustomerRow, CustomerSessionRow


@dataclass(frozen=True)
class CustomerSession:
    """A live session: who is logged in, and the CSRF token of their forms."""

    customer: Customer
    csrf_token: str
    id_hash: str


def hash_session_id(value: str) -> str:
    """The stored form of a session cookie value."""
    return hashlib.sha256(value.encode()).hexdigest()


def create_session(
    db: Session, customer_id: str, now: datetime, *, lifetime: timedelta
) -> tuple[str, CustomerSession]:
    """A new session for ``customer_id``: the cookie value and the session."""
    value = secrets.token_urlsafe(32)
    customer = db.get(CustomerRow, customer_id)
    if customer is None:
        raise LookupError("no such customer")
    row = CustomerSessionRow(
        id_hash=hash_session_id(value),
        customer_id=customer_id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + lifetime,
        last_seen_at=now,
    )
    db.add(row)
    return value, CustomerSession(_customer(customer), row.csrf_token, row.id_hash)


def resume_session(
    db: Session, id_hash: str, now: datetime, *, idle_timeout: timedelta
) -> CustomerSession | None:
    """The live session with this hash, marked as seen now; an expired one is deleted."""
    row = db.get(CustomerSessionRow, id_hash)
    if row is None:
        return None
    customer = db.get(CustomerRow, row.customer_id)
    if customer is None or now >= row.expires_at or now >= row.last_seen_at + idle_timeout:
        db.delete(row)
        return None
    row.last_seen_at = now
    db.add(row)
    return CustomerSession(_customer(customer), row.csrf_token, row.id_hash)


def end_session(db: Session, id_hash: str) -> None:
    db.execute(sa.delete(CustomerSessionRow).where(col(CustomerSessionRow.id_hash) == id_hash))


def purge_expired_sessions(db: Session, now: datetime, *, idle_timeout: timedelta) -> int:
    """Delete sessions past either expiry; the number deleted."""
    result = db.execute(
        sa.delete(CustomerSessionRow).where(
            sa.or_(
                col(CustomerSessionRow.expires_at) <= now,
                col(CustomerSessionRow.last_seen_at) <= now - idle_timeout,
            )
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _customer(row: CustomerRow) -> Customer:
    language = Language(row.language) if row.language in {"nl", "en"} else Language.EN
    return Customer(id=row.id, login=row.login, language=language)
