"""Persistence of the parties: customers, vehicles and their people, recipients, fleets."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from broker.domain.parties import (
    Customer,
    FleetMembership,
    Language,
    Ownership,
    Period,
    Recipient,
    RecipientKind,
    RecipientRole,
    RecipientStatus,
    SccAgreement,
    Vehicle,
)
from broker.store.tables import (
    CustomerRow,
    FleetMembershipRow,
    RecipientRow,
    SccAgreementRow,
    VehiclePartyRow,
    VehicleRow,
)

OWNER = "owner"
SECONDARY_DRIVER = "secondary_driver"


def customer(session: Session, customer_id: str) -> Customer | None:
    row = session.get(CustomerRow, customer_id)
    if row is None:
        return None
    return Customer(id=row.id, login=row.login, language=Language(row.language))


def vehicle(session: Session, vin: str) -> Vehicle | None:
    if session.get(VehicleRow, vin) is None:
        return None
    parties = session.exec(
        select(VehiclePartyRow)
        .where(VehiclePartyRow.vin == vin)
        .order_by(col(VehiclePartyRow.since))
    ).all()

    def of(role: str) -> tuple[Ownership, ...]:
        return tuple(
            Ownership(p.customer_id, Period(p.since, p.until)) for p in parties if p.role == role
        )

    return Vehicle(vin=vin, owners=of(OWNER), secondary_drivers=of(SECONDARY_DRIVER))


def current_owner_row(session: Session, vin: str) -> VehiclePartyRow | None:
    return session.exec(
        select(VehiclePartyRow).where(
            VehiclePartyRow.vin == vin,
            VehiclePartyRow.role == OWNER,
            col(VehiclePartyRow.until).is_(None),
        )
    ).first()


def add_party(
    session: Session,
    *,
    vin: str,
    customer_id: str,
    role: str,
    since: datetime,
    until: datetime | None = None,
) -> VehiclePartyRow:
    row = VehiclePartyRow(vin=vin, customer_id=customer_id, role=role, since=since, until=until)
    session.add(row)
    session.flush()
    return row


def recipient(session: Session, recipient_id: str) -> Recipient | None:
    row = session.get(RecipientRow, recipient_id)
    if row is None:
        return None
    sccs = session.exec(
        select(SccAgreementRow).where(SccAgreementRow.recipient_id == recipient_id)
    ).all()
    return Recipient(
        id=row.id,
        name=row.name,
        kind=RecipientKind(row.kind),
        legal_entity=row.legal_entity,
        role=RecipientRole(row.role),
        headquarters_country=row.headquarters_country,
        processing_countries=tuple(row.processing_countries),
        storage_countries=tuple(row.storage_countries),
        status=RecipientStatus(row.status),
        dpf_certified_until=row.dpf_certified_until,
        scc_agreements=tuple(
            SccAgreement(
                reference=s.reference,
                module=s.module,
                signed_on=s.signed_on,
                expires_on=s.expires_on,
                tia_reference=s.tia_reference,
                tia_review_due=s.tia_review_due,
            )
            for s in sccs
        ),
    )


def fleet_memberships(session: Session, vin: str) -> list[FleetMembership]:
    rows = session.exec(
        select(FleetMembershipRow)
        .where(FleetMembershipRow.vin == vin)
        .order_by(col(FleetMembershipRow.since))
    ).all()
    return [FleetMembership(r.operator_id, r.vin, Period(r.since, r.until)) for r in rows]


def end_secondary_drivers(session: Session, vin: str, *, at: datetime) -> set[str]:
    """End every open driver period of the vehicle at ``at``; the drivers' customer ids."""
    rows = session.exec(
        select(VehiclePartyRow).where(
            VehiclePartyRow.vin == vin,
            VehiclePartyRow.role == SECONDARY_DRIVER,
            col(VehiclePartyRow.until).is_(None),
        )
    ).all()
    for row in rows:
        row.until = at
        session.add(row)
    return {row.customer_id for row in rows}


def end_secondary_driver(session: Session, vin: str, customer_id: str, *, at: datetime) -> bool:
    """End one driver's open period on the vehicle; False if there is none."""
    row = session.exec(
        select(VehiclePartyRow).where(
            VehiclePartyRow.vin == vin,
            VehiclePartyRow.customer_id == customer_id,
            VehiclePartyRow.role == SECONDARY_DRIVER,
            col(VehiclePartyRow.until).is_(None),
        )
    ).first()
    if row is None:
        return False
    if at < row.since:
        raise ValueError("a driver period cannot end before it started")
    row.until = at
    session.add(row)
    return True


def end_fleet_membership(session: Session, operator_id: str, vin: str, *, at: datetime) -> bool:
    row = session.exec(
        select(FleetMembershipRow).where(
            FleetMembershipRow.operator_id == operator_id,
            FleetMembershipRow.vin == vin,
            col(FleetMembershipRow.until).is_(None),
        )
    ).first()
    if row is None:
        return False
    row.until = at
    session.add(row)
    return True


def holders(session: Session, vin: str) -> set[tuple[str, str]]:
    """(customer id, login) of everyone who ever owned or drove the vehicle."""
    rows = session.exec(
        select(CustomerRow.id, CustomerRow.login)
        .join(VehiclePartyRow, col(VehiclePartyRow.customer_id) == col(CustomerRow.id))
        .where(VehiclePartyRow.vin == vin)
    ).all()
    return {(customer_id, login) for customer_id, login in rows}


def current_vehicles(
    session: Session, customer_id: str, *, roles: tuple[str, ...] = (OWNER, SECONDARY_DRIVER)
) -> list[tuple[str, str | None]]:
    """(VIN, model) of the vehicles the customer holds now in one of ``roles``."""
    rows = session.exec(
        select(VehicleRow.vin, VehicleRow.model)
        .join(VehiclePartyRow, col(VehiclePartyRow.vin) == col(VehicleRow.vin))
        .where(
            VehiclePartyRow.customer_id == customer_id,
            col(VehiclePartyRow.until).is_(None),
            col(VehiclePartyRow.role).in_(roles),
        )
        .order_by(col(VehicleRow.vin))
    ).all()
    return [(vin, model) for vin, model in dict.fromkeys(rows)]
