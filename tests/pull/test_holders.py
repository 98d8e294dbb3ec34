"""Consent only from whoever owns the car, checked per record, ended by a sale (issue 14).

Tried as an attacker would: bram, a secondary driver of anna's Cooper, was offered her
car on the insurer's consent page, approved it with precise location, and the insurer
then pulled anna's own positions. After the car was sold, the gate still released the
new owner's data under the old consent: it checked the giver only at consent.
"""

from __future__ import annotations

from contextlib import aclosing
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from oauth_site import Site, hidden_fields, log_in, relative
from pull_site import code_flow, drive, insurer_client
from worlds import COOPER, NOW

from broker.clock import format_instant
from broker.domain.grants import GrantState
from broker.store import grants as grant_store
from broker.store.tables import VehiclePartyRow

UNTIL = format_instant(NOW + timedelta(hours=6))
SINCE = format_instant(NOW)


def records_url(site: Site, vin: str) -> str:
    return f"{site.base}/v1/recipient/vehicles/{vin}/records"


def grants_on(site: Site, vin: str) -> list[Any]:
    return site.broker.database.run_sync(lambda s: grant_store.for_vehicle(s, vin))


async def consent_page(site: Site, login: str) -> str:
    client = insurer_client(site)
    meta = await (await site.browser.get("/.well-known/oauth-authorization-server")).json()
    await log_in(site, login, f"demo-password-{login}")
    url, _ = client.create_authorization_url(meta["authorization_endpoint"], code_verifier="v" * 50)
    page = await site.browser.get(relative(url), allow_redirects=False)
    assert page.status == 200, await page.text()
    return await page.text()


async def test_a_driver_is_offered_no_vehicle_and_cannot_consent_for_the_owners(
    site: Site,
) -> None:
    html = await consent_page(site, "bram")  # bram drives anna's Cooper; owns no car of hers
    assert COOPER not in html
    form = hidden_fields(html) | {
        "decision": "approve",
        "vehicle": COOPER,
        "category": "vehicle.position",
        "precision": "precise",
    }
    answer = await site.browser.post("/oauth/authorize", data=form, allow_redirects=False)
    assert answer.status == 400
    assert [g for g in grants_on(site, COOPER) if g.customer_id == "cus-bram"] == []


async def test_the_owner_is_offered_her_car(site: Site) -> None:
    assert COOPER in await consent_page(site, "anna")


async def test_a_sale_ends_the_grants_the_previous_holders_gave(site: Site) -> None:
    client = insurer_client(site)
    token = await code_flow(site, client)  # anna consents for her Cooper
    del token
    site.clock.set(NOW + timedelta(hours=1))
    drive(site, COOPER, NOW + timedelta(minutes=1), 30)  # anna's own data
    sale = NOW + timedelta(hours=1)
    site.broker.database.run_sync(
        lambda s: site.broker.grants.change_owner(s, COOPER, "cus-carla", at=sale), write=True
    )
    site.clock.set(NOW + timedelta(hours=3))
    drive(site, COOPER, NOW + timedelta(hours=2), 30, prefix="c")  # carla's data
    states = {g.customer_id: g.state for g in grants_on(site, COOPER) if g.customer_id}
    assert states["cus-anna"] is GrantState.REVOKED
    # bram's driver period ended with the ownership
    rows = site.broker.database.run_sync(
        lambda s: s.execute(
            sa.select(VehiclePartyRow.until).where(
                VehiclePartyRow.vin == COOPER, VehiclePartyRow.customer_id == "cus-bram"
            )
        ).all()
    )
    assert [r[0] for r in rows] and all(r[0] is not None for r in rows)
    async with aclosing(client):
        response = await client.get(
            records_url(site, COOPER), params={"since": SINCE, "until": UNTIL}
        )
    assert response.status_code == 401  # the sale revoked the token with the grant


async def test_the_gate_checks_the_giver_at_each_records_time(site: Site) -> None:
    client = insurer_client(site)
    await code_flow(site, client)  # anna consents at NOW
    site.clock.set(NOW + timedelta(hours=6))
    drive(site, COOPER, NOW + timedelta(minutes=1), 120)
    # anna's ownership ends at NOW + 1h without the sale being reported to the grants
    # (a backend that wrote the register directly): the gate still must not release data
    # recorded after it under her consent.
    end = NOW + timedelta(hours=1)
    update = (
        sa.update(VehiclePartyRow)
        .where(VehiclePartyRow.vin == COOPER, VehiclePartyRow.customer_id == "cus-anna")
        .values(until=end)
    )
    site.broker.database.run_sync(lambda s: s.execute(update), write=True)
    site.clock.set(NOW + timedelta(seconds=10))
    async with aclosing(client):
        response = await client.get(
            records_url(site, COOPER), params={"since": SINCE, "until": UNTIL, "limit": "5000"}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    times = [r["recorded_at"] for r in body["records"]]
    assert times and max(times) < format_instant(end)
    withheld = [w for w in body["withheld"] if w["code"] == "recorded_outside_giver_ownership"]
    assert {w["category"] for w in withheld} == {"vehicle.status", "vehicle.position"}
    assert all(w["count"] > 0 for w in withheld)
