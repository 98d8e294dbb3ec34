"""The customer app's JSON API: every grant per vehicle, ending one at once on every
channel, transfers from the audit log, scopes."""

from __future__ import annotations

from base64 import b64encode
from datetime import timedelta
from typing import Any

from oauth_site import log_in
from sqlmodel import select
from worlds import COOPER, COUNTRYMAN, NOW

from broker.domain.contracts import Channel
from broker.gate.release import Denial, Release
from broker.store.tables import NoticeRow, RefreshTokenRow


def grants_by_id(overview: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["id"]: g for v in overview["vehicles"] for g in v["grants"]}


async def test_the_overview_shows_every_grant_per_vehicle_with_what_the_customer_may_do(
    kit: Any,
) -> None:
    token = await kit.token("anna")
    status, body, _ = await kit.api("GET", "/v1/me/grants", token)
    assert status == 200, body
    vehicles = {v["vin"]: v for v in body["vehicles"]}
    # Her current Cooper first, then the Countryman she sold (its past grant only).
    assert [v["vin"] for v in body["vehicles"]] == [COOPER, COUNTRYMAN]
    assert vehicles[COOPER]["current"] and not vehicles[COUNTRYMAN]["current"]
    grants = grants_by_id(body)
    assert set(grants) == {
        "gr-677f38bc93017473",  # her consent
        "gr-47f24d04d1060da9",  # legitimate interest, vehicle-linked
        "gr-8e6171f0a9406b32",  # legitimate interest, anonymised
        "gr-884d49b5e7153545",  # her consent on the vehicle she sold: past
    }  # never bram's grants, nor the dealer's on the Countryman now bram's

    insurer = grants["gr-677f38bc93017473"]
    assert insurer["status"] == "active"
    assert insurer["recipient"]["name"] == "Polder Verzekeringen"
    assert insurer["recipient"]["kind"] == "insurer"
    assert insurer["legal_basis"] == "6(1)(a)" and insurer["activation"] == "consent"
    assert {c["id"] for c in insurer["categories"]} == {
        "vehicle.status", "vehicle.general", "vehicle.position"
    }  # fmt: skip
    assert insurer["location_precision"] == "coarse"
    assert insurer["protection"] == "identified"
    assert insurer["destinations"] == [
        {"country": "NL", "mechanism": "eea", "reference": None, "allowed": True}
    ]
    assert insurer["since"] == "2026-01-15T09:00:00Z"
    assert insurer["rights"] == {"allowed": ["withdraw"], "note": "withdraw"}
    assert insurer["purpose"]["description"]["nl"]

    partner = grants["gr-47f24d04d1060da9"]
    assert partner["protection"] == "pseudonymised"
    assert partner["rights"] == {"allowed": ["object"], "note": "object"}
    india = next(d for d in partner["destinations"] if d["country"] == "IN")
    assert india["mechanism"] == "scc" and india["reference"] == "SCC-DEMO-2025-017"
    assert grants["gr-884d49b5e7153545"]["status"] == "past"
    assert grants["gr-884d49b5e7153545"]["rights"]["allowed"] == []


async def test_legal_obligation_is_shown_without_an_objection_and_the_owner_may_object_to_fleet(
    kit: Any,
) -> None:
    token = await kit.token("carla")
    _, body, _ = await kit.api("GET", "/v1/me/grants", token)
    grants = grants_by_id(body)
    assert grants["gr-9b2496dba961e34e"]["rights"] == {"allowed": [], "note": "legal_obligation"}
    assert grants["gr-9b2496dba961e34e"]["legal_basis"] == "6(1)(c)"
    # The fleet clearance rests on the operator's legitimate interest: the owner may object.
    fleet = grants["gr-81ac3a06b35dc15c"]
    assert fleet["legal_basis"] == "6(1)(f)" and fleet["activation"] == "fleet_clearance"
    assert fleet["rights"] == {"allowed": ["object"], "note": "object"}
    status, _, _ = await kit.api("POST", "/v1/me/grants/gr-81ac3a06b35dc15c/withdrawal", token)
    assert status == 409  # not consent: nothing to withdraw
    status, objected, _ = await kit.api(
        "POST", "/v1/me/grants/gr-81ac3a06b35dc15c/objection", token
    )
    assert status == 200 and objected["state"] == "objected"
    assert objected["rights"] == {"allowed": [], "note": "ended"}
    status, _, _ = await kit.api("POST", "/v1/me/grants/gr-81ac3a06b35dc15c/objection", token)
    assert status == 409
    status, problem, _ = await kit.api("POST", "/v1/me/grants/gr-9b2496dba961e34e/objection", token)
    assert status == 409
    assert problem["type"].endswith(":transition_refused")
    assert "legal obligation" in problem["detail"]
    status, _, _ = await kit.api("POST", "/v1/me/grants/gr-9b2496dba961e34e/withdrawal", token)
    assert status == 409
    _, again, _ = await kit.api("GET", "/v1/me/grants/gr-9b2496dba961e34e", token)
    assert again["state"] == "active"


async def test_withdrawal_ends_the_grant_on_every_channel_at_once(kit: Any) -> None:
    insurer = await kit.insurer_tokens()  # anna consents: a new grant, the token relies on it
    recipient = {"Authorization": f"Bearer {insurer['access_token']}"}
    before = await kit.site.browser.get("/v1/recipient/grants", headers=recipient)
    assert before.status == 200
    [grant_id] = [g["grant"] for g in (await before.json())["grants"]]

    token = await kit.token("anna")
    status, body, _ = await kit.api("POST", f"/v1/me/grants/{grant_id}/withdrawal", token)
    assert status == 200, body
    assert body["state"] == "revoked" and body["status"] == "past"
    assert body["rights"]["allowed"] == []

    # The insurer's next call with its existing token is refused ...
    after = await kit.site.browser.get("/v1/recipient/grants", headers=recipient)
    assert after.status == 401
    # ... its refresh token no longer works ...
    refreshed = await kit.site.browser.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": insurer["refresh_token"]},
        headers={
            "Authorization": "Basic " + b64encode(b"insurer-demo:demo-secret-insurer-demo").decode()
        },
    )
    assert refreshed.status == 400
    assert (await refreshed.json())["error"] == "invalid_grant"
    # ... the gate refuses a release under it, and the insurer got its notice.
    broker = kit.site.broker

    def notices(session: Any) -> list[NoticeRow]:
        return list(session.exec(select(NoticeRow).where(NoticeRow.grant_id == grant_id)))

    [notice] = broker.database.run_sync(notices)
    assert notice.recipient_id == "rcp-insurer" and notice.kind == "grant_ended"
    refresh_rows = broker.database.run_sync(
        lambda s: [(r.grant_ids, r.revoked_at) for r in s.exec(select(RefreshTokenRow))]
    )
    assert [at is not None for ids, at in refresh_rows if grant_id in ids] == [True]
    # A second withdrawal is refused: the grant has ended.
    status, _, _ = await kit.api("POST", f"/v1/me/grants/{grant_id}/withdrawal", token)
    assert status == 409


async def test_objection_ends_a_legitimate_interest_grant(kit: Any) -> None:
    token = await kit.token("anna")
    status, body, _ = await kit.api("POST", "/v1/me/grants/gr-47f24d04d1060da9/withdrawal", token)
    assert status == 409  # legitimate interest: objection, not withdrawal
    status, body, _ = await kit.api("POST", "/v1/me/grants/gr-47f24d04d1060da9/objection", token)
    assert status == 200, body
    assert body["state"] == "objected"
    outcome = await kit.release(
        recipient="rcp-devpartner",
        contract="development-partner",
        purpose="product-quality",
        channel=Channel.DATASPACE,
        categories=frozenset({"vehicle.status"}),
    )
    assert isinstance(outcome, Denial)


async def test_a_secondary_driver_cannot_object_for_the_owner(kit: Any) -> None:
    token = await kit.token("bram")  # drives anna's Cooper
    _, body, _ = await kit.api("GET", "/v1/me/grants", token)
    grants = grants_by_id(body)
    assert grants["gr-47f24d04d1060da9"]["rights"] == {"allowed": [], "note": "owner_only"}
    assert "gr-677f38bc93017473" not in grants  # anna's own consent is hers alone
    status, _, _ = await kit.api("POST", "/v1/me/grants/gr-47f24d04d1060da9/objection", token)
    assert status == 409


async def test_transfers_come_from_the_audit_log_newest_first_a_page_at_a_time(
    kit: Any,
) -> None:
    kit.ingest(
        [
            kit.record(f"s-{n}", COOPER, "vehicle.status", NOW - timedelta(hours=n), kit.STATUS)
            for n in range(1, 4)
        ]
    )
    releases = []
    for _ in range(3):
        outcome = await kit.release(categories=frozenset({"vehicle.status"}))
        assert isinstance(outcome, Release)
        releases.append(outcome)
        kit.site.clock.advance(timedelta(minutes=1))
    token = await kit.token("anna")
    status, page1, _ = await kit.api(
        "GET", "/v1/me/grants/gr-677f38bc93017473/transfers?per_page=2", token
    )
    assert status == 200, page1
    assert (page1["total"], page1["pages"], page1["page"]) == (3, 2, 1)
    assert [t["seq"] for t in page1["items"]] == [releases[2].audit_seq, releases[1].audit_seq]
    first = page1["items"][0]
    assert first["categories"] == ["vehicle.status"] and first["record_count"] == 3
    assert first["channel"] == "pull" and first["protection"] == "identified"
    assert first["destination_countries"] == ["NL"] and first["transfer_mechanisms"] == ["eea"]
    assert first["recipient"] == {"id": "rcp-insurer", "name": "Polder Verzekeringen"}
    _, page2, _ = await kit.api(
        "GET", "/v1/me/grants/gr-677f38bc93017473/transfers?per_page=2&page=2", token
    )
    assert [t["seq"] for t in page2["items"]] == [releases[0].audit_seq]
    _, grant, _ = await kit.api("GET", "/v1/me/grants/gr-677f38bc93017473", token)
    assert grant["transfer_count"] == 3
    assert grant["last_transfer"] == first["at"]
    for page in ("zero", "0", "%C2%B2"):  # "²" is a digit to str.isdigit, not to int()
        path = f"/v1/me/grants/gr-677f38bc93017473/transfers?page={page}"
        status, _, _ = await kit.api("GET", path, token)
        assert status == 400, page
    # The page's transfer table names the safeguard in words, not as a code.
    await log_in(kit.site, "anna")
    html = await (await kit.site.browser.get("/grants/gr-677f38bc93017473?lang=en")).text()
    table = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    assert table.count("within the European Economic Area") == 3  # one per transfer
    assert "eea" not in table


async def test_each_operation_needs_its_scope(kit: Any) -> None:
    token = await kit.token("anna", "grants:read")
    assert (await kit.api("GET", "/v1/me/grants", token))[0] == 200
    status, _, response = await kit.api(
        "POST", "/v1/me/grants/gr-677f38bc93017473/withdrawal", token
    )
    assert status == 403
    assert "insufficient_scope" in response.headers.get("WWW-Authenticate", "")
    assert (await kit.api("GET", "/v1/me/export", token))[0] == 403
    body = {"collection": False, "sharing": False}
    assert (await kit.api("PUT", f"/v1/me/vehicles/{COOPER}/location", token, json=body))[0] == 403
    _, again, _ = await kit.api("GET", "/v1/me/grants/gr-677f38bc93017473", token)
    assert again["state"] == "active"
    assert (await kit.api("GET", "/v1/me/grants", "not-a-token"))[0] == 401
