"""Holder changes the car maker's backend reports: who holds a vehicle, applied once each.

A sale (a new owner), the start and end of a driver period, and a fleet join or
leave, each named by the backend's own ``change_id``: the idempotency key. The
first report is applied through the grant use cases (every grant the change ends
goes through the revocation listeners), remembered under its key with a keyed
digest of its body, and audited as one ``holder_change`` entry, all in the
caller's transaction. A repeat with the same body answers what the first one
answered and changes nothing; the same key with another body is a conflict
(the rule of the IETF Idempotency-Key draft, draft-ietf-httpapi-idempotency-key-header).

The audit entry names the vehicle by the broker's audit reference
(:meth:`~broker.gate.keyring.Keyring.vehicle_ref`), the grants the change ended,
and the change's kind and id: never the VIN or a customer in clear.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from broker.audit.entry import AuditEntry, canonical_json
from broker.clock import format_instant, parse_instant
from broker.documents import DocumentLibrary
from broker.domain.grants import Grant
from broker.domain.parties import RecipientKind
from broker.errors import (
    BrokerError,
    ConfigurationError,
    Conflict,
    InvalidDocument,
    NotFound,
    TransitionRefused,
)
from broker.gate.keyring import Keyring
from broker.services.grants import GrantService
from broker.store import audit as audit_store
from broker.store import holders as holder_store
from broker.store import parties as party_store
from broker.webhooks.grants import AnnouncingGrantService

SCHEMA = "urn:vehicle-data-broker:schema:holder-change"
AUDIT_KIND = "holder_change"

SALE = "sale"
DRIVER_STARTED = "driver_started"
DRIVER_ENDED = "driver_ended"
FLEET_JOINED = "fleet_joined"
FLEET_LEFT = "fleet_left"
#: Each kind, and why its audit entry was written.
KINDS: dict[str, str] = {
    SALE: "the vehicle was sold",
    DRIVER_STARTED: "a driver period started",
    DRIVER_ENDED: "a driver period ended",
    FLEET_JOINED: "the vehicle joined a fleet",
    FLEET_LEFT: "the vehicle left a fleet",
}
#: Clock skew tolerated between the car maker's backend and the broker.
FUTURE_TOLERANCE = timedelta(minutes=5)


class ChangeIdReused(Conflict):
    """The change id was already used for another change."""

    code = "change_id_reused"
    title = "Change id already used for another change"


class ChangeInFuture(BrokerError):
    code = "change_in_future"
    status = 422
    title = "Change in the future"


@dataclass(frozen=True)
class HolderChange:
    """One reported change, as the holder-change schema describes it."""

    change_id: str
    kind: str
    vin: str
    at: datetime
    customer_id: str | None = None
    operator_id: str | None = None

    @classmethod
    def parse(cls, documents: DocumentLibrary, body: Any) -> HolderChange:
        """``body`` checked against the schema (no value repeated in an error: a VIN or a
        customer id is personal data); :class:`InvalidDocument` lists every error."""
        errors = documents.schemas.errors(SCHEMA, body, echo_values=False)
        if errors:
            raise InvalidDocument(
                "the change does not match its schema; nothing was changed",
                [e.as_dict() for e in errors],
            )
        return cls(
            change_id=body["change_id"],
            kind=body["kind"],
            vin=body["vin"],
            at=parse_instant(body["at"]),
            customer_id=body.get("customer"),
            operator_id=body.get("operator"),
        )

    def canonical(self) -> bytes:
        """The change's canonical bytes: the same change however its instant was written."""
        document: dict[str, Any] = {
            "change_id": self.change_id,
            "kind": self.kind,
            "vin": self.vin,
            "at": format_instant(self.at),
            "customer": self.customer_id,
            "operator": self.operator_id,
        }
        return canonical_json({k: v for k, v in document.items() if v is not None})


@dataclass(frozen=True)
class Outcome:
    """The answer to a report: ``created`` False when it repeats one already applied."""

    result: dict[str, Any]
    created: bool


def apply_change(
    session: Session,
    change: HolderChange,
    *,
    grants: GrantService,
    keyring: Keyring,
    now: datetime,
) -> Outcome:
    """Apply ``change`` once, remember it and audit it, in the caller's write transaction."""
    # The audit lock first: a concurrent report of the same change waits here, then finds it.
    audit_store.serialise(session)
    digest = _digest(keyring, change)
    stored = holder_store.find(session, change.change_id)
    if stored is not None:
        if not hmac.compare_digest(stored.digest, digest):
            raise ChangeIdReused(
                "this change id was already used for another change; nothing was changed"
            )
        return Outcome(stored.result, created=False)
    if change.at > now + FUTURE_TOLERANCE:
        raise ChangeInFuture("the change takes effect in the future; report it once it happened")
    ended = _apply(session, change, _announcing(grants))
    result = {
        "change_id": change.change_id,
        "kind": change.kind,
        "applied_at": format_instant(now),
        "ended_grants": len(ended),
    }
    holder_store.add(
        session,
        change_id=change.change_id,
        digest=digest,
        kind=change.kind,
        applied_at=now,
        result=result,
    )
    details: dict[str, Any] = {
        "change": change.kind,
        "change_id": change.change_id,
        "effective_at": format_instant(change.at),
    }
    if change.operator_id is not None:
        details["operator"] = change.operator_id  # a company, not a person
    audit_store.append(
        session,
        [
            AuditEntry(
                at=now,
                kind=AUDIT_KIND,
                grant_ids=tuple(sorted(g.id for g in ended)),
                decision="recorded",
                reasons=(KINDS[change.kind],),
                subject_ref=keyring.vehicle_ref(change.vin),
                details=details,
            )
        ],
    )
    return Outcome(result, created=True)


def _apply(session: Session, change: HolderChange, grants: AnnouncingGrantService) -> list[Grant]:
    """Run the change's use case; the grants it ended."""
    vin, at = change.vin, change.at
    if change.kind in (SALE, DRIVER_STARTED, DRIVER_ENDED):
        customer = _required(change.customer_id, "customer")
        if change.kind == SALE:
            return grants.change_owner(session, vin, customer, at=at)
        if change.kind == DRIVER_STARTED:
            grants.start_driver_period(session, vin, customer, at=at)
            return []
        _driver_period_open_before(session, vin, customer, at)
        return grants.end_driver_period(session, vin, customer, at=at)
    operator = _required(change.operator_id, "operator")
    if change.kind == FLEET_JOINED:
        _may_join(session, vin, operator, at)
        grants.join_fleet(session, operator, vin, at=at)
        return []
    if change.kind == FLEET_LEFT:
        _membership_open_before(session, vin, operator, at)
        return grants.end_fleet_membership(session, operator, vin, at=at)
    raise InvalidDocument(f"unknown holder change {change.kind!r}")


def _required(value: str | None, name: str) -> str:
    if value is None:
        error = {"path": f"$.{name}", "message": "is required for this kind of change"}
        raise InvalidDocument(f"this change needs its {name}; nothing was changed", [error])
    return value


def _may_join(session: Session, vin: str, operator: str, at: datetime) -> None:
    if party_store.vehicle(session, vin) is None:
        raise NotFound("no such vehicle")
    recipient = party_store.recipient(session, operator)
    if recipient is None:
        raise NotFound("no such fleet operator")
    if recipient.kind is not RecipientKind.FLEET_OPERATOR:
        raise Conflict("only a fleet operator has a fleet")
    for membership in party_store.fleet_memberships(session, vin):
        if membership.fleet_operator_id == operator and (
            membership.period.end is None or membership.period.end > at
        ):
            raise Conflict("the vehicle is already in this fleet")


def _membership_open_before(session: Session, vin: str, operator: str, at: datetime) -> None:
    for membership in party_store.fleet_memberships(session, vin):
        if membership.fleet_operator_id == operator and membership.period.end is None:
            if at < membership.period.start:
                raise TransitionRefused("a fleet membership cannot end before it started")
            return
    raise NotFound("the vehicle is not in this fleet")


def _driver_period_open_before(session: Session, vin: str, customer: str, at: datetime) -> None:
    vehicle = party_store.vehicle(session, vin)
    if vehicle is None:
        raise NotFound("no such vehicle")
    for period in vehicle.secondary_drivers:
        if period.customer_id == customer and period.period.end is None:
            if at < period.period.start:
                raise TransitionRefused("a driver period cannot end before it started")
            return
    raise NotFound("the customer does not drive this vehicle")


def _digest(keyring: Keyring, change: HolderChange) -> str:
    """A keyed digest of the change: equal for the same change, telling nothing without
    the master key (the body names a vehicle and a customer)."""
    key = keyring.pseudonymiser("broker", "holder-change")
    return key.pseudonym("holder-change", change.canonical().decode("utf-8"))


def _announcing(grants: GrantService) -> AnnouncingGrantService:
    if not isinstance(grants, AnnouncingGrantService):
        raise ConfigurationError("holder changes need the broker's announcing grant service")
    return grants
