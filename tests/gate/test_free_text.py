"""Free text through the gate: the dealer and the insurer, whose contracts share no customer
data, receive no customer's identifiers in a vehicle's model or colour (issue 13)."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlmodel import Session
from worlds import COOPER, COUNTRYMAN, NOW, World

from broker.domain.contracts import Channel
from broker.gate.release import Release, ReleaseRequest, VehicleTarget
from broker.store.tables import CustomerRow
from broker.vault.contacts import save_contact

HOUR = timedelta(hours=1)
# Anna holds the Cooper; Bram holds the Countryman; Carla holds neither.
MODEL = "Mini for Anna de Vries / Bram Jansen, Oudegracht 158"
COLOUR = "blue; carla.smit@example.com +31201234567 Prinsengracht 263 {vin}"
NEVER = ["Anna de Vries", "Bram Jansen", "Oudegracht 158", "carla.smit@example.com",
         "+31201234567", "Prinsengracht 263"]  # fmt: skip


def request(recipient: str, contract: str, purpose: str, vin: str) -> ReleaseRequest:
    return ReleaseRequest(
        recipient_id=recipient,
        contract_id=contract,
        channel=Channel.PULL,
        purpose=purpose,
        target=VehicleTarget(vin),
        categories=frozenset({"vehicle.general"}),
        since=NOW - HOUR,
        until=NOW,
    )


async def released(world: World, req: ReleaseRequest, other_vin: str) -> str:
    assert isinstance(req.target, VehicleTarget)
    vin = req.target.vin
    world.store(vin, "vehicle.general", NOW - HOUR / 2,
                {"model": MODEL, "colour": COLOUR.format(vin=f"{vin} {other_vin}")})  # fmt: skip
    outcome = await world.gate.release(req)
    assert isinstance(outcome, Release)
    [record] = outcome.payload.records
    return json.dumps(record, ensure_ascii=False)


async def test_the_dealer_gets_no_customer_identifier_in_free_text(world: World) -> None:
    req = request("rcp-dealer", "dealer-service", "repair-and-warranty", COUNTRYMAN)
    text = await released(world, req, COOPER)
    for canary in NEVER:
        assert canary.casefold() not in text.casefold(), canary
    assert COOPER not in text  # another vehicle's VIN
    assert COUNTRYMAN in text  # the vehicle's own VIN: the contract names vehicles by VIN
    assert "Mini for [redacted] / [redacted], [redacted]" in text


async def test_the_insurer_gets_no_customer_identifier_in_free_text(world: World) -> None:
    req = request("rcp-insurer", "insurer-ubi", "usage-based-insurance", COOPER)
    text = await released(world, req, COUNTRYMAN)
    for canary in NEVER:
        assert canary.casefold() not in text.casefold(), canary
    assert COUNTRYMAN not in text
    assert COOPER in text


async def test_a_new_customers_name_is_scrubbed_as_soon_as_their_contact_is_saved(
    world: World,
) -> None:
    req = request("rcp-dealer", "dealer-service", "repair-and-warranty", COUNTRYMAN)
    world.store(COUNTRYMAN, "vehicle.general", NOW - HOUR / 2, {"model": "for Dirk Bakker"})
    first = await world.gate.release(req)
    assert isinstance(first, Release)
    assert "Dirk Bakker" in json.dumps(first.payload.records)  # nobody of that name yet

    def add(session: Session) -> None:
        session.add(CustomerRow(id="cus-dirk", login="dirk", password_hash="!", created_at=NOW))
        session.flush()
        save_contact(session, world.vault, "cus-dirk", {"name": "Dirk Bakker"}, NOW)

    world.db.run_sync(add, write=True)
    again = await world.gate.release(req)
    assert isinstance(again, Release)
    assert "Dirk Bakker" not in json.dumps(again.payload.records)
