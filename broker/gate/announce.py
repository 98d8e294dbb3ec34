"""Grant and fleet events through the gate: decided when sent, audited as what is sent.

A webhook event other than data names a grant and a vehicle, so it leaves the
broker like a release, decided at send time (the worker asks
:meth:`broker.gate.gate.Gate.announce`). There are two kinds.

- **Gated** (``grant.created``, ``fleet.vehicle_joined``): the gate finds the
  recipient's grant for the vehicle (for a fleet join: the operator's fleet
  clearance for it under a contract with the webhook channel) and runs the
  checks of a release now: the recipient is active; the contract is in force
  and allows the webhook channel; the grant is active; every destination
  country has a transfer mechanism. An anonymised contract's recipient hears
  of no single vehicle. The data names the grant, its contract and the vehicle
  as that contract identifies it to this recipient
  (:func:`~broker.protection.protect.vehicle_reference`: the VIN only when the
  contract is identified and names vehicles by VIN; else a pseudonym, or
  nothing). No grant, or any check failing: a denial, and nothing is sent.
- **The written exception** (``grant.ended``, ``grant.expired``,
  ``fleet.vehicle_left``): the notice that a grant ended
  (:mod:`broker.gate.notices`; GDPR Art. 17(2) and 19). It names only what the
  notice names (the grant, its contract and the handle the recipient already
  holds) and goes even when the recipient is suspended or its transfer
  mechanism has lapsed; the entry records the destination countries and the
  mechanism's state (``details["transfer"]``). A ``fleet.vehicle_left`` names
  the fleet clearance that ended when the vehicle left (or, if none was open
  then, the newest that ended before): for a vehicle the operator never held a
  clearance for, it has nothing it may name, so it is denied and not sent.

Either way the answer is exactly one audit entry (kind ``event``): an
:class:`Announcement`, whose ``data`` is what the channel sends (the channel
adds only ``audit_seq``, the entry's number) and whose entry's
``payload_digest`` is :func:`~broker.gate.release.document_digest` of that
``data``, sealed like a release (the data names its event type, so no two
events share a digest); or a :class:`~broker.gate.release.Denial`,
audited with its reasons and naming whose data it concerns (the grant, else the
broker's own reference for the vehicle).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session

from broker.audit.entry import AuditEntry
from broker.clock import format_instant
from broker.domain.contracts import Channel, Contract, ProtectionLevel, effective_terms
from broker.domain.grants import Grant
from broker.domain.legal import Activation
from broker.gate import notices as notice_store
from broker.gate.entries import decided_under
from broker.gate.keyring import Keyring
from broker.gate.release import (
    Denial,
    ForgedRelease,
    ReleaseRequest,
    VehicleTarget,
    document_digest,
    seal_for,
    seal_matches,
)
from broker.policy.release import (
    Reason,
    check_contract,
    check_grant,
    check_recipient,
    pick_grant,
)
from broker.protection.protect import ProtectionContext, vehicle_reference
from broker.store import audit as audit_store
from broker.store import contracts as contract_store
from broker.store import grants as grant_store
from broker.store import parties as party_store
from broker.store.tables import NoticeRow
from broker.transfer.adequacy import AdequacyTable
from broker.transfer.check import TransferDecision, check_transfer

log = logging.getLogger(__name__)

KIND = "event"
GRANT_CREATED = "grant.created"
GRANT_ENDED = "grant.ended"
GRANT_EXPIRED = "grant.expired"
FLEET_JOINED = "fleet.vehicle_joined"
FLEET_LEFT = "fleet.vehicle_left"
#: Events sent only when a release to the recipient would pass now.
GATED = frozenset({GRANT_CREATED, FLEET_JOINED})
#: Events that are the notice of a grant's end: the written exception.
ENDINGS = frozenset({GRANT_ENDED, GRANT_EXPIRED, FLEET_LEFT})


@dataclass(frozen=True)
class EventRequest:
    """A queued grant or fleet event, as the outbox holds it (references only)."""

    recipient_id: str
    event: str
    vin: str | None = None  # kept internally; never sent as such
    grant_id: str | None = None
    contract_id: str | None = None


@dataclass(frozen=True)
class Announcement:
    """An event's data the gate let out: decided now and already audited."""

    request: EventRequest
    data: dict[str, Any]  # exactly what is sent, besides ``audit_seq``
    audit_seq: int
    digest: str
    seal: str = field(repr=False)


def verify_announcement(announcement: object) -> Announcement:
    """The announcement, if the gate made it and its data is unchanged; raises
    :class:`~broker.gate.release.ForgedRelease` otherwise."""
    if not isinstance(announcement, Announcement):
        raise ForgedRelease("a channel accepts only events decided by the gate")
    digest = document_digest(announcement.data)
    if digest != announcement.digest or not seal_matches(
        announcement.audit_seq, digest, announcement.seal
    ):
        raise ForgedRelease("the event's seal does not match its content")
    return announcement


def decide_announcement(
    session: Session,
    request: EventRequest,
    now: datetime,
    *,
    keyring: Keyring,
    adequacy: AdequacyTable,
) -> Announcement | Denial:
    audit_store.serialise(session)  # the audit lock first: one lock order for all writers
    if request.event in GATED:
        return _gated(session, request, now, keyring, adequacy)
    if request.event in ENDINGS:
        return _ending(session, request, now, keyring, adequacy)
    reason = Reason("unknown_event", "not an event the gate decides")
    return _deny(session, request, now, [reason], keyring)


# -- grant.created, fleet.vehicle_joined ----------------------------------------------------


def _gated(
    session: Session,
    request: EventRequest,
    now: datetime,
    keyring: Keyring,
    adequacy: AdequacyTable,
) -> Announcement | Denial:
    grant = _grant_for(session, request, now)
    if grant is None:
        return _deny(session, request, now, check_grant(None, now), keyring)
    recipient = party_store.recipient(session, request.recipient_id)
    contract = contract_store.latest(session, grant.contract_id)
    purpose = contract.purpose.code if contract is not None else ""
    reasons = (
        check_recipient(recipient)
        or check_contract(contract, request.recipient_id, Channel.WEBHOOK, purpose, now)
        or check_grant(grant, now)
    )
    if reasons:
        return _deny(session, request, now, reasons, keyring, grant=grant, contract=contract)
    assert recipient is not None and contract is not None
    consented = contract_store.get(session, grant.contract_id, grant.contract_version)
    terms = effective_terms(consented, contract) if consented is not None else contract
    if terms.protection.level is ProtectionLevel.ANONYMISED:
        reason = Reason(
            "anonymised_contract",
            "an anonymised contract's recipient learns nothing about a single vehicle",
        )
        return _deny(session, request, now, [reason], keyring, grant=grant, contract=contract)
    transfer = check_transfer(recipient, contract.processing_countries, adequacy, now.date())
    if not transfer.allowed:
        reasons = [Reason("transfer_not_allowed", r) for r in transfer.reasons]
        return _deny(
            session, request, now, reasons, keyring, grant=grant, contract=contract,
            transfer=transfer,
        )  # fmt: skip
    context = ProtectionContext(
        contract=terms,
        recipient_id=request.recipient_id,
        pseudonymiser=keyring.pseudonymiser(request.recipient_id, contract.id),
    )
    data = {
        "event": request.event,
        "grant": grant.id,
        "contract": contract.id,
        "vehicle": vehicle_reference(grant.vin, context),
    }
    countries, mechanisms = transfer.audit_fields()
    return _announce(
        session, request, now, data, grant_id=grant.id, contract=contract,
        protection=terms.protection.level.value, countries=countries, mechanisms=mechanisms,
        reasons=(), details={},
    )  # fmt: skip


def _grant_for(session: Session, request: EventRequest, now: datetime) -> Grant | None:
    """The grant the event is about, read under a share lock (as a release reads it)."""
    vin = request.vin
    if not vin:
        return None
    mine = [
        g for g in grant_store.for_vehicle(session, vin) if g.recipient_id == request.recipient_id
    ]
    if request.event == GRANT_CREATED:
        wanted = {g.id for g in mine if g.id == request.grant_id}
    else:  # a fleet join: the operator's fleet clearances under a webhook contract
        wanted = {g.id for g in mine if g.activation is Activation.FLEET_CLEARANCE}
    contract_ids = sorted({g.contract_id for g in mine if g.id in wanted})
    if request.event == FLEET_JOINED:
        contract_ids = [cid for cid in contract_ids if _has_webhook(session, cid)]
    locked = [
        g
        for cid in contract_ids
        for g in grant_store.for_release(session, cid, vins=[vin])
        if g.id in wanted
    ]
    return pick_grant(locked, now)


def _has_webhook(session: Session, contract_id: str) -> bool:
    contract = contract_store.latest(session, contract_id)
    return contract is not None and Channel.WEBHOOK in contract.channels


# -- grant.ended, grant.expired, fleet.vehicle_left: the written exception --------------------


def _ending(
    session: Session,
    request: EventRequest,
    now: datetime,
    keyring: Keyring,
    adequacy: AdequacyTable,
) -> Announcement | Denial:
    notice = _notice_for(session, request)
    if notice is None:
        reason = Reason("no_notice", "no notice of an ended grant of this recipient to send")
        return _deny(session, request, now, [reason], keyring)
    contract = contract_store.latest(session, notice.contract_id)
    countries = contract.processing_countries if contract is not None else ()
    state = notice_store.exception_state(
        session, request.recipient_id, countries, adequacy, now.date()
    )
    data: dict[str, Any] = {
        "event": request.event,
        "grant": notice.grant_id,
        "contract": notice.contract_id,
        "vehicle": notice.vehicle_ref,
        "notice": notice.id,
    }
    if request.event != FLEET_LEFT:
        data |= {
            "reason": notice.reason,
            "erase": True,
            "erase_by": format_instant(notice.erase_by) if notice.erase_by else None,
        }
    return _announce(
        session, request, now, data, grant_id=notice.grant_id, contract=contract,
        protection=contract.protection.level.value if contract is not None else "",
        countries=state.countries, mechanisms=state.mechanisms,
        reasons=(f"the notice of a grant's end ({notice_store.REQUIRED_BY})",),
        details={"notice": notice.id} | state.details,
    )  # fmt: skip


def _notice_for(session: Session, request: EventRequest) -> NoticeRow | None:
    if request.grant_id is not None:
        found = notice_store.latest_for_grant(session, request.grant_id)
        return found if found is not None and found.recipient_id == request.recipient_id else None
    if request.event != FLEET_LEFT or not request.vin:
        return None
    ended = [
        g.id
        for g in grant_store.for_vehicle(session, request.vin)
        if g.recipient_id == request.recipient_id
        and g.activation is Activation.FLEET_CLEARANCE
        and g.state.terminal
    ]
    found_notices = [n for i in ended if (n := notice_store.latest_for_grant(session, i))]
    return max(found_notices, key=lambda n: (n.created_at, n.id), default=None)


# -- the entry ------------------------------------------------------------------------------


def _announce(
    session: Session,
    request: EventRequest,
    now: datetime,
    data: dict[str, Any],
    *,
    grant_id: str,
    contract: Contract | None,
    protection: str,
    countries: tuple[str, ...],
    mechanisms: tuple[str, ...],
    reasons: tuple[str, ...],
    details: dict[str, Any],
) -> Announcement:
    digest = document_digest(data)
    [entry] = audit_store.append(
        session,
        [
            AuditEntry(
                at=now,
                kind=KIND,
                recipient_id=request.recipient_id[:64],
                contract_id=contract.id if contract is not None else "",
                contract_version=contract.version if contract is not None else None,
                grant_ids=(grant_id,),
                channel=Channel.WEBHOOK.value,
                purpose=contract.purpose.code[:100] if contract is not None else "",
                protection=protection,
                destination_countries=countries,
                transfer_mechanisms=mechanisms,
                legal_basis=contract.legal_basis.value if contract is not None else "",
                decision="released",
                reasons=reasons,
                payload_digest=digest,
                subject_ref=grant_id,
                details={"event": request.event} | details,
            )
        ],
    )
    assert entry.seq is not None
    return Announcement(request, data, entry.seq, digest, seal_for(entry.seq, digest))


def _deny(
    session: Session,
    request: EventRequest,
    now: datetime,
    reasons: list[Reason],
    keyring: Keyring,
    *,
    grant: Grant | None = None,
    contract: Contract | None = None,
    transfer: TransferDecision | None = None,
) -> Denial:
    grant_id = grant.id if grant is not None else request.grant_id
    if grant_id:
        subject = grant_id
    elif request.vin:
        subject = keyring.vehicle_ref(request.vin)
    else:
        subject = ""
    [entry] = audit_store.append(
        session,
        [
            AuditEntry(
                at=now,
                kind=KIND,
                recipient_id=request.recipient_id[:64],
                contract_id=(contract.id if contract else request.contract_id or "")[:64],
                grant_ids=(grant_id,) if grant_id else (),
                channel=Channel.WEBHOOK.value,
                purpose=contract.purpose.code[:100] if contract else "",
                **decided_under(contract, transfer),
                decision="denied",
                reasons=tuple(r.text() for r in reasons),
                subject_ref=subject,
                details={"event": request.event},
            )
        ],
    )
    assert entry.seq is not None
    log.info(
        "event denied",
        extra={
            "recipient": request.recipient_id,
            "event": request.event,
            "reasons": [r.code for r in reasons],
        },
    )
    release_request = ReleaseRequest(
        recipient_id=request.recipient_id,
        contract_id=contract.id if contract else request.contract_id or "",
        channel=Channel.WEBHOOK,
        purpose=request.event,
        target=VehicleTarget(""),
        categories=frozenset(),
        since=now,
        until=now,
    )
    return Denial(request=release_request, reasons=tuple(reasons), audit_seq=entry.seq)
