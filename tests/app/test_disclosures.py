"""Everything that left about a customer is in their copy and their transfer history, of
every kind — a listing, a webhook event, a notice that a grant ended, the notices feed, an
eligibility answer — exactly as the audit log holds it, and nothing about anyone else.

Each kind is produced for anna the way a recipient meets it: the insurer lists her grant
with a DPoP-bound token and polls that listing; the fleet operator clears her Cooper and
its webhook receiver gets the events; she withdraws the insurer's grant and the insurer
reads the notice from its feed; the development partner checks her Cooper's eligibility.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from app import from_the_log
from app.from_the_log import assert_copy_matches_the_log
from cryptography.hazmat.primitives.asymmetric import ec
from pull_site import client_token
from worlds import CLUBMAN, COOPER, COUNTRYMAN

from broker.oauth import jose
from broker.store import audit as audit_store
from broker.store import contracts as contract_store
from broker.webhooks.egress import Egress
from broker.webhooks.runner import egress_policy, make_worker

POLLS = 50
DPOP_KEY = ec.generate_private_key(ec.SECP256R1())
INSURER = "insurer-demo:demo-secret-insurer-demo"
KINDS = {"listing", "event", "notice", "notice_feed", "eligibility"}


def dpop(kit: Any, method: str, path: str, token: str | None = None) -> dict[str, str]:
    """A DPoP proof for one request (RFC 9449), signed with :data:`DPOP_KEY`."""
    proof = jose.sign_dpop_proof(
        DPOP_KEY, method=method, url=f"{kit.site.base}{path}", now=kit.site.clock.now(),
        access_token=token,
    )  # fmt: skip
    return {"DPoP": proof}


async def insurer_token(kit: Any) -> str:
    """The insurer's client-credentials token, bound to :data:`DPOP_KEY` (its contract
    accepts no bearer token)."""
    basic = base64.b64encode(INSURER.encode()).decode()
    response = await kit.site.browser.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "vehicle.status:read"},
        headers={"Authorization": f"Basic {basic}", **dpop(kit, "POST", "/oauth/token")},
    )
    body = await response.json()
    assert response.status == 200 and body["token_type"] == "DPoP", body
    return str(body["access_token"])


async def as_insurer(kit: Any, path: str, token: str) -> dict[str, Any]:
    response = await kit.site.browser.get(
        path, headers={"Authorization": f"DPoP {token}", **dpop(kit, "GET", path, token)}
    )
    body: dict[str, Any] = await response.json()
    assert response.status == 200, body
    return body


async def eligibility(kit: Any, token: str, vin: str, contract: str) -> int:
    response = await kit.site.browser.post(
        "/v1/recipient/eligibility",
        json={"vin": vin, "contract": contract},
        headers={"Authorization": f"Bearer {token}"},
    )
    return response.status


@dataclass
class Receiver:
    """The fleet operator's webhook endpoint, on loopback, and the bodies it received."""

    url: str = ""
    received: list[bytes] = field(default_factory=list)


@pytest.fixture
async def receiver(aiohttp_server: Any) -> Receiver:
    receiver = Receiver()

    async def hook(request: web.Request) -> web.Response:
        receiver.received.append(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app, host="127.0.0.1")
    receiver.url = str(server.make_url("/hook"))
    return receiver


async def fleet_events_for_the_cooper(kit: Any, receiver: Receiver) -> None:
    """The fleet operator subscribes, takes anna's Cooper into its fleet and clears it;
    its receiver gets the events (decided and audited by the gate when sent)."""
    broker = kit.site.broker
    token = await client_token(kit.site, "fleet-demo", "vehicle.status:read")
    response = await kit.site.browser.post(
        "/v1/recipient/webhooks",
        json={"url": receiver.url, "event_types": ["grant.created", "fleet.vehicle_joined"]},
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    assert response.status == 201, await response.text()
    now = broker.clock.now()
    broker.database.run_sync(
        lambda s: broker.grants.join_fleet(s, "rcp-fleet", COOPER, at=now), write=True
    )
    contract = broker.database.run_sync(lambda s: contract_store.latest(s, "fleet-operator"))
    broker.database.run_sync(
        lambda s: broker.grants.create(s, contract=contract, vin=COOPER, at=now), write=True
    )
    egress = Egress(egress_policy(broker.settings))
    await egress.start()
    try:
        await make_worker(broker, egress).drain()
    finally:
        await egress.close()
    events = [b for b in receiver.received if b'"ping"' not in b]
    assert len(events) == 2  # grant.created and fleet.vehicle_joined


async def every_kind_for_anna(kit: Any, receiver: Receiver) -> str:
    """Produce one of each kind about anna (and a few about others); her app token."""
    clock = kit.site.clock
    insurer = await insurer_token(kit)
    for _ in range(POLLS):  # the insurer polls its listing: 50 listings, one day
        listing = await as_insurer(kit, "/v1/recipient/vehicles", insurer)
        assert [v["vehicle"] for v in listing["vehicles"]] == [COOPER]
        clock.advance(timedelta(seconds=5))

    await fleet_events_for_the_cooper(kit, receiver)

    partner = await client_token(kit.site, "devpartner-demo", "vehicle.status:read")
    assert await eligibility(kit, partner, COOPER, "development-partner") == 200  # anna's
    assert await eligibility(kit, partner, COUNTRYMAN, "development-partner") == 200  # bram's now
    assert await eligibility(kit, partner, CLUBMAN, "development-partner") == 200  # carla's
    maps = await client_token(kit.site, "maps-demo", "vehicle.traffic:read")
    assert await eligibility(kit, maps, COOPER, "map-provider-anonymised") == 403  # told nothing

    token = await kit.token("anna")
    status, _, _ = await kit.api("POST", "/v1/me/grants/gr-677f38bc93017473/withdrawal", token)
    assert status == 200  # the insurer gets a notice
    clock.advance(timedelta(minutes=1))
    insurer = await insurer_token(kit)
    for _ in range(2):
        feed = await as_insurer(kit, "/v1/recipient/notices", insurer)
        assert [n["grant"] for n in feed["notices"]] == ["gr-677f38bc93017473"]
    return token


def logged(kit: Any) -> list[Any]:
    return kit.site.broker.database.run_sync(lambda s: audit_store.read(s, limit=1_000_000))


async def test_the_copy_holds_every_kind_entry_for_entry_and_nothing_of_others(
    webhook_kit: Any, receiver: Receiver
) -> None:
    kit = webhook_kit
    token = await every_kind_for_anna(kit, receiver)
    status, copy, _ = await kit.api("GET", "/v1/me/export", token)
    assert status == 200

    assert_copy_matches_the_log(kit, copy, "cus-anna")  # entry for entry, kinds included
    kinds = {t["kind"] for t in copy["transfers"]}
    assert kinds == KINDS  # (no data was released: no release)
    broker = kit.site.broker
    cooper = broker.keyring.vehicle_ref(COOPER)
    [check] = [t for t in copy["transfers"] if t["kind"] == "eligibility"]
    [entry] = [e for e in logged(kit) if e.seq == check["seq"]]
    assert entry.subject_ref == cooper and entry.decision == "released"
    assert check["vehicles"] == [COOPER] and check["grants"] == []
    assert check["recipient"]["name"] == "Kraftwerk Komponenten"
    assert check["destination_countries"] == ["DE", "IN"]
    assert "scc:SCC-DEMO-2025-017" in check["transfer_mechanisms"]
    [listing] = [t for t in copy["transfers"] if t["kind"] == "listing"]
    assert listing["occurrences"] == POLLS and listing["grants"] == ["gr-677f38bc93017473"]
    [feed] = [t for t in copy["transfers"] if t["kind"] == "notice_feed"]
    assert feed["occurrences"] == 2
    events = [t for t in copy["transfers"] if t["kind"] == "event"]
    assert len(events) == 2 and {t["recipient"]["id"] for t in events} == {"rcp-fleet"}
    assert all(t["destination_countries"] == ["CH", "NL"] for t in events)
    recipients = {r["id"]: r for r in copy["recipients"]}
    assert recipients["rcp-insurer"]["transfers"] == POLLS + 1 + 2  # listings, notice, feed
    assert recipients["rcp-devpartner"]["kinds"] == ["eligibility"]

    # Only the check of her Cooper: not the Countryman's (bram's since 1 March), not
    # carla's Clubman, not the refused one.
    checks = [e for e in logged(kit) if e.kind == "eligibility"]
    assert len(checks) == 4
    assert [e.seq for e in checks if e.seq in {t["seq"] for t in copy["transfers"]}] == [
        check["seq"]
    ]

    # carla's copy holds none of anna's, and exactly what the log holds for her.
    _, carlas, _ = await kit.api("GET", "/v1/me/export", await kit.token("carla"))
    annas = {e["seq"] for e in from_the_log_entries(kit, "cus-anna")}
    assert not annas & {s for t in carlas["transfers"] for s in range(t["first_seq"], t["seq"] + 1)}
    assert_copy_matches_the_log(kit, carlas, "cus-carla")
    assert [t["vehicles"] for t in carlas["transfers"] if t["kind"] == "eligibility"] == [[CLUBMAN]]
    # bram drives the Cooper and owns the Countryman since 1 March: both checks are his.
    _, brams, _ = await kit.api("GET", "/v1/me/export", await kit.token("bram"))
    assert_copy_matches_the_log(kit, brams, "cus-bram")
    assert sorted(t["vehicles"][0] for t in brams["transfers"] if t["kind"] == "eligibility") == [
        COOPER,
        COUNTRYMAN,
    ]


def from_the_log_entries(kit: Any, customer_id: str) -> list[dict[str, Any]]:
    broker = kit.site.broker
    return broker.database.run_sync(
        lambda s: from_the_log.expected_transfers(s, customer_id, broker.keyring)
    )


async def test_fifty_polls_of_a_listing_are_one_item_of_the_history(
    webhook_kit: Any, receiver: Receiver
) -> None:
    kit = webhook_kit
    token = await every_kind_for_anna(kit, receiver)
    status, history, _ = await kit.api("GET", "/v1/me/grants/gr-677f38bc93017473/transfers", token)
    assert status == 200
    # The feed's two reads, the notice, the 50 listings: three items, not 53.
    assert [(t["kind"], t["occurrences"]) for t in history["items"]] == [
        ("notice_feed", 2),
        ("notice", 1),
        ("listing", POLLS),
    ]
    assert history["total"] == 3
    named = [e.to_json() for e in logged(kit) if "gr-677f38bc93017473" in e.grant_ids
             and e.decision == "released"]  # fmt: skip
    assert from_the_log.as_items(history["items"]) == from_the_log.expected_items(
        named, {"gr-677f38bc93017473"}
    )
    listing = history["items"][2]
    listings = [e for e in named if e["kind"] == "listing"]
    assert (listing["first_seq"], listing["seq"]) == (listings[0]["seq"], listings[-1]["seq"])
    _, grant, _ = await kit.api("GET", "/v1/me/grants/gr-677f38bc93017473", token)
    assert grant["transfer_count"] == len(named) == POLLS + 3

    # The pages say what each item was, in words, and count the polls.
    page = await (await kit.site.browser.get("/grants/gr-677f38bc93017473?lang=en")).text()
    assert page.count('data-kind="listing"') == 1
    for words in ("listed your vehicle", f"{POLLS} times that day",
                  "notified that the permission ended", "handed the notice"):  # fmt: skip
        assert words in page, words
    overview = await (await kit.site.browser.get("/grants?lang=en")).text()
    assert "answered an eligibility check" in overview and "Kraftwerk Komponenten" in overview
    assert (
        "notified of a grant event"
        in await (await kit.site.browser.get(f"/grants/{fleet_clearance(kit)}?lang=en")).text()
    )
    dutch = await (await kit.site.browser.get("/grants/gr-677f38bc93017473?lang=nl")).text()
    assert "uw voertuig vermeld in een overzicht" in dutch and f"{POLLS} keer" in dutch


def fleet_clearance(kit: Any) -> str:
    """The fleet clearance of anna's Cooper, as the events sent about it name it."""
    [grant_id] = {e.grant_ids[0] for e in logged(kit) if e.kind == "event"}
    return grant_id
