"""After a sale (reported over HTTP), the new owner sees none of the previous owner's
grants or transfers, and nothing recorded under the new owner reaches the grants the
previous owner gave (issue 14)."""

from __future__ import annotations

import base64
from datetime import timedelta

from app.conftest import POSITION, STATUS, Kit, record
from worlds import COOPER, NOW

from broker.clock import format_instant
from broker.domain.contracts import Channel
from broker.gate.release import Denial, Release


async def report_sale(kit: Kit, to: str) -> None:
    basic = base64.b64encode(b"broker-backend:demo-secret-broker-backend").decode()
    answer = await kit.site.browser.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "holders"},
        headers={"Authorization": f"Basic {basic}"},
    )
    token = (await answer.json())["access_token"]
    response = await kit.site.browser.post(
        "/v1/holders/changes",
        json={
            "change_id": "sale-1",
            "kind": "sale",
            "vin": COOPER,
            "customer": to,
            "at": format_instant(kit.site.clock.now()),
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status == 201, await response.text()


async def test_the_new_owner_sees_nothing_of_the_previous_owners(kit: Kit) -> None:
    await kit.insurer_tokens()  # anna consents for her Cooper
    kit.site.clock.set(NOW + timedelta(minutes=30))
    kit.ingest(
        [
            record("a1", COOPER, "vehicle.status", NOW + timedelta(minutes=5), STATUS),
            record("a2", COOPER, "vehicle.position", NOW + timedelta(minutes=5), POSITION),
        ]
    )
    before = await kit.release()  # the insurer pulls anna's data, and the dev partner too
    assert isinstance(before, Release) and before.payload.records
    partner = await kit.release(
        recipient="rcp-devpartner",
        contract="development-partner",
        purpose="product-quality",
        channel=Channel.DATASPACE,
        categories=frozenset({"vehicle.status"}),
    )
    assert isinstance(partner, Release)

    await report_sale(kit, "cus-carla")
    kit.site.clock.set(NOW + timedelta(hours=2))
    kit.ingest(
        [
            record("c1", COOPER, "vehicle.status", NOW + timedelta(hours=1), STATUS),
            record("c2", COOPER, "vehicle.position", NOW + timedelta(hours=1), POSITION),
        ]
    )
    after = await kit.release(since=NOW + timedelta(minutes=45))
    assert isinstance(after, Denial)  # anna's consent ended with the sale: carla's data stays

    carla = await kit.token("carla")
    status, copy, _ = await kit.api("GET", "/v1/me/export", carla)
    assert status == 200
    shown = {t["seq"] for t in copy["transfers"]}
    assert before.audit_seq not in shown and partner.audit_seq not in shown
    annas_grant = "gr-677f38bc93017473"  # her insurer consent, amended by this one
    assert annas_grant not in {g["id"] for g in copy["grants"]}
    status, overview, _ = await kit.api("GET", "/v1/me/grants", carla)
    assert status == 200
    assert "rcp-insurer" not in str(overview)  # anna's consent is not carla's to see

    anna = await kit.token("anna")
    status, annas, _ = await kit.api("GET", "/v1/me/export", anna)
    assert before.audit_seq in {t["seq"] for t in annas["transfers"]}  # still in anna's copy
    assert annas_grant in {g["id"] for g in annas["grants"]}
