"""Notices: when a grant ends, the gate releases an audited notice to its recipient.

The notice says the grant ended and the data must be erased (EU Data Act
Art. 6; GDPR Art. 17 and 19). It carries only the grant reference and the
contract's identifier for the vehicle, and it is released even though the
grant is no longer active.
"""

from __future__ import annotations

import secrets

from sqlmodel import Session

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
