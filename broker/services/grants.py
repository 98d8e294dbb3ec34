"""Grant use cases: create, amend, move through states, end on change of owner or fleet exit.

The rules live in :mod:`broker.domain.grants`; :class:`GrantService` loads,
applies and saves inside the caller's transaction, appends an audit entry for
every grant event, and when a grant ends runs the gate's revocation listeners
(refuse tokens, drop queued deliveries, send the notice) in that same
transaction.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlmodel import Session

from broker.audit.entry import AuditEntry
from broker.domain.contracts import Contract
from broker.domain.grants import Grant, GrantAction, GrantEvent, GrantState
from broker.domain.legal import Activation, admits_objection
from broker.domain.parties import Vehicle
from broker.errors import Conflict, NotFound, TransitionRefused
from broker.gate.revocation import GrantEnded, RevocationListeners
from broker.store import audit as audit_store
from broker.store import contracts as contract_store
from broker.store import grants as grant_store
from broker.store import parties as party_store

#: Activations whose grants are active as soon as they exist (no customer approval).
_ACTIVE_ON_CREATION = frozenset(
    {
        Activation.CONTRACT,
        Activation.LEGITIMATE_INTEREST,
        Activation.LEGAL_OBLIGATION,
        Activation.FLEET_CLEARANCE,
    }
)
_CUSTOMER_LINKED = frozenset({Activation.CONSENT, Activation.CONTRACT})
_OPEN = (GrantState.PENDING, GrantState.ACTIVE, GrantState.SUSPENDED)
_GIVEN = "consent given on the consent page"


def new_grant_id() -> str:
    return "gr-" + secrets.token_hex(8)


class GrantService:
    """Grant use cases, each inside the caller's transaction."""

    def __init__(self, listeners: RevocationListeners) -> None:
        self.listeners = listeners

    def _persist(
        self, session: Session, before: Grant | None, after: Grant, *, now: datetime
    ) -> Grant:
        """Save ``after``, audit its new events, and run the listeners if it just ended."""
        grant_store.save(session, after, now=now)
        new_events = after.history[len(before.history) if before else 0 :]
        contract = contract_store.get(session, after.contract_id, after.contract_version)
        if contract is None:
            raise LookupError(f"contract {after.contract_id} v{after.contract_version} is missing")
        audit_store.append(
            session,
            [
                AuditEntry(
                    at=event.at,
                    kind="grant_event",
                    recipient_id=after.recipient_id,
                    contract_id=after.contract_id,
                    contract_version=after.contract_version,
                    grant_ids=(after.id,),
                    categories=tuple(sorted(after.categories)),
                    legal_basis=contract.legal_basis.value,  # the Art. 6 code, as everywhere
                    decision="recorded",
                    reasons=(event.reason,),
                    subject_ref=after.id,
                    details=_event_details(after, event),
                )
                for event in new_events
            ],
        )
        was_open = before is None or not before.state.terminal
        ever_active = any(e.to_state is GrantState.ACTIVE for e in after.history)
        if after.state.terminal and was_open and ever_active:
            last = after.history[-1]
            previous = before.state if before else GrantState.PENDING
            self.listeners.run(session, GrantEnded(after, previous, last.at, last.reason))
        return after

    def create(
        self,
        session: Session,
        *,
        contract: Contract,
        vin: str,
        at: datetime,
        categories: Iterable[str] | None = None,
        customer_id: str | None = None,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
        location_precision: str | None = None,
        grant_id: str | None = None,
    ) -> Grant:
        """Create a grant under ``contract`` for one vehicle, checked against the contract.

        Consent grants start ``pending`` (the customer approves them); every other
        activation starts ``active``.
        """
        valid_from = valid_from or at
        vehicle = party_store.vehicle(session, vin)
        if vehicle is None:
            raise NotFound("no such vehicle")
        if not contract.is_valid_at(valid_from):
            raise Conflict(f"contract {contract.id} v{contract.version} is not in force then")
        chosen = _choose_categories(contract, categories)
        precision = _choose_precision(contract, chosen, location_precision)
        activation = contract.activation
        if activation in _CUSTOMER_LINKED:
            if customer_id is None:
                raise Conflict(f"a {activation.value} grant needs the customer who gives it")
            # Only the owner consents for a vehicle's data: a driver's consent would cover the
            # owner's own records and the vehicle-level ones (GDPR Art. 6(1)(a)).
            if not _owns(vehicle, customer_id, valid_from):
                raise NotFound("no such vehicle for this customer")
        elif customer_id is not None:
            raise Conflict(
                f"a {activation.value} grant is linked to the vehicle, never to a customer"
            )
        if contract.valid_until is not None:
            valid_until = min(valid_until or contract.valid_until, contract.valid_until)
        if activation is Activation.FLEET_CLEARANCE:
            valid_until = _bounded_by_fleet(
                session, contract.recipient, vin, valid_from, valid_until
            )
        grant = Grant.create(
            at=valid_from,
            reason=f"created under {contract.id} v{contract.version}",
            id=grant_id or new_grant_id(),
            contract_id=contract.id,
            contract_version=contract.version,
            recipient_id=contract.recipient,
            vin=vin,
            activation=activation,
            categories=frozenset(chosen),
            valid_from=valid_from,
            valid_until=valid_until,
            customer_id=customer_id,
            location_precision=precision,
        )
        if activation in _ACTIVE_ON_CREATION:
            grant = grant.apply(GrantAction.ACTIVATE, at=valid_from, reason=activation.value)
        return self._persist(session, None, grant, now=at)

    def amend(
        self,
        session: Session,
        grant_id: str,
        *,
        categories: Iterable[str] | None,
        location_precision: str | None,
        at: datetime,
        reason: str = "",
    ) -> Grant:
        """New terms for an open grant from ``at`` on, checked against its contract like
        :meth:`create`. What they add covers only data recorded from ``at``; what they
        remove stops at once (:meth:`Grant.terms_at`). The grant keeps its id and state."""
        audit_store.serialise(session)  # the audit lock before the grant's row lock
        grant = grant_store.get(session, grant_id, for_update=True)
        if grant is None:
            raise NotFound("no such grant")
        contract = contract_store.get(session, grant.contract_id, grant.contract_version)
        if contract is None:
            raise LookupError(f"contract {grant.contract_id} v{grant.contract_version} is missing")
        if not contract.is_valid_at(at):
            raise Conflict(f"contract {contract.id} v{contract.version} is not in force then")
        vehicle = party_store.vehicle(session, grant.vin)
        if grant.customer_id is not None and (
            vehicle is None or not _owns(vehicle, grant.customer_id, at)
        ):
            raise NotFound("no such vehicle for this customer")  # only the owner approves
        chosen = _choose_categories(contract, categories)
        precision = _choose_precision(contract, chosen, location_precision)
        after = grant.amend(
            at=at, categories=frozenset(chosen), location_precision=precision, reason=reason
        )
        return self._persist(session, grant, after, now=at)

    def approve(
        self,
        session: Session,
        *,
        contract: Contract,
        vin: str,
        customer_id: str,
        categories: Iterable[str],
        location_precision: str | None,
        at: datetime,
        offered: Iterable[str] | None = None,
    ) -> Grant:
        """The customer approves ``contract`` for ``vin`` (the consent page).

        While the customer's grant under this contract version on the vehicle is open,
        the approval amends it (one grant, with its history): the categories the page
        ``offered`` take the customer's answer, the grant's others (not asked about)
        stay as they are. An ended grant stays ended; the approval then creates and
        activates a new one.
        """
        given = grant_store.open_for(
            session, contract.id, contract.version, vin=vin, customer_id=customer_id
        )
        if given is not None:
            kept = given.categories - set(offered) if offered is not None else frozenset()
            if "vehicle.position" in kept:
                location_precision = given.location_precision
            grant = self.amend(
                session,
                given.id,
                categories={*categories, *kept},
                location_precision=location_precision,
                at=at,
                reason="consent given again on the consent page",
            )
        else:
            grant = self.create(
                session,
                contract=contract,
                vin=vin,
                at=at,
                categories=categories,
                customer_id=customer_id,
                location_precision=location_precision,
            )
        if grant.state is not GrantState.PENDING:
            return grant
        return self.apply(session, grant, GrantAction.ACTIVATE, at=at, reason=_GIVEN)

    def apply(
        self, session: Session, grant: Grant, action: GrantAction, *, at: datetime, reason: str = ""
    ) -> Grant:
        """Apply ``action`` to a grant just loaded or created in this transaction."""
        return self._persist(session, grant, grant.apply(action, at=at, reason=reason), now=at)

    def transition(
        self,
        session: Session,
        grant_id: str,
        action: GrantAction,
        *,
        at: datetime,
        reason: str = "",
    ) -> Grant:
        audit_store.serialise(session)  # the audit lock before the grant's row lock
        grant = grant_store.get(session, grant_id, for_update=True)
        if grant is None:
            raise NotFound("no such grant")
        if action is GrantAction.OBJECT and grant.allows(action) is None:
            contract = contract_store.get(session, grant.contract_id, grant.contract_version)
            if contract is None or not admits_objection(contract.legal_basis, grant.activation):
                raise TransitionRefused(
                    "objection applies to processing based on legitimate interest only",
                    grant=grant.id,
                    action=action.value,
                )
        return self._persist(session, grant, grant.apply(action, at=at, reason=reason), now=at)

    def change_owner(
        self, session: Session, vin: str, new_owner_id: str, *, at: datetime
    ) -> list[Grant]:
        """Hand the vehicle to a new owner; every grant the previous holders gave ends.

        The secondary drivers' periods end with the ownership, and every consent and
        service-contract grant the previous owner or those drivers gave on the vehicle
        ends (through the revocation listeners: tokens, deliveries, the recipient's
        notice). Vehicle-linked grants (legitimate interest, legal obligation, fleet
        clearance) go on.
        """
        audit_store.serialise(session)
        if party_store.vehicle(session, vin) is None:
            raise NotFound("no such vehicle")
        if party_store.customer(session, new_owner_id) is None:
            raise NotFound("no such customer")
        current = party_store.current_owner_row(session, vin)
        drivers: set[str] = set()
        if current is not None:
            if current.customer_id == new_owner_id:
                raise Conflict("the customer already owns this vehicle")
            if at < current.since:
                raise TransitionRefused("a change of owner cannot predate the current ownership")
            current.until = at
            session.add(current)
            drivers = party_store.end_secondary_drivers(session, vin, at=at)
        party_store.add_party(
            session, vin=vin, customer_id=new_owner_id, role=party_store.OWNER, since=at
        )
        if current is None:
            return []
        givers = {current.customer_id, *drivers}
        return self._end_grants_of(session, vin, givers, at=at, reason="vehicle sold")

    def start_driver_period(
        self, session: Session, vin: str, customer_id: str, *, at: datetime
    ) -> None:
        """``customer_id`` drives the vehicle from ``at`` (the owner's secondary driver)."""
        audit_store.serialise(session)
        vehicle = party_store.vehicle(session, vin)
        if vehicle is None:
            raise NotFound("no such vehicle")
        if party_store.customer(session, customer_id) is None:
            raise NotFound("no such customer")
        if any(o.customer_id == customer_id and o.period.end is None
               for o in (*vehicle.owners, *vehicle.secondary_drivers)):  # fmt: skip
            raise Conflict("the customer already holds this vehicle")
        party_store.add_party(
            session, vin=vin, customer_id=customer_id, role=party_store.SECONDARY_DRIVER, since=at
        )

    def end_driver_period(
        self, session: Session, vin: str, customer_id: str, *, at: datetime
    ) -> list[Grant]:
        """The driver's period ends at ``at``; every grant the driver gave on it ends."""
        audit_store.serialise(session)
        if not party_store.end_secondary_driver(session, vin, customer_id, at=at):
            raise NotFound("the customer does not drive this vehicle")
        return self._end_grants_of(session, vin, {customer_id}, at=at, reason="driver period ended")

    def _end_grants_of(
        self, session: Session, vin: str, givers: set[str], *, at: datetime, reason: str
    ) -> list[Grant]:
        ended: list[Grant] = []
        for grant in grant_store.for_vehicle(session, vin):
            if grant.customer_id in givers and grant.allows(GrantAction.OWNER_CHANGED) is None:
                after = grant.apply(GrantAction.OWNER_CHANGED, at=at, reason=reason)
                ended.append(self._persist(session, grant, after, now=at))
        return ended

    def end_fleet_membership(
        self, session: Session, operator_id: str, vin: str, *, at: datetime
    ) -> list[Grant]:
        """The vehicle leaves the operator's fleet; its fleet clearances expire."""
        audit_store.serialise(session)
        if not party_store.end_fleet_membership(session, operator_id, vin, at=at):
            raise NotFound("the vehicle is not in this fleet")
        ended: list[Grant] = []
        for grant in grant_store.for_vehicle(session, vin):
            if (
                grant.recipient_id == operator_id
                and grant.activation is Activation.FLEET_CLEARANCE
                and grant.state in _OPEN
            ):
                after = grant.apply(GrantAction.EXPIRE, at=at, reason="vehicle left the fleet")
                ended.append(self._persist(session, grant, after, now=at))
        return ended

    def expire_due(self, session: Session, *, now: datetime) -> list[Grant]:
        """Persist the expiry of every open grant whose validity has ended."""
        audit_store.serialise(session)
        expired: list[Grant] = []
        for grant in grant_store.in_states(session, _OPEN):
            if grant.valid_until is not None and now >= grant.valid_until:
                at = max(grant.valid_until, grant.history[-1].at)
                after = grant.apply(GrantAction.EXPIRE, at=at, reason="validity ended")
                expired.append(self._persist(session, grant, after, now=now))
        return expired


def _event_details(grant: Grant, event: GrantEvent) -> dict[str, Any]:
    """The transition, the grant's activation, and for a customer-linked grant the fact
    that its recipient knows the customer only by a pseudonymous OAuth ``sub`` of its
    own (derived per recipient, never stored): all the token answers of the grant name
    besides the grant id (see :func:`broker.oauth.server.customer_subject`)."""
    details: dict[str, Any] = {
        "action": event.action.value,
        "from": event.from_state.value if event.from_state else None,
        "to": event.to_state.value,
        "activation": grant.activation.value,
    }
    if grant.customer_id is not None:
        details["recipient_sub"] = "pseudonym"
    if event.action is GrantAction.AMEND:  # the categories are the entry's own
        details["location_precision"] = grant.location_precision
    return details


def _owns(vehicle: Vehicle, customer_id: str, when: datetime) -> bool:
    return any(o.customer_id == customer_id and o.period.contains(when) for o in vehicle.owners)


def _choose_categories(contract: Contract, requested: Iterable[str] | None) -> set[str]:
    offered = set(contract.category_ids)
    if requested is None:
        return offered
    chosen = set(requested)
    unknown = chosen - offered
    if unknown:
        raise Conflict(f"categories not in the contract: {', '.join(sorted(unknown))}")
    required = {t.category for t in contract.categories if not t.optional}
    missing = required - chosen
    if missing:
        raise Conflict(f"the contract requires these categories: {', '.join(sorted(missing))}")
    if not chosen:
        raise Conflict("a grant covers at least one category")
    return chosen


def _choose_precision(
    contract: Contract, categories: set[str], requested: str | None
) -> str | None:
    if "vehicle.position" not in categories:
        if requested is not None:
            raise Conflict("a location precision needs the position category")
        return None
    allowed = sorted(p.value for p in contract.location.precisions) if contract.location else []
    if requested is None:
        return "precise" if "precise" in allowed else (allowed[0] if allowed else None)
    if requested not in allowed:
        raise Conflict(f"the contract does not allow {requested} location")
    return requested


def _bounded_by_fleet(
    session: Session,
    operator_id: str,
    vin: str,
    valid_from: datetime,
    valid_until: datetime | None,
) -> datetime | None:
    for membership in party_store.fleet_memberships(session, vin):
        if membership.fleet_operator_id == operator_id and membership.period.contains(valid_from):
            end = membership.period.end
            if end is None:
                return valid_until
            return end if valid_until is None else min(end, valid_until)
    raise Conflict("a fleet clearance needs the vehicle to be in the operator's fleet")
