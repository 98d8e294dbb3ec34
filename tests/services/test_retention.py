"""Retention with the controllable clock: exactly what is due is erased, and audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from worlds import COOPER, NOW, World, make_world

from broker.domain.contracts import IsoDuration
from broker.errors import ConfigurationError
from broker.services.retention import parse_overrides, purge
from broker.store import audit as audit_store
from broker.store.database import Database

DAY = timedelta(days=1)


@pytest.fixture
async def world(db: Database) -> World:
    built = await make_world(db)
    return built


def remaining(world: World) -> set[str]:
    rows = world.db.run_sync(
        lambda s: s.execute(sa.text("SELECT id FROM telemetry_record")).scalars().all()
    )
    return set(rows)


async def test_vehicle_data_is_erased_after_four_weeks_and_nothing_else(world: World) -> None:
    # Four records around the 28-day boundary, in two categories.
    world.store(COOPER, "vehicle.status", NOW - 29 * DAY, {"mileage_km": 1.0})
    world.store(COOPER, "vehicle.status", NOW - 27 * DAY, {"mileage_km": 2.0})
    world.store(COOPER, "vehicle.maintenance", NOW - 40 * DAY, {"oil_level_pct": 50.0})
    world.store(COOPER, "vehicle.maintenance", NOW - DAY, {"oil_level_pct": 60.0})
    catalogue = world.library.catalogue
    report = world.db.run_sync(lambda s: purge(s, now=NOW, catalogue=catalogue), write=True)
    assert report.purged["telemetry:vehicle.status"][0] == 1
    assert report.purged["telemetry:vehicle.maintenance"][0] == 1
    assert remaining(world) == {
        f"r-{COOPER[-5:]}-vehicle.status-{int((NOW - 27 * DAY).timestamp())}",
        f"r-{COOPER[-5:]}-vehicle.maintenance-{int((NOW - DAY).timestamp())}",
    }
    # Two days later, the 27-day-old status record is due as well.
    later = NOW + 2 * DAY
    world.db.run_sync(lambda s: purge(s, now=later, catalogue=catalogue), write=True)
    assert remaining(world) == {
        f"r-{COOPER[-5:]}-vehicle.maintenance-{int((NOW - DAY).timestamp())}"
    }


async def test_each_purge_is_an_audit_event(world: World) -> None:
    world.store(COOPER, "vehicle.status", NOW - 30 * DAY, {"mileage_km": 1.0})
    before = world.db.run_sync(audit_store.size)
    catalogue = world.library.catalogue
    world.db.run_sync(lambda s: purge(s, now=NOW, catalogue=catalogue), write=True)
    entries = world.db.run_sync(lambda s: audit_store.read(s, start=before, limit=100))
    purges = [e for e in entries if e.kind == "purge"]
    assert [(e.details["kind"], e.details["count"]) for e in purges] == [
        ("telemetry:vehicle.status", 1)
    ]
    assert purges[0].details["up_to"] == "2026-02-10T12:00:00Z"  # NOW - 28 days
    assert world.db.run_sync(lambda s: audit_store.verify(s, None)).ok


async def test_retention_can_be_set_per_category(world: World) -> None:
    world.store(COOPER, "vehicle.status", NOW - 3 * DAY, {"mileage_km": 1.0})
    world.store(COOPER, "vehicle.maintenance", NOW - 3 * DAY, {"oil_level_pct": 50.0})
    catalogue = world.library.catalogue
    overrides = parse_overrides('{"vehicle.status": "P2D"}', catalogue)
    assert overrides == {"vehicle.status": IsoDuration.parse("P2D")}
    world.db.run_sync(
        lambda s: purge(s, now=NOW, catalogue=catalogue, overrides=overrides), write=True
    )
    assert remaining(world) == {
        f"r-{COOPER[-5:]}-vehicle.maintenance-{int((NOW - 3 * DAY).timestamp())}"
    }


@pytest.mark.parametrize(
    "text", ["not json", "[1]", '{"vehicle.teleport": "P1D"}', '{"vehicle.status": "soon"}']
)
async def test_bad_retention_settings_are_refused(world: World, text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_overrides(text, world.library.catalogue)


async def test_contact_data_is_erased_a_year_after_the_relationship_ended(world: World) -> None:
    from broker.store import parties as party_store
    from broker.vault.contacts import load_contact

    catalogue = world.library.catalogue
    # Anna sells both her vehicles; her consent grants end with the sale.
    for vin in (COOPER,):
        world.db.run_sync(
            lambda s, vin=vin: world.grants.change_owner(s, vin, "cus-bram", at=NOW), write=True
        )
    assert world.db.run_sync(lambda s: party_store.current_owner_row(s, COOPER)) is not None
    # Within the year nothing happens; after it, her contact data goes.
    world.db.run_sync(lambda s: purge(s, now=NOW + 300 * DAY, catalogue=catalogue), write=True)
    assert world.db.run_sync(lambda s: load_contact(s, world.vault, "cus-anna")) is not None
    world.db.run_sync(lambda s: purge(s, now=NOW + 400 * DAY, catalogue=catalogue), write=True)
    assert world.db.run_sync(lambda s: load_contact(s, world.vault, "cus-anna")) is None
    # Carla still holds her vehicles: her contact data stays.
    assert world.db.run_sync(lambda s: load_contact(s, world.vault, "cus-carla")) is not None
