"""The recipient pull API over real HTTP, with authlib's client (examples/insurer_pull.py):
DPoP-bound tokens, paging, object-level authorization, refusals, revocation, notices."""

from __future__ import annotations

from contextlib import aclosing
from datetime import timedelta
from typing import Any

import pytest
from oauth_site import Site
from pull_site import client_token, code_flow, dpop_key, drive, example, insurer_client
from worlds import CLUBMAN, COOPER, COUNTRYMAN, NOW

from broker.clock import format_instant
from broker.domain.grants import GrantAction
from broker.oauth.dpop import DpopPolicy
from broker.oauth.jose import sign_dpop_proof
from broker.store import audit as audit_store

UNTIL = format_instant(NOW + timedelta(hours=6))
SINCE = format_instant(NOW)


def records_url(site: Site, vin: str) -> str:
    return f"{site.base}/v1/recipient/vehicles/{vin}/records"


async def consented(site: Site, **choices: str) -> tuple[Any, dict[str, Any]]:
    """anna consents now (NOW); 5 hours of driving are then stored after it."""
    client = insurer_client(site)
    token = await code_flow(site, client, **choices)
    site.clock.set(NOW + timedelta(hours=6))  # the records must not be in the future
    drive(site, COOPER, NOW + timedelta(minutes=1), 300)
    site.clock.set(NOW + timedelta(seconds=10))  # back to while the token is fresh
    return client, token


def audit_entries(site: Site, kind: str | None = None) -> list[Any]:
    entries = site.broker.database.run_sync(lambda s: audit_store.read(s, start=0, limit=100_000))
    return [e for e in entries if kind is None or e.kind == kind]


async def test_paging_through_a_large_range_returns_every_record_once_in_order(
    site: Site,
) -> None:
    client, token = await consented(site)
    async with aclosing(client):
        assert token["token_type"] == "DPoP"  # the contract asks for sender-constrained tokens
        vehicles = (await client.get(f"{site.base}/v1/recipient/vehicles")).json()["vehicles"]
        assert [v["vehicle"] for v in vehicles] == [COOPER]
        assert vehicles[0]["sender_constraint"] == "dpop"
        before = len(audit_entries(site, "release"))
        pages = 0
        seen: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"since": SINCE, "until": UNTIL, "limit": "50"}
            if cursor:
                params["cursor"] = cursor
            response = await client.get(records_url(site, COOPER), params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            pages += 1
            seen += page["records"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert 'rel="next"' in response.headers["Link"]
    assert len(seen) == 600 and pages == 12
    mileages = [r["data"]["mileage_km"] for r in seen if r["category"] == "vehicle.status"]
    assert sorted(mileages) == [1000.0 + m for m in range(300)]  # every record, once
    times = [r["recorded_at"] for r in seen]
    assert times == sorted(times)  # in order
    releases = audit_entries(site, "release")[before:]
    assert len(releases) == pages  # one audit entry per response
    assert sum(e.record_count for e in releases) == 600


async def test_the_example_pulls_every_page(site: Site) -> None:
    client, _token = await consented(site)
    async with aclosing(client):
        found = [
            r
            async for r in example.pull_all(
                client, site.base, COOPER, since=SINCE, until=UNTIL,
                categories=["vehicle.status"], limit=70,
            )
        ]  # fmt: skip
    assert len(found) == 300 and {r["category"] for r in found} == {"vehicle.status"}


async def test_other_vehicles_are_answered_as_if_they_did_not_exist(site: Site) -> None:
    client, _token = await consented(site)
    async with aclosing(client):
        answers = []
        # carla's vehicle, the vehicle anna sold (a grant of hers once covered it), a made-up VIN
        for vin in (CLUBMAN, COUNTRYMAN, "WMW00000000000000"):
            response = await client.get(
                records_url(site, vin), params={"since": SINCE, "until": UNTIL}
            )
            body = response.json()
            answers.append((response.status_code, body["type"], body["detail"]))
    assert len(set(answers)) == 1
    assert answers[0][0] == 404 and answers[0][1].endswith("vehicle_not_found")


async def test_an_id_from_another_customers_token_is_refused(site: Site) -> None:
    client, _token = await consented(site)
    # bram's vehicle (which his own grant to the insurer covers) through anna's token: not found.
    async with aclosing(client):
        response = await client.get(
            records_url(site, COUNTRYMAN), params={"since": SINCE, "until": UNTIL}
        )
        assert response.status_code == 404


async def test_refusals_name_the_rule(site: Site) -> None:
    client, _token = await consented(site, category="vehicle.general")  # position unticked
    async with aclosing(client):
        url = records_url(site, COOPER)
        # a category the grant does not cover: the token's scope was narrowed to the grant
        response = await client.get(
            url, params={"category": "vehicle.position", "since": SINCE, "until": UNTIL}
        )
        assert response.status_code == 403
        assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
        # a category not in the contract
        response = await client.get(
            url, params={"category": "vehicle.sensor", "since": SINCE, "until": UNTIL}
        )
        assert response.status_code == 403, response.text
        assert [r["code"] for r in response.json()["reasons"]] == ["category_not_in_contract"]
        # data from before the grant
        early = format_instant(NOW - timedelta(days=90))  # before anna's grant began
        response = await client.get(
            url, params={"category": "vehicle.status", "since": early, "until": UNTIL}
        )
        assert response.status_code == 403
        assert [r["code"] for r in response.json()["reasons"]] == ["before_grant"]
        # malformed parameters
        response = await client.get(url, params={"since": "yesterday"})
        assert response.status_code == 400
        assert response.headers["Content-Type"].startswith("application/problem+json")
        response = await client.get(url, params={"since": SINCE, "cursor": "not-a-cursor"})
        assert response.status_code == 400
        for limit in ("0", "abc", "\u00b2"):  # "²" is a digit to str.isdigit, not to int()
            response = await client.get(url, params={"since": SINCE, "limit": limit})
            assert response.status_code == 400, (limit, response.text)


async def test_the_contracts_rate_limit_answers_429_with_retry_after(site: Site) -> None:
    client, _token = await consented(site)
    async with aclosing(client):
        statuses = []
        for _ in range(61):  # insurer-ubi allows 60 requests per minute
            response = await client.get(
                records_url(site, COOPER), params={"since": SINCE, "until": UNTIL, "limit": "1"}
            )
            statuses.append(response.status_code)
        assert statuses[:60] == [200] * 60 and statuses[60] == 429
        retry_after = int(response.headers["Retry-After"])
        assert 0 < retry_after <= 60
        site.clock.advance(timedelta(seconds=retry_after))
        response = await client.get(
            records_url(site, COOPER), params={"since": SINCE, "until": UNTIL}
        )
        assert response.status_code == 200


async def test_revocation_in_the_middle_of_a_session_refuses_the_next_pull(site: Site) -> None:
    client, _token = await consented(site)
    async with aclosing(client):
        first = await client.get(
            records_url(site, COOPER), params={"since": SINCE, "until": UNTIL, "limit": "5"}
        )
        assert first.status_code == 200
        grant_id = (await client.get(f"{site.base}/v1/recipient/vehicles")).json()["vehicles"][0][
            "grant"
        ]
        site.broker.database.run_sync(
            lambda s: site.broker.grants.transition(
                s, grant_id, GrantAction.WITHDRAW, at=site.clock.now(), reason="test"
            ),
            write=True,
        )
        nxt = await client.get(
            records_url(site, COOPER),
            params={
                "since": SINCE,
                "until": UNTIL,
                "limit": "5",
                "cursor": first.json()["next_cursor"],
            },
        )
    assert nxt.status_code == 401
    assert 'error="invalid_token"' in nxt.headers["WWW-Authenticate"]

    # The insurer's notices feed (its own client-credentials token) says: erase.
    bearer = await client_token(site, "insurer-demo", "vehicle.status:read")
    headers = {"Authorization": f"Bearer {bearer}"}
    feed = await (await site.browser.get("/v1/recipient/notices", headers=headers)).json()
    [notice] = [n for n in feed["notices"] if n["grant"] == grant_id]
    assert notice["erase"] is True and notice["vehicle"] == COOPER
    ack = await site.browser.post(
        f"/v1/recipient/notices/{notice['id']}/acknowledgement", headers=headers
    )
    assert ack.status == 200 and (await ack.json())["acknowledged_at"]
    again = await site.browser.post(
        f"/v1/recipient/notices/{notice['id']}/acknowledgement", headers=headers
    )
    assert again.status == 200  # idempotent: audited once
    acks = [e for e in audit_entries(site, "notice_ack") if grant_id in e.grant_ids]
    assert len(acks) == 1 and "insurer-demo" in acks[0].reasons[0]
    pending = await (await site.browser.get("/v1/recipient/notices", headers=headers)).json()
    assert notice["id"] not in [n["id"] for n in pending["notices"]]
    # Another recipient cannot see or acknowledge it.
    other = await client_token(site, "dealer-demo", "vehicle.status:read")
    response = await site.browser.post(
        f"/v1/recipient/notices/{notice['id']}/acknowledgement",
        headers={"Authorization": f"Bearer {other}"},
    )
    assert response.status == 404


# -- DPoP ---------------------------------------------------------------------------------------


async def test_a_dpop_contract_refuses_bearer_tokens(site: Site) -> None:
    bearer = await client_token(site, "insurer-demo", "vehicle.status:read")
    response = await site.browser.get(
        f"/v1/recipient/vehicles/{COOPER}/records",
        params={"since": SINCE, "until": UNTIL},
        headers={"Authorization": f"Bearer {bearer}"},
    )
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("DPoP ")
    assert "requires DPoP" in (await response.json())["detail"]


async def test_dpop_proofs_missing_replayed_misdirected_or_foreign_are_refused(
    site: Site, other_key: Any
) -> None:
    client, token = await consented(site)
    await client.aclose()
    access = token["access_token"]
    url = records_url(site, COOPER)
    key = client.dpop_key.private_key

    async def call(proof: str | None, method: str = "GET") -> Any:
        headers = {"Authorization": f"DPoP {access}"}
        if proof is not None:
            headers["DPoP"] = proof
        return await site.browser.request(
            method,
            f"/v1/recipient/vehicles/{COOPER}/records?since={SINCE}&until={UNTIL}",
            headers=headers,
        )

    def proof(signing_key: Any = key, method: str = "GET", target: str = url) -> str:
        return sign_dpop_proof(
            signing_key, method=method, url=target, now=site.clock.now(), access_token=access
        )

    good = proof()
    assert (await call(good)).status == 200
    refused = {
        "no proof": await call(None),
        "replayed": await call(good),
        "another URL": await call(proof(target=f"{site.base}/v1/recipient/vehicles")),
        "another method": await call(proof(method="POST")),
        "another key": await call(proof(signing_key=other_key)),
    }
    for what, response in refused.items():
        assert response.status == 401, what
        assert response.headers["WWW-Authenticate"].startswith("DPoP "), what
        assert 'error="invalid_dpop_proof"' in response.headers["WWW-Authenticate"], what
    # Sent as a bearer token, the bound token is refused too.
    response = await site.browser.get(
        f"/v1/recipient/vehicles/{COOPER}/records?since={SINCE}&until={UNTIL}",
        headers={"Authorization": f"Bearer {access}", "DPoP": proof()},
    )
    assert response.status == 401


async def test_a_replayed_proof_is_refused_by_another_process(
    site: Site, database_url: str
) -> None:
    """The jti is remembered in the database: a second broker on the same database refuses it."""
    from broker.oauth.dpop import DpopRefused, derive_nonce_key

    policy = DpopPolicy(nonce_key=derive_nonce_key(b"k" * 32))
    key = dpop_key(site).private_key
    proof = sign_dpop_proof(key, method="GET", url="https://x.example/a", now=site.clock.now())
    database = site.broker.database
    database.run_sync(
        lambda s: policy.check(
            s, proof, method="GET", url="https://x.example/a", now=site.clock.now()
        ),
        write=True,
    )
    from broker.store.database import Database

    other = Database(database_url)
    try:
        with pytest.raises(DpopRefused, match="already used"):
            other.run_sync(
                lambda s: policy.check(
                    s, proof, method="GET", url="https://x.example/a", now=site.clock.now()
                ),
                write=True,
            )
    finally:
        other.close()


async def test_server_nonces_are_asked_for_and_the_example_client_follows(site: Site) -> None:
    client, _token = await consented(site)
    oauth = site.broker.oauth
    oauth.dpop = DpopPolicy(nonce_key=oauth.dpop.nonce_key, nonce_required=True)
    async with aclosing(client):
        client.dpop_key.nonce = None
        response = await client.get(
            records_url(site, COOPER), params={"since": SINCE, "until": UNTIL}
        )
        assert response.status_code == 200  # after one use_dpop_nonce round trip
        assert client.dpop_key.nonce == oauth.dpop.nonce(site.clock.now())
        # A token request without the nonce is answered use_dpop_nonce; the client retries.
        client.dpop_key.nonce = None
        token = await client.refresh_token(
            f"{site.base}/oauth/token", refresh_token=client.token["refresh_token"]
        )
        assert token["token_type"] == "DPoP"
