"""Recipients without customer consent: a dealer's VIN-based pulls, the eligibility preview,
and the OBFCM export under legal obligation (skipping owners who refused it)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from oauth_site import Site
from pull_site import client_token
from worlds import COOPER, COOPER_C, COUNTRYMAN, NOW

from broker.clock import format_instant
from broker.domain.grants import GrantAction
from broker.ingest.service import RawItem
from broker.store import audit as audit_store

SINCE = format_instant(NOW - timedelta(days=1))
UNTIL = format_instant(NOW)


def store(site: Site, items: list[dict[str, Any]]) -> None:
    result = site.broker.ingest.ingest_sync(
        [RawItem(item, i) for i, item in enumerate(items)], source="test"
    )
    assert result.rejected == 0, result.results


def record(
    rid: str, vin: str, category: str, hours_ago: int, data: dict[str, Any]
) -> dict[str, Any]:
    at = format_instant(NOW - timedelta(hours=hours_ago))
    return {"record_id": rid, "vin": vin, "category": category, "recorded_at": at, "data": data}


def audit(site: Site, kind: str) -> list[Any]:
    entries = site.broker.database.run_sync(lambda s: audit_store.read(s, start=0, limit=10_000))
    return [e for e in entries if e.kind == kind]


async def get(site: Site, path: str, token: str, **params: str) -> Any:
    return await site.browser.get(path, params=params, headers={"Authorization": f"Bearer {token}"})


async def test_a_dealer_pulls_technical_data_for_a_vin_it_supplies(site: Site) -> None:
    store(site, [
        record("m1", COUNTRYMAN, "vehicle.maintenance", 3, {"oil_level_pct": 80.0}),
        record("s1", COUNTRYMAN, "vehicle.status", 2, {"mileage_km": 4200.0}),
    ])  # fmt: skip
    token = await client_token(site, "dealer-demo", "vehicle.maintenance:read vehicle.status:read")
    path = f"/v1/recipient/vehicles/{COUNTRYMAN}/records"
    response = await get(site, path, token, since=SINCE, until=UNTIL)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert {r["category"] for r in body["records"]} == {"vehicle.maintenance", "vehicle.status"}
    assert all(r["vehicle"] == COUNTRYMAN for r in body["records"])
    text = await response.text()
    assert "bram" not in text and "cus-" not in text  # tied to the vehicle, never the customer
    # A VIN the dealer has no grant for: answered as if it did not exist.
    other = await get(
        site, f"/v1/recipient/vehicles/{COOPER}/records", token, since=SINCE, until=UNTIL
    )
    unknown = await get(
        site, "/v1/recipient/vehicles/WMW00000000000000/records", token, since=SINCE, until=UNTIL
    )
    assert other.status == unknown.status == 404
    assert (await other.json())["detail"] == (await unknown.json())["detail"]
    # The customer objects (legitimate interest): the next pull is refused.
    site.broker.database.run_sync(
        lambda s: site.broker.grants.transition(
            s, "gr-d7128454ce8cc11b", GrantAction.OBJECT, at=site.clock.now(), reason="objection"
        ),
        write=True,
    )
    refused = await get(site, path, token, since=SINCE, until=UNTIL)
    assert refused.status == 403
    assert [r["code"] for r in (await refused.json())["reasons"]] == ["grant_objected"]


async def test_eligibility_tells_categories_only_and_is_logged(site: Site) -> None:
    store(site, [
        record("m1", COUNTRYMAN, "vehicle.maintenance", 3, {"oil_level_pct": 80.0}),
        record("e1", COUNTRYMAN, "vehicle.environment", 3, {"outside_temperature_c": 8.0}),
    ])  # fmt: skip
    token = await client_token(site, "dealer-demo", "vehicle.maintenance:read")
    headers = {"Authorization": f"Bearer {token}"}
    before = len(audit(site, "eligibility"))
    response = await site.browser.post(
        "/v1/recipient/eligibility",
        json={"vin": COUNTRYMAN, "contract": "dealer-service"},
        headers=headers,
    )
    assert response.status == 200
    # The contract's categories the vehicle's model can provide (whatever is stored);
    # environment is not in the contract.
    assert await response.json() == {
        "contract": "dealer-service",
        "eligible": True,
        "categories": ["vehicle.general", "vehicle.maintenance", "vehicle.status"],
    }
    unknown = await site.browser.post(
        "/v1/recipient/eligibility",
        json={"vin": "WMW00000000000000", "contract": "dealer-service"},
        headers=headers,
    )
    assert (await unknown.json()) == {
        "contract": "dealer-service",
        "eligible": False,
        "categories": [],
    }
    entries = audit(site, "eligibility")[before:]
    assert len(entries) == 2
    assert entries[0].categories == ("vehicle.general", "vehicle.maintenance", "vehicle.status")
    assert entries[0].subject_ref.startswith("veh-")  # no VIN in the audit log
    # Malformed bodies, another recipient's contract.
    bad = await site.browser.post(
        "/v1/recipient/eligibility", json={"vin": "nope", "contract": ""}, headers=headers
    )
    assert bad.status == 422 and len((await bad.json())["errors"]) == 2
    foreign = await site.browser.post(
        "/v1/recipient/eligibility",
        json={"vin": COUNTRYMAN, "contract": "insurer-ubi"},
        headers=headers,
    )
    assert foreign.status == 403


async def test_the_obfcm_export_skips_owners_who_refused_it(site: Site) -> None:
    store(site, [
        record("c1", COOPER_C, "vehicle.consumption", 5,
               {"lifetime_fuel_l": 310.5, "lifetime_distance_km": 5400.0}),
    ])  # fmt: skip
    token = await client_token(site, "eu-commission-demo", "vehicle.consumption:read")
    path = "/v1/recipient/exports/eu-obfcm"
    response = await get(site, path, token, since=SINCE, until=UNTIL)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["legal_basis"] == "6(1)(c)" and body["vehicles"] == 1
    assert [r["data"]["lifetime_fuel_l"] for r in body["records"]] == [310.5]
    # The contract allows one export a day.
    again = await get(site, path, token, since=SINCE, until=UNTIL)
    assert again.status == 429 and int(again.headers["Retry-After"]) > 0
    # The owner refuses the read-out at the workshop: the next period's export skips the car.
    site.broker.database.run_sync(
        lambda s: site.broker.grants.transition(
            s, "gr-9b2496dba961e34e", GrantAction.REFUSE, at=site.clock.now(), reason="workshop"
        ),
        write=True,
    )
    site.clock.advance(timedelta(days=1))
    token = await client_token(site, "eu-commission-demo", "vehicle.consumption:read")
    later = await get(site, path, token, since=SINCE, until=format_instant(site.clock.now()))
    assert later.status == 200
    assert (await later.json())["vehicles"] == 0  # the refusing owner's car is skipped
