"""Eligibility over real HTTP: an answer from what the vehicle's model can provide, never from
what the broker stores or how the owner set location; a quota; nothing for anonymised contracts."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from oauth_site import Site
from pull_site import client_token, drive
from worlds import CLUBMAN, COOPER, COOPER_C, COUNTRYMAN, NOW

from broker.settings import Settings
from broker.store import audit as audit_store
from broker.store.customer_view import set_location
from broker.store.tables import TelemetryRecordRow

ELIGIBILITY = "/v1/recipient/eligibility"
COOPER_UNSTORED = "WMWXR31002TA19999"  # a Cooper SE the broker has never heard of
COOPER_C_UNSTORED = "WMWZC31030TE59999"  # a Cooper C likewise
FLEET_SCOPE = "vehicle.status:read vehicle.position:read vehicle.maintenance:read"


def audit(site: Site, kind: str = "eligibility") -> list[Any]:
    entries = site.broker.database.run_sync(lambda s: audit_store.read(s, start=0, limit=10_000))
    return [e for e in entries if e.kind == kind]


async def ask(site: Site, token: str, vin: str, contract: str) -> Any:
    return await site.browser.post(
        ELIGIBILITY,
        json={"vin": vin, "contract": contract},
        headers={"Authorization": f"Bearer {token}"},
    )


async def answer(site: Site, token: str, vin: str, contract: str) -> Any:
    response = await ask(site, token, vin, contract)
    assert response.status == 200, await response.text()
    return await response.json()


def digest(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def test_the_answer_is_what_the_model_can_provide(site: Site) -> None:
    token = await client_token(site, "fleet-demo", FLEET_SCOPE)
    # Nothing is stored for any vehicle yet: the model still provides these.
    assert await answer(site, token, COOPER, "fleet-operator") == {
        "contract": "fleet-operator",
        "eligible": True,
        "categories": ["vehicle.maintenance", "vehicle.position", "vehicle.status"],
    }
    # An electric model has no fuel-consumption monitor; a petrol one has. (The OBFCM
    # contract allows one request a day.)
    obfcm = await client_token(site, "eu-commission-demo", "vehicle.consumption:read")
    assert (await answer(site, obfcm, COOPER, "eu-obfcm"))["eligible"] is False
    site.clock.set(NOW + timedelta(days=1))
    obfcm = await client_token(site, "eu-commission-demo", "vehicle.consumption:read")
    assert (await answer(site, obfcm, COOPER_C, "eu-obfcm"))["categories"] == [
        "vehicle.consumption"
    ]


async def test_a_stored_vin_is_answered_like_an_unstored_one_of_its_model(site: Site) -> None:
    token = await client_token(site, "fleet-demo", FLEET_SCOPE)
    drive(site, COOPER, NOW - timedelta(hours=2), 30)
    stored = await ask(site, token, COOPER, "fleet-operator")
    unstored = await ask(site, token, COOPER_UNSTORED, "fleet-operator")
    assert stored.status == unstored.status == 200
    assert await stored.read() == await unstored.read()
    assert dict(stored.headers).keys() == dict(unstored.headers).keys()
    # A VIN of no known model, or of another maker, answers like a model providing nothing.
    nothing = {"contract": "fleet-operator", "eligible": False, "categories": []}
    assert await answer(site, token, "WMW00000000000000", "fleet-operator") == nothing
    assert await answer(site, token, "WVWZZZ1JZXW000001", "fleet-operator") == nothing


async def test_location_switches_and_stored_data_do_not_change_the_answer(site: Site) -> None:
    token = await client_token(site, "fleet-demo", FLEET_SCOPE)
    # carla switched location off on her Cooper C: nobody may learn that from the answer.
    off = await answer(site, token, COOPER_C, "fleet-operator")
    assert off == await answer(site, token, COOPER_C_UNSTORED, "fleet-operator")
    assert "vehicle.position" in off["categories"]
    on = await answer(site, token, COOPER, "fleet-operator")

    def switch(vin: str, value: bool) -> None:
        site.broker.database.run_sync(
            lambda s: set_location(s, vin, collection=value, sharing=value), write=True
        )

    switch(COOPER, False)
    switch(COOPER_C, True)
    assert await answer(site, token, COOPER, "fleet-operator") == on
    assert await answer(site, token, COOPER_C, "fleet-operator") == off
    # Storing data, then erasing all of it, changes nothing either.
    drive(site, COOPER, NOW - timedelta(hours=1), 10)
    assert await answer(site, token, COOPER, "fleet-operator") == on
    site.broker.database.run_sync(lambda s: s.execute(sa.delete(TelemetryRecordRow)), write=True)
    assert await answer(site, token, COOPER, "fleet-operator") == on


async def test_each_answer_is_one_audit_entry_naming_the_vehicle(site: Site) -> None:
    token = await client_token(site, "devpartner-demo", "vehicle.status:read")
    before = len(audit(site))
    body = await answer(site, token, CLUBMAN, "development-partner")
    [entry] = audit(site)[before:]
    assert entry.decision == "released"
    assert entry.subject_ref == site.broker.keyring.vehicle_ref(CLUBMAN)
    assert entry.categories == tuple(body["categories"])
    assert entry.payload_digest == digest(body)
    # The development partner processes in India under SCCs: named like a release.
    assert set(entry.destination_countries) == {"DE", "IN"}
    assert "scc:SCC-DEMO-2025-017" in entry.transfer_mechanisms
    assert entry.contract_version is not None and entry.legal_basis


async def test_an_anonymised_contract_learns_nothing_about_a_single_vehicle(site: Site) -> None:
    token = await client_token(site, "maps-demo", "vehicle.traffic:read")
    before = len(audit(site))
    responses = [await ask(site, token, vin, "map-provider-anonymised") for vin in
                 (COOPER, COOPER_C, "WMW00000000000000")]  # fmt: skip
    assert {r.status for r in responses} == {403}
    bodies = [await r.json() for r in responses]
    assert all(r.content_type == "application/problem+json" for r in responses)
    assert bodies[0] == bodies[1] == bodies[2]
    assert [r["code"] for r in bodies[0]["reasons"]] == ["anonymised_contract"]
    entries = audit(site)[before:]
    assert [e.decision for e in entries] == ["denied"] * 3
    assert entries[0].subject_ref == site.broker.keyring.vehicle_ref(COOPER)
    assert entries[0].categories == () and entries[0].payload_digest == ""


async def test_a_recipient_has_a_daily_quota_of_answers(site: Site) -> None:
    site.broker.settings = replace(site.broker.settings, eligibility_quota=3)
    dealer = await client_token(site, "dealer-demo", "vehicle.status:read")
    for vin in (COOPER, COUNTRYMAN, CLUBMAN):
        assert (await ask(site, dealer, vin, "dealer-service")).status == 200
    before = len(audit(site))
    refused = await ask(site, dealer, COOPER_C, "dealer-service")
    assert refused.status == 429
    assert refused.content_type == "application/problem+json"
    retry = int(refused.headers["Retry-After"])
    assert 0 < retry <= 24 * 3600
    assert len(audit(site)) == before  # nothing was looked up, so nothing is audited
    # Another recipient has its own quota; the contract's rate limit is another count.
    fleet = await client_token(site, "fleet-demo", FLEET_SCOPE)
    assert (await ask(site, fleet, COOPER, "fleet-operator")).status == 200
    # The next day the quota starts again.
    site.clock.set(NOW + timedelta(days=1))
    dealer = await client_token(site, "dealer-demo", "vehicle.status:read")
    assert (await ask(site, dealer, COOPER_C, "dealer-service")).status == 200


def test_the_quota_is_a_setting() -> None:
    assert Settings().eligibility_quota == 100
    assert Settings.from_env({"BROKER_ELIGIBILITY_QUOTA": "7"}).eligibility_quota == 7
