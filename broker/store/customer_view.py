"""What the customer app reads and changes in the store: one customer's view of the broker.

* :func:`holdings`: the vehicles a customer owns or drives (every period, past
  ones too), with the vehicle's location switches;
* :func:`visible_grants`: the grants a customer may see — those they gave
  (consent, service contract) and the vehicle-linked ones (legitimate interest,
  legal obligation, fleet clearance) of the vehicles they hold now;
* :func:`releases_for`: the audit log's entries of what left under any of some grants;
* :func:`eligibility_answers`: the eligibility answers given about some vehicles;
* :func:`set_location`: the vehicle row's location switches, which ingest and the
  gate read, so a change applies to every channel at once.

Nothing here decides who may do what: :mod:`broker.services.customer_app` does.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from broker.audit.entry import AuditEntry
from broker.domain.grants import Grant
from broker.store import grants as grant_store
from broker.store.tables import AuditEntryRow, VehiclePartyRow, VehicleRow

#: The decisions of an entry under which something left the broker.
_RELEASED = frozenset({"released", "partial"})


@dataclass(frozen=True)
class Holding:
    """One period in which a customer owned or drove a vehicle."""

    vin: str
    model: str | None
    role: str  # owner | secondary_driver
    since: datetime
    until: datetime | None
    location_collection: bool
    location_sharing: bool

    def current(self, now: datetime) -> bool:
        return self.since <= now and (self.until is None or now < self.until)


def holdings(session: Session, customer_id: str) -> list[Holding]:
    """Every period the customer owned or drove a vehicle, by VIN then start."""
    rows = session.exec(
        select(VehiclePartyRow, VehicleRow)
        .join(VehicleRow, col(VehicleRow.vin) == col(VehiclePartyRow.vin))
        .where(VehiclePartyRow.customer_id == customer_id)
        .order_by(col(VehiclePartyRow.vin), col(VehiclePartyRow.since))
    ).all()
    return [
        Holding(
            vin=party.vin,
            model=vehicle.model,
            role=party.role,
            since=party.since,
            until=party.until,
            location_collection=vehicle.location_collection,
            location_sharing=vehicle.location_sharing,
        )
        for party, vehicle in rows
    ]


def visible_grants(session: Session, customer_id: str, vins_held: Collection[str]) -> list[Grant]:
    """The customer's own grants, plus the vehicle-linked grants of ``vins_held``."""
    own = grant_store.for_customer(session, customer_id)
    linked = [
        grant
        for vin in sorted(set(vins_held))
        for grant in grant_store.for_vehicle(session, vin)
        if grant.customer_id is None
    ]
    return sorted([*own, *linked], key=lambda g: (g.vin, g.id))


#: The entries that record something leaving the broker about a customer's grants:
#: data releases, listings naming the grant, webhook events, erase notices and the
#: notices feed (each names the grants in ``grant_ids``).
DISCLOSURE_KINDS = ("release", "listing", "event", "notice", "notice_feed")


def releases_for(
    session: Session, grant_ids: Collection[str], recipient_ids: Collection[str]
) -> list[AuditEntry]:
    """Entries (newest first) of something that left under at least one of ``grant_ids``.

    A release for one vehicle names its grant as the entry's subject; a release
    to a population names ``population``, and a listing of several grants names
    ``listing``: each lists every grant it relied on in ``grant_ids``.
    """
    wanted = set(grant_ids)
    if not wanted:
        return []
    rows = session.exec(
        select(AuditEntryRow.entry)
        .where(
            col(AuditEntryRow.kind).in_(DISCLOSURE_KINDS),
            col(AuditEntryRow.recipient_id).in_(sorted(set(recipient_ids))),
        )
        .order_by(col(AuditEntryRow.seq).desc())
    ).all()
    entries = [AuditEntry.from_json(row) for row in rows]
    return [e for e in entries if e.decision in _RELEASED and wanted & set(e.grant_ids)]


#: An answer to a recipient's eligibility check: about one vehicle, under no grant; its
#: ``subject_ref`` is the broker's audit reference for the vehicle (``veh-...``).
ELIGIBILITY = "eligibility"


def eligibility_answers(session: Session, vehicle_refs: Collection[str]) -> list[AuditEntry]:
    """The eligibility answers (newest first) given about any of ``vehicle_refs``, the
    vehicles' audit references; a refused check told nothing and is not one."""
    if not vehicle_refs:
        return []
    rows = session.exec(
        select(AuditEntryRow.entry)
        .where(
            AuditEntryRow.kind == ELIGIBILITY,
            col(AuditEntryRow.subject_ref).in_(sorted(set(vehicle_refs))),
        )
        .order_by(col(AuditEntryRow.seq).desc())
    ).all()
    entries = [AuditEntry.from_json(row) for row in rows]
    return [e for e in entries if e.decision in _RELEASED]


def set_location(session: Session, vin: str, *, collection: bool, sharing: bool) -> bool:
    """Set the vehicle's location switches; True if anything changed."""
    row = session.get(VehicleRow, vin)
    if row is None:
        raise LookupError("no such vehicle")
    changed = (row.location_collection, row.location_sharing) != (collection, sharing)
    row.location_collection = collection
    row.location_sharing = sharing
    session.add(row)
    session.flush()
    return changed
