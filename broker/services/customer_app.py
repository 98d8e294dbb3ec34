"""The customer app's use cases: see every grant and transfer, end a grant, switch
location, and take a copy of one's data (GDPR Art. 7(3), 15, 20 and 21).

Every function works for one customer and inside the caller's transaction, and
returns plain JSON-ready values that the pages and the JSON API both show.
What a customer may see and do:

* **grants**: those they gave (consent, service contract), and the
  vehicle-linked ones (legitimate interest, legal obligation, fleet clearance)
  of the vehicles they own or drive now. Anything else does not exist for them
  (:class:`~broker.errors.NotFound`, the same answer as for an id never issued).
* **withdrawal** of a consent or service-contract grant they gave; **objection**
  to a legitimate-interest grant of a vehicle they own. Both go through
  :class:`~broker.services.grants.GrantService`, so the revocation listeners
  (tokens refused, queued deliveries dropped, the recipient's notice) run in
  the same transaction. A legal obligation admits no objection: it is shown
  with that explanation.
* **location**: an owner switches collection and sharing on or off; a current
  secondary driver may only switch them off. The vehicle row is what ingest and
  the gate read, so it applies to every channel at once; each change is audited.
* **transfers**: everything that left about them, as the audit log holds it
  (:mod:`broker.services.disclosures`): releases, listings, webhook events and
  notices under their grants, and eligibility answers about a vehicle they held;
  a day's repeated polling of one recipient is one item counting its ``occurrences``.
* **the copy** (Art. 15 and 20): every copy handed out is itself an audit entry
  (``subject_access``), appended in the transaction that read the data; it names
  the customer by a keyed reference and holds counts only, never a VIN or contact data.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from broker.audit.entry import AuditEntry
from broker.clock import format_instant
from broker.documents import DocumentLibrary
from broker.domain.grants import Grant, GrantAction, GrantState
from broker.domain.legal import Activation, LegalBasis, admits_objection
from broker.errors import BrokerError, NotFound, TransitionRefused
from broker.gate.keyring import Keyring
from broker.services import disclosures
from broker.services.disclosures import Disclosure
from broker.services.grants import GrantService
from broker.store import audit as audit_store
from broker.store import contracts as contract_store
from broker.store import customer_view
from broker.store import parties as party_store
from broker.store.customer_view import Holding
from broker.store.own_data import OwnedPeriod, own_records
from broker.transfer.adequacy import AdequacyTable
from broker.transfer.check import check_transfer
from broker.vault.contacts import load_contact
from broker.vault.vault import Vault

log = logging.getLogger(__name__)

COPY_FORMAT = "vehicle-data-broker/customer-copy"
COPY_VERSION = 1
SUBJECT_ACCESS = "subject_access"
MAX_PAGE_SIZE = 100
OWNER = "owner"
_ACTIVE_STATES = frozenset({GrantState.ACTIVE, GrantState.SUSPENDED})


class NotPermitted(BrokerError):
    """The customer may see this, but not make this change."""

    code = "not_permitted"
    status = 403
    title = "Not permitted"


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    def as_json(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "page": self.page,
            "per_page": self.per_page,
            "total": self.total,
            "pages": self.pages,
        }


class CustomerApp:
    """The customer app's use cases (see the module docstring)."""

    def __init__(
        self,
        *,
        grants: GrantService,
        documents: DocumentLibrary,
        adequacy: AdequacyTable,
        vault: Vault,
        keyring: Keyring,
    ) -> None:
        self.grants = grants
        self.documents = documents
        self.adequacy = adequacy
        self.vault = vault
        self.keyring = keyring

    # -- reading -----------------------------------------------------------------------------

    def vehicles(self, session: Session, customer_id: str, now: datetime) -> list[dict[str, Any]]:
        """The vehicles the customer owns or drives now, with their location switches."""
        return [_vehicle(h) for h in _current(customer_view.holdings(session, customer_id), now)]

    def overview(self, session: Session, customer_id: str, now: datetime) -> dict[str, Any]:
        """Every grant the customer may see, grouped per vehicle (current vehicles first)."""
        held = customer_view.holdings(session, customer_id)
        current = _current(held, now)
        grants = self._visible(session, customer_id, held, now)
        transfers = disclosures.about_customer(session, self.keyring, grants, held)
        checks = [d for d in transfers if d.entry.kind == customer_view.ELIGIBILITY]
        names = _recipient_names(session, {d.entry.recipient_id for d in checks})
        models = {h.vin: h.model for h in held}
        vehicles: dict[str, dict[str, Any]] = {
            h.vin: _vehicle(h) | {"current": True, "grants": [], "eligibility_checks": []}
            for h in current
        }

        def vehicle(vin: str) -> dict[str, Any]:
            return vehicles.setdefault(
                vin,
                {"vin": vin, "model": models.get(vin), "current": False, "grants": [],
                 "eligibility_checks": []},
            )  # fmt: skip

        for grant in grants:
            vehicle(grant.vin)["grants"].append(
                self._describe(session, customer_id, grant, held, now, transfers)
            )
        for check in checks:
            for vin in check.vins:
                vehicle(vin)["eligibility_checks"].append(disclosures.item(check, names))
        return {"vehicles": sorted(vehicles.values(), key=lambda v: (not v["current"], v["vin"]))}

    def grant(
        self, session: Session, customer_id: str, grant_id: str, now: datetime
    ) -> dict[str, Any]:
        """One grant the customer may see; :class:`NotFound` for any other id."""
        held = customer_view.holdings(session, customer_id)
        grant = self._find(session, customer_id, grant_id, held, now)
        return self._describe(
            session, customer_id, grant, held, now, self._transfers(session, [grant], held)
        )

    def transfers(
        self,
        session: Session,
        customer_id: str,
        grant_id: str,
        now: datetime,
        *,
        page: int = 1,
        per_page: int = 20,
    ) -> Page:
        """What left under one grant, newest first, a page at a time (a day's repeats of
        one listing or feed page are one item, with their ``occurrences``)."""
        page, per_page = max(1, page), min(max(1, per_page), MAX_PAGE_SIZE)
        held = customer_view.holdings(session, customer_id)
        grant = self._find(session, customer_id, grant_id, held, now)
        entries = self._transfers(session, [grant], held)
        names = _recipient_names(session, {grant.recipient_id})
        start = (page - 1) * per_page
        items = [disclosures.item(d, names) for d in entries[start : start + per_page]]
        return Page(items, page, per_page, len(entries))

    # -- changing ----------------------------------------------------------------------------

    def end_grant(
        self,
        session: Session,
        customer_id: str,
        grant_id: str,
        action: GrantAction,
        now: datetime,
    ) -> dict[str, Any]:
        """Withdraw or object to a grant, through the grant service (listeners included)."""
        if action not in (GrantAction.WITHDRAW, GrantAction.OBJECT):
            raise ValueError("the customer app only withdraws or objects")
        held = customer_view.holdings(session, customer_id)
        grant = self._find(session, customer_id, grant_id, held, now)
        contract = contract_store.get(session, grant.contract_id, grant.contract_version)
        if contract is None:
            raise LookupError(f"grant {grant.id} refers to a missing contract")
        rights = _rights(grant, contract.legal_basis, customer_id, held, now)
        if action.value not in rights["allowed"]:
            raise TransitionRefused(
                _REFUSALS.get(rights["note"], "this grant cannot be ended this way"),
                grant=grant.id,
                action=action.value,
            )
        reason = (
            "consent withdrawn by the customer"
            if action is GrantAction.WITHDRAW
            else "the customer objected (GDPR Art. 21)"
        )
        ended = self.grants.transition(session, grant.id, action, at=now, reason=reason)
        log.info(
            "grant ended by the customer",
            extra={"customer_id": customer_id, "grant_id": grant.id, "action": action.value},
        )
        return self._describe(
            session, customer_id, ended, held, now, self._transfers(session, [ended], held)
        )

    def set_location(
        self,
        session: Session,
        customer_id: str,
        vin: str,
        *,
        collection: bool,
        sharing: bool,
        now: datetime,
    ) -> dict[str, Any]:
        """Switch the vehicle's location collection and sharing (audited)."""
        # The audit lock first (one lock order with the gate): the switches read below are
        # then the ones this change replaces, whoever changed them just before.
        audit_store.serialise(session)
        held = _current(customer_view.holdings(session, customer_id), now)
        holding = next((h for h in held if h.vin == vin), None)
        if holding is None:
            raise NotFound("no such vehicle")
        before = (holding.location_collection, holding.location_sharing)
        widens = (collection and not before[0]) or (sharing and not before[1])
        if widens and holding.role != OWNER:
            raise NotPermitted("only the vehicle's owner can switch location on")
        changed = customer_view.set_location(session, vin, collection=collection, sharing=sharing)
        if changed:
            reference = self.keyring.pseudonymiser("broker", "location-settings").vehicle(vin)
            audit_store.append(
                session,
                [
                    AuditEntry(
                        at=now,
                        kind="location_setting",
                        decision="recorded",
                        categories=("vehicle.position",),
                        reasons=(f"changed by the vehicle's {holding.role.replace('_', ' ')}",),
                        subject_ref=f"vehicle:{reference}"[:128],
                        details={
                            "collection": collection,
                            "sharing": sharing,
                            "previous": {"collection": before[0], "sharing": before[1]},
                        },
                    )
                ],
            )
            log.info(
                "location setting changed",
                extra={"customer_id": customer_id, "collection": collection, "sharing": sharing},
            )
        updated = Holding(
            holding.vin,
            holding.model,
            holding.role,
            holding.since,
            holding.until,
            collection,
            sharing,
        )
        return _vehicle(updated)

    # -- the copy (Art. 15 / 20) -------------------------------------------------------------

    def export(self, session: Session, customer_id: str, now: datetime) -> dict[str, Any]:
        """Everything held about the customer, and every recipient it went to (audited).

        Runs in a write transaction: the audit lock is taken before anything is read,
        so the copy lists exactly the releases logged before its own ``subject_access``
        entry, which commits with the reads or not at all.
        """
        customer = party_store.customer(session, customer_id)
        if customer is None:
            raise NotFound("no such customer")
        audit_store.serialise(session)  # one lock order with the gate
        held = customer_view.holdings(session, customer_id)
        grants = self._visible(session, customer_id, held, now, former=True)
        entries = disclosures.about_customer(session, self.keyring, grants, held)
        recipient_ids = {g.recipient_id for g in grants} | {d.entry.recipient_id for d in entries}
        names = _recipient_names(session, recipient_ids)
        described = []
        for grant in grants:
            view = self._describe(session, customer_id, grant, held, now, entries)
            view["transfers"] = [
                disclosures.item(d, names) for d in entries if grant.id in d.grants
            ]
            described.append(view)
        periods = [OwnedPeriod(h.vin, h.since, h.until) for h in held if h.role == OWNER]
        records = own_records(session, self.vault, customer_id, periods)
        purposes = {
            (g["contract"]["id"], g["purpose"]["code"]): {
                "contract": g["contract"]["id"],
                "recipient": g["recipient"]["id"],
                "purpose": g["purpose"],
                "legal_basis": g["legal_basis"],
            }
            for g in described
        }
        counts = dict(sorted(Counter(r.category for r in records).items()))
        self._record_copy(session, customer_id, now, counts=counts, grants=grants, entries=entries)
        return {
            "format": COPY_FORMAT,
            "version": COPY_VERSION,
            "generated_at": format_instant(now),
            "account": {
                "id": customer.id,
                "login": customer.login,
                "language": customer.language.value,
            },
            "contact": load_contact(session, self.vault, customer_id),
            "vehicles": [
                _vehicle(h) | {"since": format_instant(h.since), "until": _instant(h.until)}
                for h in held
            ],
            "purposes": sorted(purposes.values(), key=lambda p: (p["contract"], p["recipient"])),
            "grants": described,
            "recipients": disclosures.recipients(entries, names),
            "transfers": [disclosures.item(d, names) for d in entries],
            "telemetry": {
                "source": "the vehicles' connected-car services, sent by the car maker's backend",
                "counts": counts,
                "records": [
                    {
                        "id": r.id,
                        "vin": r.vin,
                        "category": r.category,
                        "recorded_at": format_instant(r.recorded_at),
                        "data": r.data,
                    }
                    for r in records
                ],
            },
        }

    def _record_copy(
        self,
        session: Session,
        customer_id: str,
        now: datetime,
        *,
        counts: dict[str, int],
        grants: list[Grant],
        entries: list[Disclosure],
    ) -> None:
        """Append the copy's ``subject_access`` entry: a keyed customer reference, the
        categories and counts (``counts``: records per category), no VIN, no contact data,
        no recipient (the copy goes to the customer themself)."""
        reference = self.keyring.pseudonymiser("broker", "subject-access").pseudonym(
            "customer", customer_id
        )
        audit_store.append(
            session,
            [
                AuditEntry(
                    at=now,
                    kind=SUBJECT_ACCESS,
                    decision="recorded",
                    categories=tuple(counts),
                    record_count=sum(counts.values()),
                    reasons=("a copy of their data, handed to the data subject (Art. 15, 20)",),
                    subject_ref=f"customer:{reference}",
                    details={
                        "format": COPY_FORMAT,
                        "version": COPY_VERSION,
                        "records": sum(counts.values()),
                        "grants": len(grants),
                        "transfers": len(entries),
                        "recipients": len({d.entry.recipient_id for d in entries}),
                    },
                )
            ],
        )
        log.info("copy of the customer's data handed out", extra={"customer_id": customer_id})

    # -- helpers -----------------------------------------------------------------------------

    def _visible(
        self,
        session: Session,
        customer_id: str,
        held: list[Holding],
        now: datetime,
        *,
        former: bool = False,
    ) -> list[Grant]:
        """The customer's own grants and the vehicle-linked grants of the vehicles they
        hold now (``former``: of every vehicle they ever held, for the copy)."""
        vins = {h.vin for h in (held if former else _current(held, now))}
        return customer_view.visible_grants(session, customer_id, vins)

    def _find(
        self, session: Session, customer_id: str, grant_id: str, held: list[Holding], now: datetime
    ) -> Grant:
        for grant in self._visible(session, customer_id, held, now):
            if grant.id == grant_id:
                return grant
        raise NotFound("no such grant")

    def _transfers(
        self, session: Session, grants: list[Grant], held: list[Holding]
    ) -> list[Disclosure]:
        """What left under ``grants`` that concerns the customer (see
        :func:`broker.services.disclosures.under_grants`)."""
        return disclosures.under_grants(session, grants, held)

    def _describe(
        self,
        session: Session,
        customer_id: str,
        grant: Grant,
        held: list[Holding],
        now: datetime,
        transfers: list[Disclosure],
    ) -> dict[str, Any]:
        contract = contract_store.get(session, grant.contract_id, grant.contract_version)
        recipient = party_store.recipient(session, grant.recipient_id)
        if contract is None or recipient is None:
            raise LookupError(f"grant {grant.id} refers to a missing contract or recipient")
        catalogue = self.documents.catalogue
        decision = check_transfer(
            recipient, contract.processing_countries, self.adequacy, now.date()
        )
        mine = [d for d in transfers if grant.id in d.grants]
        state = grant.effective_state(now)
        started = next((e.at for e in grant.history if e.to_state is GrantState.ACTIVE), None)
        ended = grant.history[-1].at if grant.state.terminal else grant.valid_until
        return {
            "id": grant.id,
            "vehicle": {
                "vin": grant.vin,
                "model": next((h.model for h in held if h.vin == grant.vin), None),
            },
            "state": state.value,
            "status": _status(state),
            "recipient": {
                "id": recipient.id,
                "name": recipient.name,
                "kind": recipient.kind.value,
                "legal_entity": recipient.legal_entity,
            },
            "contract": {
                "id": contract.id,
                "version": contract.version,
                "title": _text(contract.title),
            },
            "purpose": {
                "code": contract.purpose.code,
                "description": _text(contract.purpose.description),
            },
            "legal_basis": contract.legal_basis.value,
            "activation": grant.activation.value,
            "categories": [
                {"id": c, "name": _text(catalogue.category(c).name)}
                for c in sorted(grant.categories)
            ],
            "location_precision": grant.location_precision,
            "protection": contract.protection.level.value,
            "destinations": [
                {
                    "country": c.country,
                    "mechanism": c.mechanism.value if c.mechanism else None,
                    "reference": c.reference,
                    "allowed": c.allowed,
                }
                for c in decision.countries
            ],
            "retention_at_recipient": str(contract.retention_at_recipient),
            "since": _instant(started),
            "valid_from": format_instant(grant.valid_from),
            "valid_until": _instant(grant.valid_until),
            "ended_at": _instant(ended) if state.terminal else None,
            "last_transfer": format_instant(mine[0].entry.at) if mine else None,
            "transfer_count": sum(d.occurrences for d in mine),  # every entry, repeats too
            "rights": _rights(grant, contract.legal_basis, customer_id, held, now),
            "history": [
                {
                    "at": format_instant(e.at),
                    "from": e.from_state.value if e.from_state else None,
                    "to": e.to_state.value,
                    "action": e.action.value,
                }
                for e in grant.history
            ],
        }


_REFUSALS = {
    "legal_obligation": "a legal obligation admits no objection",
    "fleet_clearance": "a fleet clearance ends with the vehicle's fleet membership",
    "owner_only": "only the vehicle's owner can object to this processing",
    "ended": "the grant has already ended",
    "not_yours": "only the customer who gave this grant can withdraw it",
}


def _rights(
    grant: Grant, basis: LegalBasis, customer_id: str, held: list[Holding], now: datetime
) -> dict[str, Any]:
    """What the customer may do with the grant, and the explanation shown for it.

    Legitimate-interest processing, a fleet clearance resting on it included, can be
    objected to by the vehicle's current owner (Art. 21)."""
    allowed: list[str] = []
    if grant.effective_state(now).terminal:
        note = "ended"
    elif grant.activation in (Activation.CONSENT, Activation.CONTRACT):
        if grant.customer_id == customer_id and grant.allows(GrantAction.WITHDRAW) is None:
            allowed.append(GrantAction.WITHDRAW.value)
            note = "withdraw"
        else:
            note = "not_yours"
    elif admits_objection(basis, grant.activation):
        owns = any(h.vin == grant.vin and h.role == OWNER for h in _current(held, now))
        if owns and grant.allows(GrantAction.OBJECT) is None:
            allowed.append(GrantAction.OBJECT.value)
            note = "object"
        else:
            note = "owner_only"
    elif grant.activation is Activation.LEGAL_OBLIGATION:
        note = "legal_obligation"
    else:
        note = "fleet_clearance"
    return {"allowed": allowed, "note": note}


def _status(state: GrantState) -> str:
    if state is GrantState.PENDING:
        return "pending"
    return "active" if state in _ACTIVE_STATES else "past"


def _current(held: list[Holding], now: datetime) -> list[Holding]:
    return [h for h in held if h.current(now)]


def _vehicle(holding: Holding) -> dict[str, Any]:
    return {
        "vin": holding.vin,
        "model": holding.model,
        "role": holding.role,
        "location": {
            "collection": holding.location_collection,
            "sharing": holding.location_sharing,
        },
        "may_switch_on": holding.role == OWNER,
    }


def _recipient_names(session: Session, ids: set[str]) -> dict[str, str]:
    names = {}
    for recipient_id in sorted(ids):
        recipient = party_store.recipient(session, recipient_id)
        if recipient is not None:
            names[recipient_id] = recipient.name
    return names


def _text(value: Any) -> dict[str, str]:
    if value is None:
        return {"en": "", "nl": ""}
    return {"en": str(getattr(value, "en", value)), "nl": str(getattr(value, "nl", value))}


def _instant(value: datetime | None) -> str | None:
    return format_instant(value) if value is not None else None
