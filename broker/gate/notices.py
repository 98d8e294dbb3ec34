"""Notices: when a grant ends, the gate releases an audited notice to its recipient.

Pull-only recipients read them from the notices feed and acknowledge each one
(the data is erased); the acknowledgement is audited too, so the car maker can
show who confirmed erasure and who did not.

The notice says the grant ended and the data must be erased (EU Data Act
Art. 6; GDPR Art. 17 and 19). It carries only the grant reference and the
contract's identifier for the vehicle, and it is released even though the
grant is no longer active.

It is the gate's written exception: a notice of a grant's end reaches the
recipient that received data under the grant even when that recipient is
suspended or its transfer mechanism has lapsed (GDPR Art. 17(2) and 19 require
telling it to erase). It names only the handle that recipient already holds,
and every entry about it records the destination countries and the state of
the transfer mechanism at that moment (:func:`exception_state`: the transfer
check is run and recorded, never used to refuse). Each page of the notices feed
that lists a notice is one audit entry (kind ``notice_feed``) whose payload
digest is that of the ``notices`` list sent (:func:`read_feed`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlmodel import Session, col, select

from broker.audit.entry import AuditEntry
from broker.clock import format_instant
from broker.domain.contracts import Channel
from broker.gate.keyring import Keyring
from broker.gate.release import document_digest
from broker.gate.revocation import GrantEnded
from broker.protection.protect import ProtectionContext, vehicle_reference
from broker.store import audit as audit_store
from broker.store import contracts as contract_store
from broker.store import parties as party_store
from broker.store.tables import NoticeRow
from broker.transfer.adequacy import AdequacyTable
from broker.transfer.check import check_transfer

GRANT_ENDED = "grant_ended"
#: Why a notice of a grant's end goes even where a release would be refused.
REQUIRED_BY = "GDPR Art. 17(2), 19"
FEED_KIND = "notice_feed"
#: ``subject_ref`` of a feed page naming several grants (each is in ``grant_ids``).
SEVERAL = "notice_feed"


@dataclass(frozen=True)
class ExceptionState:
    """Where a notice goes and under what: recorded, never a reason to refuse it."""

    countries: tuple[str, ...]
    mechanisms: tuple[str, ...]
    details: dict[str, Any]


def exception_state(
    session: Session,
    recipient_id: str,
    contract_countries: Iterable[str],
    adequacy: AdequacyTable,
    on: date,
) -> ExceptionState:
    """The destination countries, the mechanisms that cover them, and whether the
    transfer check would allow a release now (``details["transfer"]``, with its
    reasons when not): the written exception records them and sends anyway."""
    recipient = party_store.recipient(session, recipient_id)
    details: dict[str, Any] = {"exception": REQUIRED_BY}
    if recipient is None:
        details |= {"recipient": "unknown", "transfer": "not_allowed"}
        details["transfer_reasons"] = ["the recipient is not known"]
        return ExceptionState((), (), details)
    transfer = check_transfer(recipient, sorted(set(contract_countries)), adequacy, on)
    countries, mechanisms = transfer.audit_fields()
    details["recipient"] = recipient.status.value
    details["transfer"] = "allowed" if transfer.allowed else "not_allowed"
    if not transfer.allowed:
        details["transfer_reasons"] = [r[:200] for r in transfer.reasons[:5]]
    return ExceptionState(countries, mechanisms, details)


def describe(notice: NoticeRow) -> dict[str, Any]:
    """The notice as the recipient receives it (the feed, its acknowledgement)."""
    return {
        "id": notice.id,
        "kind": notice.kind,
        "grant": notice.grant_id,
        "contract": notice.contract_id,
        "vehicle": notice.vehicle_ref,
        "reason": notice.reason,
        "erase": True,
        "erase_by": format_instant(notice.erase_by) if notice.erase_by else None,
        "created_at": format_instant(notice.created_at),
        "acknowledged_at": format_instant(notice.acknowledged_at)
        if notice.acknowledged_at
        else None,
    }


def issue_notice(
    session: Session, ended: GrantEnded, keyring: Keyring, adequacy: AdequacyTable
) -> NoticeRow:
    grant = ended.grant
    contract = contract_store.get(session, grant.contract_id, grant.contract_version)
    if contract is None:
        raise LookupError(f"contract {grant.contract_id} v{grant.contract_version} is missing")
    state = exception_state(
        session, grant.recipient_id, contract.processing_countries, adequacy, ended.at.date()
    )
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
                destination_countries=state.countries,
                transfer_mechanisms=state.mechanisms,
                legal_basis=contract.legal_basis.value,
                decision="released",
                reasons=(f"grant {grant.state.value}: {ended.reason}",),
                subject_ref=grant.id,
                details={"notice": GRANT_ENDED, "erase": True} | state.details,
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


def latest_for_grant(session: Session, grant_id: str) -> NoticeRow | None:
    """The newest notice issued when the grant ended."""
    return session.exec(
        select(NoticeRow)
        .where(NoticeRow.grant_id == grant_id)
        .order_by(col(NoticeRow.created_at).desc(), col(NoticeRow.id).desc())
    ).first()


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


@dataclass(frozen=True)
class FeedPage:
    """One page of the notices feed: what was read (for the cursor), what is sent, and
    its audit entry (``None`` when the page lists nothing, so names no one)."""

    rows: tuple[NoticeRow, ...]
    notices: tuple[dict[str, Any], ...]
    audit_seq: int | None
    digest: str


def read_feed(
    session: Session,
    recipient_id: str,
    *,
    pending_only: bool,
    after: tuple[datetime, str] | None,
    limit: int,
    grant_ids: frozenset[str] | None,
    adequacy: AdequacyTable,
    now: datetime,
) -> FeedPage:
    """A page of the recipient's notices (only those of ``grant_ids`` for a customer-bound
    token), audited as one entry in this transaction when it lists any. Suspended
    recipients read it too: it is the written exception (see the module docstring)."""
    audit_store.serialise(session)
    rows = for_recipient(session, recipient_id, pending_only=pending_only, after=after, limit=limit)
    shown = [n for n in rows if grant_ids is None or n.grant_id in grant_ids]
    listed = [describe(n) for n in shown]
    digest = document_digest(listed)
    if not shown:
        return FeedPage(tuple(rows), (), None, digest)
    contracts = {
        c.id: c
        for cid in sorted({n.contract_id for n in shown})
        if (c := contract_store.latest(session, cid)) is not None
    }
    countries = {country for c in contracts.values() for country in c.processing_countries}
    state = exception_state(session, recipient_id, countries, adequacy, now.date())
    only = next(iter(contracts.values())) if len(contracts) == 1 else None
    ids = sorted({n.grant_id for n in shown})
    [entry] = audit_store.append(
        session,
        [
            AuditEntry(
                at=now,
                kind=FEED_KIND,
                recipient_id=recipient_id[:64],
                contract_id=only.id if only else "",
                contract_version=only.version if only else None,
                grant_ids=tuple(ids),
                channel=Channel.PULL.value,
                record_count=len(listed),
                destination_countries=state.countries,
                transfer_mechanisms=state.mechanisms,
                legal_basis=only.legal_basis.value if only else "",
                decision="released",
                reasons=(f"{len(listed)} notice(s) of ended grants: erase the data",),
                payload_digest=digest,
                subject_ref=ids[0] if len(ids) == 1 else SEVERAL,
                details={"notices": len(listed)} | state.details,
            )
        ],
    )
    assert entry.seq is not None
    return FeedPage(tuple(rows), tuple(listed), entry.seq, digest)


def acknowledgement(notice: NoticeRow) -> dict[str, Any]:
    """The answer to an acknowledgement: the notice's own id and when it was acknowledged.

    It names no grant, vehicle or customer (the recipient has the notice from the feed),
    so acknowledging again needs no audit entry of its own."""
    return {
        "id": notice.id,
        "acknowledged_at": format_instant(notice.acknowledged_at)
        if notice.acknowledged_at
        else None,
    }


def acknowledge(
    session: Session,
    recipient_id: str,
    notice_id: str,
    *,
    by: str,
    at: datetime,
    adequacy: AdequacyTable,
) -> NoticeRow | None:
    """Record that the recipient erased the data (audited once, with the digest of the
    :func:`acknowledgement` the answer gives back); ``None`` if the notice is not this
    recipient's. Acknowledging again changes nothing (and answers the same)."""
    audit_store.serialise(session)  # the audit lock before the notice's row lock
    notice = session.exec(
        select(NoticeRow)
        .where(NoticeRow.id == notice_id, NoticeRow.recipient_id == recipient_id)
        .with_for_update()
    ).first()
    if notice is None or notice.acknowledged_at is not None:
        return notice
    notice.acknowledged_at = at
    notice.acknowledged_by = by[:128]
    contract = contract_store.latest(session, notice.contract_id)
    countries = contract.processing_countries if contract is not None else ()
    state = exception_state(session, recipient_id, countries, adequacy, at.date())
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
                destination_countries=state.countries,
                transfer_mechanisms=state.mechanisms,
                legal_basis=contract.legal_basis.value if contract is not None else "",
                decision="recorded",
                reasons=(f"erasure confirmed by {by}"[:200],),
                payload_digest=document_digest(acknowledgement(notice)),
                subject_ref=notice.grant_id,
                details={"notice": notice.id, "kind": notice.kind} | state.details,
            )
        ],
    )
    session.add(notice)
    session.flush()
    return notice
