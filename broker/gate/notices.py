"""Notices: when a grant ends, the gate releases an audited notice to its recipient.

Pull-only recipients read them from the notices feed and acknowledge each one
(the data is erased); the acknowledgement is audited too, so the car maker can
show who confirmed erasure and who did not.

The notice says the grant ended and the data must be erased (EU Data Act
Art. 6; GDPR Art. 17 and 19). It carries only the grant reference and the
contract's identifier for the vehicle, and it is released even though the
grant is no longer active.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlmodel import Session, col, select

from broker.audit.entry import AuditEntry
from broker.gate.keyring import Keyring
from broker.gate.revocation import GrantEnded
from broker.protection.protect import ProtectionContext, vehicle_reference
from broker.store import audit as audit_store
from broker.store import contracts as contract_store
from broker.store.tables import NoticeRow

GRANT_ENDED = "grant_ended"


def issue_notice(session: Session, ended: GrantEnded, keyring: Keyring) -> NoticeRow:
    grant = ended.grant
    contract = contract_store.get(session, grant.contract_id, grant.contract_version)
    if contract is None:
        raise LookupError(f"contract {grant.contract_id} v{grant.contract_version} is missing")
    context = ProtectionContext(
        contract=contract,
        recipient_id=grant.recipient_id,
        pseudonymiser=keyring.pseudonymiser(grant.recipient_id, grant.contract_id),
    )
    vehicle_ref = vehicle_reference(grant.vin, context)
    [entry] = audit_store.append(
        session,
        [
            AuditEntry(
                at=ended.at,
                kind="notice",
                recipient_id=grant.recipient_id,
                contract_id=grant.contract_id,
                contract_version=grant.contract_version,
                grant_ids=(grant.id,),
                channel="notice",
                legal_basis=contract.legal_basis.value,
                decision="released",
                reasons=(f"grant {grant.state.value}: {ended.reason}",),
                subject_ref=grant.id,
                details={"notice": GRANT_ENDED, "erase": True},
            )
        ],
    )
    assert entry.seq is not None
    notice = NoticeRow(
        id="ntc-" + secrets.token_hex(8),
        recipient_id=grant.recipient_id,
        contract_id=grant.contract_id,
        grant_id=grant.id,
        vehicle_ref=vehicle_ref,
        kind=GRANT_ENDED,
        reason=f"grant {grant.state.value}"[:200],
        erase_by=ended.at,
        created_at=ended.at,
        audit_seq=entry.seq,
    )
    session.add(notice)
    session.flush()
    return notice


def for_recipient(
    session: Session,
    recipient_id: str,
    *,
    pending_only: bool,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[NoticeRow]:
    """The recipient's notices, oldest first, after the cursor ``(created_at, id)``."""
    query = select(NoticeRow).where(NoticeRow.recipient_id == recipient_id)
    if pending_only:
        query = query.where(col(NoticeRow.acknowledged_at).is_(None))
    if after is not None:
        at, notice_id = after
        query = query.where(
            (col(NoticeRow.created_at) > at)
            | ((col(NoticeRow.created_at) == at) & (col(NoticeRow.id) > notice_id))
        )
    query = query.order_by(col(NoticeRow.created_at), col(NoticeRow.id)).limit(limit)
    return list(session.exec(query).all())


def acknowledge(
    session: Session, recipient_id: str, notice_id: str, *, by: str, at: datetime
) -> NoticeRow | None:
    """Record that the recipient erased the data (audited once); ``None`` if the notice
    is not this recipient's. Acknowledging again changes nothing."""
    notice = session.exec(
        select(NoticeRow)
        .where(NoticeRow.id == notice_id, NoticeRow.recipient_id == recipient_id)
        .with_for_update()
    ).first()
    if notice is None or notice.acknowledged_at is not None:
        return notice
    audit_store.append(
        session,
        [
            AuditEntry(
                at=at,
                kind="notice_ack",
                recipient_id=recipient_id,
                contract_id=notice.contract_id,
                grant_ids=(notice.grant_id,),
                channel="notice",
                decision="recorded",
                reasons=(f"erasure confirmed by {by}"[:200],),
                subject_ref=notice.grant_id,
                details={"notice": notice.id, "kind": notice.kind},
            )
        ],
    )
    notice.acknowledged_at = at
    notice.acknowledged_by = by[:128]
    session.add(notice)
    session.flush()
    return notice
