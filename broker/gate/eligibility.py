"""The gate's eligibility preview: which of a contract's categories a vehicle can provide.

Decided in one write transaction (the gate's group commit), in this order:
the recipient is active; the contract is its own, in force and allows its
channel; the contract does not anonymise (refused before any VIN is decoded);
every destination country has a transfer mechanism. Only then is the VIN
decoded against the vehicle-model catalogue (:mod:`broker.policy.eligibility`).
Nothing stored about the vehicle is read: not its telemetry, not its location
switches (this module cannot import the telemetry store; see the import-linter
contracts), so a stored VIN is answered exactly like an unknown one of the same
model.

Every decision is exactly one audit entry of kind ``eligibility`` naming the
vehicle by the keyring's reference (``veh-...``, never the VIN), with the
destination countries and transfer mechanisms like a release, and, for an
answer, the SHA-256 of the canonical JSON of the very document the channel sends.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlmodel import Session

from broker.audit.entry import AuditEntry
from broker.domain.contracts import Channel, Contract
from broker.domain.vehicle_models import VehicleModels
from broker.gate.entries import decided_under
from broker.gate.keyring import Keyring
from broker.gate.release import (
    Denial,
    Eligibility,
    ReleaseRequest,
    VehicleTarget,
    document_digest,
)
from broker.policy.eligibility import answer_document, check_single_vehicle, eligible_categories
from broker.policy.release import Reason, check_contract, check_recipient
from broker.store import audit as audit_store
from broker.store import contracts as contract_store
from broker.store import parties as party_store
from broker.transfer.adequacy import AdequacyTable
from broker.transfer.check import TransferDecision, check_transfer

KIND = "eligibility"

log = logging.getLogger(__name__)


def decide_eligibility(
    session: Session,
    recipient_id: str,
    contract_id: str,
    vin: str,
    now: datetime,
    *,
    keyring: Keyring,
    adequacy: AdequacyTable,
    models: VehicleModels,
) -> Eligibility | Denial:
    audit_store.serialise(session)  # the audit lock first: one lock order for all writers
    contract = contract_store.latest(session, contract_id)
    channel = min(contract.channels) if contract is not None and contract.channels else None
    request = ReleaseRequest(
        recipient_id=recipient_id,
        contract_id=contract_id,
        channel=channel or Channel.PULL,
        purpose=contract.purpose.code if contract is not None else KIND,
        target=VehicleTarget(vin),
        categories=frozenset(),
        since=now,
        until=now,
    )
    subject = keyring.vehicle_ref(vin)
    recipient = party_store.recipient(session, recipient_id)
    if reasons := check_recipient(recipient):
        return _deny(session, request, subject, reasons, now, None, None)
    if reasons := check_contract(contract, recipient_id, request.channel, request.purpose, now):
        return _deny(session, request, subject, reasons, now, contract, None)
    assert contract is not None and recipient is not None
    if reasons := check_single_vehicle(contract):
        return _deny(session, request, subject, reasons, now, contract, None)
    # Even which categories a vehicle can provide goes nowhere without a safeguard.
    transfer = check_transfer(recipient, contract.processing_countries, adequacy, now.date())
    if not transfer.allowed:
        reasons = [Reason("transfer_not_allowed", r) for r in transfer.reasons]
        return _deny(session, request, subject, reasons, now, contract, transfer)

    categories = eligible_categories(contract, models, vin)
    document = answer_document(contract.id, categories)
    digest = document_digest(document)
    entry = _append(
        session,
        request,
        subject,
        now,
        contract,
        transfer,
        decision="released",
        categories=categories,
        reasons=[],
        digest=digest,
    )
    assert entry.seq is not None
    return Eligibility(recipient_id, contract.id, categories, entry.seq, document, digest)


def _deny(
    session: Session,
    request: ReleaseRequest,
    subject: str,
    reasons: list[Reason],
    now: datetime,
    contract: Contract | None,
    transfer: TransferDecision | None,
) -> Denial:
    entry = _append(
        session,
        request,
        subject,
        now,
        contract,
        transfer,
        decision="denied",
        categories=(),
        reasons=reasons,
        digest="",
    )
    assert entry.seq is not None
    log.info(
        "eligibility denied",
        extra={
            "recipient": request.recipient_id,
            "contract": request.contract_id,
            "reasons": [r.code for r in reasons],
        },
    )
    return Denial(request=request, reasons=tuple(reasons), audit_seq=entry.seq)


def _append(
    session: Session,
    request: ReleaseRequest,
    subject: str,
    now: datetime,
    contract: Contract | None,
    transfer: TransferDecision | None,
    *,
    decision: str,
    categories: tuple[str, ...],
    reasons: list[Reason],
    digest: str,
) -> AuditEntry:
    [entry] = audit_store.append(
        session,
        [
            AuditEntry(
                at=now,
                kind=KIND,
                recipient_id=request.recipient_id[:64],
                contract_id=request.contract_id[:64],
                channel=request.channel.value,
                purpose=request.purpose[:100],
                categories=categories,
                **decided_under(contract, transfer),
                decision=decision,
                reasons=tuple(r.text() for r in reasons),
                payload_digest=digest,
                subject_ref=subject,
            )
        ],
    )
    return entry
