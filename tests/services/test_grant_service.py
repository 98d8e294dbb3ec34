"""Grant use cases against the real store, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import Session, col, select

from broker.clock import ManualClock, format_instant
from broker.domain.contracts import Contract
from broker.domain.grants import Grant, GrantAction, GrantState
from broker.errors import Conflict, NotFound, TransitionRefused
from broker.gate.revocation import GrantEnded, RevocationListeners
from broker.services.grants import GrantService
from broker.store import contracts as contract_store
from broker.store import grants as grant_store
from broker.store import parties as party_store
from broker.store.database import Database
from broker.store.tables import CustomerRow, FleetMembershipRow, RecipientRow, VehicleRow

VIN = "WMW11111111111111"
DAY = timedelta(days=1)

BASES = {
    "consent": ("6(1)(a)", "rcp-insurer"),
    "legitimate_interest": ("6(1)(f)", "rcp-dealer"),
    "legal_obligation": ("6(1)(c)", "rcp-authority"),
    "fleet_clearance": ("6(1)(b)", "rcp-fleet"),
}


def contract_document(activation: str, **overrides: Any) -> dict[str, Any]:
    basis, recipient = BASES[activation]
    doc: dict[str, Any] = {
        "id": f"c-{activation.replace('_', '-')}",
        "version": 1,
        "title": {"en": "Test", "nl": "Test"},
        "recipient": recipient,
        "purpose": {"code": "test", "description": {"en": "A test.", "nl": "Een test."}},
        "legal_basis": basis,
        "activation": activation,
        "categories": {
            "vehicle.status": {"fields": ["mileage_km"], "optional": False},
            "vehicle.position": {"fields": ["latitude", "longitude"], "optional": True},
        },
        "protection": {"level": "identified"},
        "channels": ["pull"],
        "vehicle_identifier": "vin",
        "location": {"precisions": ["precise", "coarse"], "coarse_grid_m": 5000},
        "retention_at_recipient": "P30D",
        "rate_limit": {"requests": 60, "per": "PT1M"},
        "validity": {"from": "2026-01-01T00:00:00Z"},
        "processing_countries": ["NL"],
    }
    doc.update(overrides)
    return doc


@pytest.fixture
def ended() -> list[GrantEnded]:
    return []


@pytest.fixture
def service(ended: list[GrantEnded]) -> GrantService:
    listeners = RevocationListeners()
    listeners.register("record", lambda _session, event: ended.append(event))
    return GrantService(listeners)


@pytest.fixture
def world(db: Database, clock: ManualClock) -> dict[str, Contract]:
    now = clock.now()

    def setup(session: Session) -> dict[str, Contract]:
        for cid in ("cus-anna", "cus-ben"):
            session.add(CustomerRow(id=cid, login=cid, password_hash="x", created_at=now))
        session.add(VehicleRow(vin=VIN, created_at=now))
        for _, rid in BASES.values():
            session.add(
                RecipientRow(
                    id=rid, name=rid, kind="insurer", legal_entity=rid,
                    role="independent_controller", headquarters_country="NL",
                    processing_countries=["NL"], storage_countries=["NL"],
                    created_at=now, updated_at=now,
                )
            )  # fmt: skip
        session.flush()
        party_store.add_party(
            session, vin=VIN, customer_id="cus-anna", role=party_store.OWNER, since=now - 30 * DAY
        )
        contracts = {}
        for activation in BASES:
            contract = Contract.from_document(contract_document(activation))
            contract_store.add(session, contract, at=now)
            contracts[activation] = contract
        return contracts

    return db.run_sync(setup, write=True)


def test_consent_grant_is_pending_until_approved_then_withdrawn(
    service: GrantService, db: Database, clock: ManualClock, world: dict[str, Contract]
) -> None:
    now = clock.now()
    grant = db.run_sync(
        lambda s: service.create(
            s, contract=world["consent"], vin=VIN, at=now, customer_id="cus-anna"
        ),
        write=True,
    )
    assert grant.state is GrantState.PENDING
    assert grant.categories == {"vehicle.status", "vehicle.position"}
    assert grant.location_precision == "precise"
    clock.advance(timedelta(minutes=5))
    db.run_sync(
        lambda s: service.transition(s, grant.id, GrantAction.ACTIVATE, at=clock.now()), write=True
    )
    clock.advance(DAY)
    db.run_sync(
        lambda s: service.transition(s, grant.id, GrantAction.WITHDRAW, at=clock.now()), write=True
    )
    stored = db.run_sync(lambda s: grant_store.get(s, grant.id))
    assert stored is not None
    assert stored.state is GrantState.REVOKED
    assert [e.to_state for e in stored.history] == [
        GrantState.PENDING,
        GrantState.ACTIVE,
        GrantState.REVOKED,
    ]
    assert stored.covers(now + timedelta(hours=1))
    assert not stored.covers(now)  # before approval
    assert not stored.covers(clock.now() + timedelta(seconds=1))


def test_a_change_of_owner_ends_the_previous_owners_consent_grants(
    service: GrantService, db: Database, clock: ManualClock, world: dict[str, Contract]
) -> None:
    now = clock.now()

    def setup(session: Session) -> tuple[str, str]:
        consent = service.create(
            session, contract=world["consent"], vin=VIN, at=now, customer_id="cus-anna"
        )
        service.transition(session, consent.id, GrantAction.ACTIVATE, at=now)
        dealer = service.create(session, contract=world["legitimate_interest"], vin=VIN, at=now)
        return consent.id, dealer.id

    consent_id, dealer_id = db.run_sync(setup, write=True)
    sold = clock.advance(10 * DAY)
    ended = db.run_sync(lambda s: service.change_owner(s, VIN, "cus-ben", at=sold), write=True)
    assert [g.id for g in ended] == [consent_id]

    consent = db.run_sync(lambda s: grant_store.get(s, consent_id))
    dealer = db.run_sync(lambda s: grant_store.get(s, dealer_id))
    assert consent is not None and dealer is not None
    assert consent.state is GrantState.REVOKED
    assert consent.history[-1].action is GrantAction.OWNER_CHANGED
    assert dealer.state is GrantState.ACTIVE  # vehicle-linked, goes on
    vehicle = db.run_sync(lambda s: party_store.vehicle(s, VIN))
    assert vehicle is not None
    assert vehicle.owner_at(sold - DAY) == "cus-anna"
    assert vehicle.owner_at(sold) == "cus-ben"
    # The previous owner can no longer give consent for this vehicle.
    with pytest.raises(NotFound):
        db.run_sync(
            lambda s: service.create(
                s, contract=world["consent"], vin=VIN, at=sold, customer_id="cus-anna"
            ),
            write=True,
        )


def test_objection_ends_legitimate_interest_and_legal_obligation_refuses_it(
    service: GrantService, db: Database, clock: ManualClock, world: dict[str, Contract]
) -> None:
    now = clock.now()
    dealer = db.run_sync(
        lambda s: service.create(s, contract=world["legitimate_interest"], vin=VIN, at=now),
        write=True,
    )
    obfcm = db.run_sync(
        lambda s: service.create(s, contract=world["legal_obligation"], vin=VIN, at=now),
        write=True,
    )
    assert dealer.state is GrantState.ACTIVE and obfcm.state is GrantState.ACTIVE
    later = clock.advance(DAY)
    db.run_sync(
        lambda s: service.transition(s, dealer.id, GrantAction.OBJECT, at=later), write=True
    )
    with pytest.raises(TransitionRefused, match="legal obligation"):
        db.run_sync(
            lambda s: service.transition(s, obfcm.id, GrantAction.OBJECT, at=later), write=True
        )
    states = db.run_sync(lambda s: {g.id: g.state for g in grant_store.for_vehicle(s, VIN)})
    assert states == {dealer.id: GrantState.OBJECTED, obfcm.id: GrantState.ACTIVE}


def test_validity_follows_the_controllable_clock(
    service: GrantService, db: Database, clock: ManualClock, world: dict[str, Contract]
) -> None:
    now = clock.now()

    def setup(session: Session) -> tuple[str, str]:
        short = service.create(
            session, contract=world["legitimate_interest"], vin=VIN, at=now,
            valid_until=now + 2 * DAY,
        )  # fmt: skip
        long = service.create(
            session, contract=world["legal_obligation"], vin=VIN, at=now,
            valid_until=now + 20 * DAY,
        )  # fmt: skip
        return short.id, long.id

    short_id, long_id = db.run_sync(setup, write=True)
    clock.advance(DAY)
    assert db.run_sync(lambda s: service.expire_due(s, now=clock.now()), write=True) == []
    clock.advance(DAY)
    expired = db.run_sync(lambda s: service.expire_due(s, now=clock.now()), write=True)
    assert [g.id for g in expired] == [short_id]
    stored = db.run_sync(lambda s: {g.id: g for g in grant_store.for_vehicle(s, VIN)})
    assert stored[short_id].state is GrantState.EXPIRED
    assert stored[short_id].history[-1].at == now + 2 * DAY
    assert stored[long_id].state is GrantState.ACTIVE
    assert stored[long_id].is_active(clock.now())


def test_fleet_clearance_is_bounded_by_the_fleet_membership(
    service: GrantService, db: Database, clock: ManualClock, world: dict[str, Contract]
) -> None:
    now = clock.now()
    with pytest.raises(Conflict, match="fleet"):
        db.run_sync(
            lambda s: service.create(s, contract=world["fleet_clearance"], vin=VIN, at=now),
            write=True,
        )

    def join(session: Session) -> None:
        session.add(FleetMembershipRow(operator_id="rcp-fleet", vin=VIN, since=now - DAY))

    db.run_sync(join, write=True)
    grant = db.run_sync(
        lambda s: service.create(s, contract=world["fleet_clearance"], vin=VIN, at=now),
        write=True,
    )
    assert grant.state is GrantState.ACTIVE and grant.customer_id is None
    left = clock.advance(5 * DAY)
    ended = db.run_sync(
        lambda s: service.end_fleet_membership(s, "rcp-fleet", VIN, at=left), write=True
    )
    assert [g.id for g in ended] == [grant.id]
    assert ended[0].state is GrantState.EXPIRED
    rows = db.run_sync(
        lambda s: s.exec(select(FleetMembershipRow).where(col(FleetMembershipRow.vin) == VIN)).all()
    )
    assert [r.until for r in rows] == [left]


@pytest.mark.parametrize(("basis", "objectable"), [("6(1)(f)", True), ("6(1)(b)", False)])
def test_the_owner_may_object_to_a_fleet_clearance_only_when_it_rests_on_legitimate_interest(
    service: GrantService,
    db: Database,
    clock: ManualClock,
    world: dict[str, Contract],
    ended: list[GrantEnded],
    basis: str,
    objectable: bool,
) -> None:
    """Art. 21(1): objection applies to legitimate-interest processing, a fleet clearance
    resting on it included; a clearance under the fleet's service contract ends with it."""
    now = clock.now()
    contract = Contract.from_document(
        contract_document("fleet_clearance", id="c-fleet-li", legal_basis=basis)
    )

    def setup(session: Session) -> Grant:
        contract_store.add(session, contract, at=now)
        session.add(FleetMembershipRow(operator_id="rcp-fleet", vin=VIN, since=now - DAY))
        session.flush()
        return service.create(session, contract=contract, vin=VIN, at=now)

    grant = db.run_sync(setup, write=True)
    later = clock.advance(DAY)

    def object_to(session: Session) -> Grant:
        return service.transition(session, grant.id, GrantAction.OBJECT, at=later)

    if objectable:
        assert db.run_sync(object_to, write=True).state is GrantState.OBJECTED
        assert [e.grant.id for e in ended] == [grant.id]  # the revocation listeners ran
    else:
        with pytest.raises(TransitionRefused, match="legitimate interest"):
            db.run_sync(object_to, write=True)
        assert ended == []
    stored = db.run_sync(lambda s: grant_store.get(s, grant.id))
    assert stored is not None
    assert stored.state is (GrantState.OBJECTED if objectable else GrantState.ACTIVE)


@pytest.mark.parametrize(
    ("categories", "message"),
    [
        (["vehicle.position"], "requires"),
        (["vehicle.status", "vehicle.sensor"], "not in the contract"),
    ],
)
def test_grant_categories_must_fit_the_contract(
    service: GrantService,
    db: Database,
    clock: ManualClock,
    world: dict[str, Contract],
    categories: list[str],
    message: str,
) -> None:
    with pytest.raises(Conflict, match=message):
        db.run_sync(
            lambda s: service.create(
                s, contract=world["consent"], vin=VIN, at=clock.now(),
                customer_id="cus-anna", categories=categories,
            ),
            write=True,
        )  # fmt: skip
    assert db.run_sync(lambda s: grant_store.for_vehicle(s, VIN)) == []


def test_someone_elses_vehicle_is_not_found(
    service: GrantService, db: Database, clock: ManualClock, world: dict[str, Contract]
) -> None:
    with pytest.raises(NotFound):
        db.run_sync(
            lambda s: service.create(
                s, contract=world["consent"], vin=VIN, at=clock.now(), customer_id="cus-ben"
            ),
            write=True,
        )


def test_a_grant_cannot_outlive_its_contract(
    service: GrantService, db: Database, clock: ManualClock
) -> None:
    now = clock.now()
    until = now + 3 * DAY
    short = Contract.from_document(
        contract_document(
            "legitimate_interest",
            id="c-short",
            validity={"from": "2026-01-01T00:00:00Z", "until": format_instant(until)},
        )
    )

    def setup(session: Session) -> Any:
        session.add(VehicleRow(vin=VIN, created_at=now))
        session.add(
            RecipientRow(
                id="rcp-dealer", name="d", kind="service_partner", legal_entity="d",
                role="independent_controller", headquarters_country="NL",
                processing_countries=["NL"], storage_countries=["NL"],
                created_at=now, updated_at=now,
            )
        )  # fmt: skip
        session.flush()
        contract_store.add(session, short, at=now)
        return service.create(session, contract=short, vin=VIN, at=now)

    grant = db.run_sync(setup, write=True)
    assert grant.valid_until == until
