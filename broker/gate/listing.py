"""The gate's listings: which vehicles and grants a recipient's token covers.

A listing names vehicles (a VIN or a pseudonym) and grants, so it leaves the
broker like any release: decided here, in one write transaction, and audited as
exactly one entry (kind ``listing``) whose payload digest is the SHA-256 of the
canonical JSON of the very document the channel sends. A grant is listed only
when a release of its data would pass the same checks now:

- the recipient is active, and the grant's contract is in force and allows the
  channel;
- the contract's sender constraint is met by the token (a bearer token names
  no vehicle under a DPoP-only contract; the grants view names only the grant
  handles the recipient's tokens already carry, so it answers any live token);
- the grant is active;
- every destination country of the contract has a transfer mechanism;
- the contract does not anonymise (its recipient learns nothing about one
  vehicle), and a pseudonymised grant is never listed beside an identified
  grant of the same vehicle to the same recipient (the pair would join the
  pseudonym to the VIN).

When something could have been listed but nothing may be, the answer is a
:class:`~broker.gate.release.Denial` (audited, naming the grants it concerned);
when the token covers nothing at all the listing is empty and names nothing, so
nothing is audited.
"""

from __future__ import annotations

import hmac
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlmodel import Session

from broker.audit.entry import AuditEntry
from broker.clock import format_instant
from broker.domain.contracts import Channel, Contract, ProtectionLevel, VehicleIdentifier
from broker.domain.grants import Grant
from broker.gate.keyring import Keyring
from broker.gate.release import (
    Denial,
    ForgedRelease,
    ReleaseRequest,
    VehicleTarget,
    document_digest,
    seal_for,
)
from broker.policy.release import Reason, check_recipient
from broker.store import audit as audit_store
from broker.store import contracts as contract_store
from broker.store import grants as grant_store
from broker.store import parties as party_store
from broker.transfer.adequacy import AdequacyTable
from broker.transfer.check import TransferDecision, check_transfer

KIND = "listing"
#: ``subject_ref`` of a listing naming several grants (each is in ``grant_ids``).
SEVERAL = "listing"

SENDER_CONSTRAINT = "sender_constraint_not_met"


class ListingView(StrEnum):
    """The two shapes of a listing: per vehicle, or per grant."""

    VEHICLES = "vehicles"
    GRANTS = "grants"


@dataclass(frozen=True)
class ListingRequest:
    recipient_id: str
    view: ListingView
    channel: Channel = Channel.PULL
    #: A customer-bound token: only these grants (None: every grant of the recipient).
    grant_ids: tuple[str, ...] | None = None
    #: Whether the token is bound to the client's key (DPoP, RFC 9449).
    sender_constrained: bool = False


@dataclass(frozen=True)
class Listed:
    """One grant that may be named, and how the recipient names its vehicle."""

    grant: Grant
    contract: Contract
    handle: str


@dataclass(frozen=True)
class Listing:
    """What may be named, as the document to send; audited when it names anything."""

    request: ListingRequest
    document: dict[str, Any]
    listed: tuple[Listed, ...]
    withheld: tuple[Reason, ...]
    audit_seq: int | None  # None: the listing names nothing, so nothing was audited
    digest: str
    seal: str = field(repr=False)


def handle_for(grant: Grant, contract: Contract, keyring: Keyring) -> str:
    """What the recipient calls the grant's vehicle: its VIN, its pseudonym, or the grant."""
    if contract.vehicle_identifier is VehicleIdentifier.VIN:
        return grant.vin
    if contract.vehicle_identifier is VehicleIdentifier.PSEUDONYM:
        return keyring.pseudonymiser(grant.recipient_id, contract.id).vehicle(grant.vin)
    return grant.id


def verify_listing(listing: object) -> Listing:
    """The listing, if the gate made it; raises :class:`ForgedRelease` otherwise."""
    if not isinstance(listing, Listing):
        raise ForgedRelease("a channel accepts only listings made by the gate")
    expected = seal_for(listing.audit_seq or 0, listing.digest)
    if not hmac.compare_digest(expected, listing.seal) or listing.digest != document_digest(
        listing.document
    ):
        raise ForgedRelease("the listing's seal does not match its content")
    return listing


def decide_listing(
    session: Session,
    request: ListingRequest,
    now: datetime,
    *,
    keyring: Keyring,
    adequacy: AdequacyTable,
) -> Listing | Denial:
    audit_store.serialise(session)  # the audit lock first: one lock order for all writers
    recipient = party_store.recipient(session, request.recipient_id)
    named = list(request.grant_ids) if request.grant_ids is not None else None
    candidates = [
        g for g in grant_store.covered_by(session, request.recipient_id, named) if g.is_active(now)
    ]
    if refused_recipient := check_recipient(recipient):
        return _deny(session, request, refused_recipient, candidates, now)
    assert recipient is not None

    contracts: dict[str, Contract | None] = {}
    transfers: dict[str, TransferDecision] = {}
    listed: list[Listed] = []
    refused: list[Grant] = []
    reasons: list[Reason] = []
    for grant in candidates:
        if grant.contract_id not in contracts:
            contracts[grant.contract_id] = contract_store.latest(session, grant.contract_id)
        contract = contracts[grant.contract_id]
        if contract is None or request.channel not in contract.channels:
            continue  # not a grant of this channel: nothing to say about it here
        refusal = _refusal(contract, request, now)
        if refusal is None:
            if contract.id not in transfers:
                transfers[contract.id] = check_transfer(
                    recipient, contract.processing_countries, adequacy, now.date()
                )
            transfer = transfers[contract.id]
            if not transfer.allowed:
                refusal = Reason("transfer_not_allowed", "; ".join(transfer.reasons))
        if refusal is not None:
            refused.append(grant)
            if refusal not in reasons:
                reasons.append(refusal)
            continue
        listed.append(Listed(grant, contract, handle_for(grant, contract, keyring)))

    listed, paired = _without_pseudonyms_of_identified(listed)
    if paired:
        refused += [item.grant for item in paired]
        reasons.append(
            Reason(
                "identified_elsewhere",
                "a vehicle named by its VIN under another contract is not also listed "
                "by its pseudonym",
            )
        )
    if not listed and reasons:
        return _deny(session, request, reasons, refused, now)

    listed.sort(key=lambda item: (item.contract.id, item.handle, item.grant.id))
    document = _document(request.view, listed)
    digest = document_digest(document)
    if not listed:
        return Listing(request, document, (), tuple(reasons), None, digest, seal_for(0, digest))
    used = [transfers[c] for c in sorted({item.contract.id for item in listed})]
    entry = _entry(
        request,
        now,
        grants=[item.grant for item in listed],
        contracts=[item.contract for item in listed],
        transfers=used,
        decision="partial" if reasons else "released",
        reasons=reasons,
        digest=digest,
    )
    [stored] = audit_store.append(session, [entry])
    assert stored.seq is not None
    return Listing(
        request,
        document,
        tuple(listed),
        tuple(reasons),
        stored.seq,
        digest,
        seal_for(stored.seq, digest),
    )


def _refusal(contract: Contract, request: ListingRequest, now: datetime) -> Reason | None:
    if not contract.is_valid_at(now):
        return Reason("contract_not_in_force", "the contract is not in force")
    if (
        request.view is ListingView.VEHICLES
        and contract.sender_constraint == "dpop"
        and not request.sender_constrained
    ):
        return Reason(SENDER_CONSTRAINT, "this contract requires DPoP-bound tokens (RFC 9449)")
    if contract.protection.level is ProtectionLevel.ANONYMISED:
        return Reason(
            "anonymised_contract",
            "an anonymised contract's recipient learns nothing about a single vehicle",
        )
    return None


def _without_pseudonyms_of_identified(
    listed: list[Listed],
) -> tuple[list[Listed], list[Listed]]:
    """``listed`` less the pseudonymised grants of vehicles also listed as identified."""
    identified = {
        item.grant.vin
        for item in listed
        if item.contract.protection.level is ProtectionLevel.IDENTIFIED
    }
    kept, paired = [], []
    for item in listed:
        level = item.contract.protection.level
        if level is not ProtectionLevel.IDENTIFIED and item.grant.vin in identified:
            paired.append(item)
        else:
            kept.append(item)
    return kept, paired


def _document(view: ListingView, listed: list[Listed]) -> dict[str, Any]:
    if view is ListingView.GRANTS:
        return {
            "grants": [
                {
                    "grant": item.grant.id,
                    "contract": item.contract.id,
                    "contract_version": item.grant.contract_version,
                    "categories": sorted(item.grant.categories & item.contract.category_ids),
                    "state": "active",
                    "valid_from": format_instant(item.grant.valid_from),
                }
                for item in listed
            ]
        }
    return {
        "vehicles": [
            {
                "vehicle": item.handle,
                "contract": item.contract.id,
                "grant": item.grant.id,
                "categories": sorted(item.grant.categories & item.contract.category_ids),
                "since": format_instant(item.grant.valid_from),
                "valid_until": format_instant(item.grant.valid_until)
                if item.grant.valid_until
                else None,
                "location_precision": item.grant.location_precision,
                "sender_constraint": item.contract.sender_constraint,
            }
            for item in listed
        ]
    }


def _deny(
    session: Session,
    request: ListingRequest,
    reasons: list[Reason],
    grants: list[Grant],
    now: datetime,
) -> Denial:
    entry = _entry(
        request,
        now,
        grants=grants,
        contracts=[],
        transfers=[],
        decision="denied",
        reasons=reasons,
        digest="",
    )
    [stored] = audit_store.append(session, [entry])
    assert stored.seq is not None
    release_request = ReleaseRequest(
        recipient_id=request.recipient_id,
        contract_id="",
        channel=request.channel,
        purpose=KIND,
        target=VehicleTarget(""),
        categories=frozenset(),
        since=now,
        until=now,
    )
    return Denial(request=release_request, reasons=tuple(reasons), audit_seq=stored.seq)


def _entry(
    request: ListingRequest,
    now: datetime,
    *,
    grants: list[Grant],
    contracts: list[Contract],
    transfers: list[TransferDecision],
    decision: str,
    reasons: list[Reason],
    digest: str,
) -> AuditEntry:
    """One entry for the whole answer; contract fields only when one contract answers."""
    distinct = {c.id: c for c in contracts}
    only = next(iter(distinct.values())) if len(distinct) == 1 else None
    countries: set[str] = set()
    mechanisms: set[str] = set()
    for transfer in transfers:
        names, used = transfer.audit_fields()
        countries.update(names)
        mechanisms.update(used)
    ids = sorted({g.id for g in grants})
    by_contract: dict[str, int] = defaultdict(int)
    for contract in contracts:
        by_contract[contract.id] += 1
    return AuditEntry(
        at=now,
        kind=KIND,
        recipient_id=request.recipient_id[:64],
        contract_id=only.id if only else "",
        contract_version=only.version if only else None,
        grant_ids=tuple(ids),
        channel=request.channel.value,
        purpose=only.purpose.code[:100] if only else "",
        record_count=len(grants) if decision != "denied" else 0,
        protection=only.protection.level.value if only else "",
        destination_countries=tuple(sorted(countries)),
        transfer_mechanisms=tuple(sorted(mechanisms)),
        legal_basis=only.legal_basis.value if only else "",
        decision=decision,
        reasons=tuple(r.text() for r in reasons),
        payload_digest=digest,
        subject_ref=ids[0] if len(ids) == 1 else SEVERAL,
        details={"listing": request.view.value, "contracts": dict(sorted(by_contract.items()))},
    )
