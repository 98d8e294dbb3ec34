"""Authorization-server persistence: codes, refresh-token families, revocations, seen jtis.

Secrets (codes, refresh tokens) are stored only as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from broker.store.tables import (
    AuthorizationCodeRow,
    OAuthClientRow,
    RefreshTokenRow,
    RevokedAccessTokenRow,
    SeenJtiRow,
    TokenGrantRow,
)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def client(session: Session, client_id: str) -> OAuthClientRow | None:
    if not client_id or len(client_id) > 128:
        return None
    return session.get(OAuthClientRow, client_id)


# -- authorization codes ------------------------------------------------------------------


def save_code(session: Session, row: AuthorizationCodeRow) -> None:
    session.add(row)
    session.flush()


def find_code(session: Session, code: str) -> AuthorizationCodeRow | None:
    query = select(AuthorizationCodeRow).where(AuthorizationCodeRow.code_hash == digest(code))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return session.exec(query).first()


def mark_code_used(session: Session, row: AuthorizationCodeRow, at: datetime) -> None:
    row.used_at = at
    session.add(row)
    session.flush()


# -- refresh tokens -----------------------------------------------------------------------


def save_refresh(session: Session, row: RefreshTokenRow) -> None:
    session.add(row)
    session.flush()


def find_refresh(session: Session, token: str) -> RefreshTokenRow | None:
    query = select(RefreshTokenRow).where(RefreshTokenRow.token_hash == digest(token))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return session.exec(query).first()


def revoke_family(session: Session, family_id: str, at: datetime) -> int:
    result = session.execute(
        sa.update(RefreshTokenRow)
        .where(
            col(RefreshTokenRow.family_id) == family_id, col(RefreshTokenRow.revoked_at).is_(None)
        )
        .values(revoked_at=at)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def family_revoked(session: Session, family_id: str) -> bool:
    found = session.exec(
        select(RefreshTokenRow.token_hash).where(
            RefreshTokenRow.family_id == family_id, col(RefreshTokenRow.revoked_at).is_not(None)
        )
    ).first()
    return found is not None


def families_for_grant(session: Session, grant_id: str, customer_id: str | None) -> set[str]:
    query = select(RefreshTokenRow).where(col(RefreshTokenRow.revoked_at).is_(None))
    if customer_id is not None:
        query = query.where(RefreshTokenRow.customer_id == customer_id)
    return {r.family_id for r in session.exec(query).all() if grant_id in r.grant_ids}


# -- access tokens ------------------------------------------------------------------------


def record_token_grants(
    session: Session, jti: str, grant_ids: Iterable[str], expires_at: datetime
) -> None:
    for grant_id in sorted(set(grant_ids)):
        session.add(TokenGrantRow(jti=jti, grant_id=grant_id, expires_at=expires_at))
    session.flush()


def revoke_access_token(session: Session, jti: str, expires_at: datetime, at: datetime) -> None:
    if session.get(RevokedAccessTokenRow, jti) is None:
        session.add(RevokedAccessTokenRow(jti=jti, expires_at=expires_at, revoked_at=at))
        session.flush()


def revoke_access_tokens_for_grant(session: Session, grant_id: str, at: datetime) -> int:
    rows = session.exec(
        select(TokenGrantRow).where(
            TokenGrantRow.grant_id == grant_id, col(TokenGrantRow.expires_at) > at
        )
    ).all()
    for row in rows:
        revoke_access_token(session, row.jti, row.expires_at, at)
    return len(rows)


def access_token_revoked(session: Session, jti: str) -> bool:
    return session.get(RevokedAccessTokenRow, jti) is not None


# -- one-time jtis ------------------------------------------------------------------------


def remember_jti(session: Session, kind: str, jti: str, expires_at: datetime) -> bool:
    """Record a one-time jti; False if it was already seen (a replay)."""
    values = {"kind": kind, "jti": jti[:256], "expires_at": expires_at}
    table = SeenJtiRow.__table__  # type: ignore[attr-defined]
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(table).values(**values).on_conflict_do_nothing().returning(table.c.jti)
    # RETURNING, not rowcount: PostgreSQL's driver reports a row for an ignored insert.
    return session.execute(statement).first() is not None
