"""The subscriptions API: validation with JSON paths, nothing stored on error, isolation."""

from __future__ import annotations

from ingest_app import App
from webhooks.support import FLEET, Receiver, subscribe

from broker.store import webhooks as store

BASE = "/v1/recipient/webhooks"


async def stored(app: App) -> int:
    rows = await app.broker.database.read(lambda s: store.subscriptions(s, "rcp-fleet"))
    return len(rows)


async def test_invalid_bodies_list_each_error_and_store_nothing(app: App) -> None:
    token = await app.token(*FLEET)
    bad = {"url": "ftp://x", "event_types": ["data.vehicle.status", "nope"], "extra": 1}
    answer = await app.client.post(BASE, json=bad, headers={"Authorization": token})
    body = await answer.json()
    assert answer.status == 422 and answer.content_type == "application/problem+json"
    assert {e["path"] for e in body["errors"]} == {"$", "$.url", "$.event_types[1]"}
    unknown = {"url": "https://a.example/", "event_types": ["data.vehicle.nothing"]}
    answer = await app.client.post(BASE, json=unknown, headers={"Authorization": token})
    assert answer.status == 422
    assert (await answer.json())["errors"][0]["path"] == "$.event_types[0]"
    for raw, status in [(b"{not json", 400), (b"[" * 20_000, 413)]:
        answer = await app.client.post(
            BASE, data=raw, headers={"Authorization": token, "Content-Type": "application/json"}
        )
        assert answer.status == status
    private = {"url": "https://10.0.0.1/hook", "event_types": ["ping"]}
    answer = await app.client.post(BASE, json=private, headers={"Authorization": token})
    assert answer.status == 422 and "forbidden address" in (await answer.json())["detail"]
    assert await stored(app) == 0


async def test_tokens_other_than_a_webhook_recipients_are_refused(app: App) -> None:
    assert (await app.client.get(BASE)).status == 401
    answer = await app.client.get(BASE, headers={"Authorization": "Bearer not-a-token"})
    assert answer.status == 401
    assert (await app.client.get(BASE, headers={"Authorization": app.backend})).status == 401
    insurer = await app.token("insurer-demo", "demo-secret-insurer-demo")
    answer = await app.client.post(
        BASE, json={"url": "https://a.example/", "event_types": ["ping"]},
        headers={"Authorization": insurer},
    )  # fmt: skip
    assert answer.status == 403  # the insurer's contract has no webhook channel
    assert await stored(app) == 0


async def test_another_recipients_subscription_is_not_found(app: App, receiver: Receiver) -> None:
    sub = await subscribe(app, receiver.url, ["ping"])
    insurer = await app.token("insurer-demo", "demo-secret-insurer-demo")
    for method, path in [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/secret")]:
        answer = await app.client.request(
            method, f"{BASE}/{sub['id']}{path}", json={} if path else {"description": "x"},
            headers={"Authorization": insurer},
        )  # fmt: skip
        assert answer.status == 404, method
        unknown = await app.client.request(
            method, f"{BASE}/whk_0000000000000000{path}", json={} if path else {"description": "x"},
            headers={"Authorization": insurer},
        )  # fmt: skip
        assert (await unknown.json())["detail"] == (await answer.json())["detail"]
    fleet = await app.token(*FLEET)
    listing = await app.client.get(BASE, headers={"Authorization": fleet})
    assert [s["id"] for s in (await listing.json())["webhooks"]] == [sub["id"]]
    assert "secret" not in (await listing.json())["webhooks"][0]
    deleted = await app.client.delete(f"{BASE}/{sub['id']}", headers={"Authorization": fleet})
    assert deleted.status == 204
    gone = await app.client.get(f"{BASE}/{sub['id']}", headers={"Authorization": fleet})
    assert gone.status == 404
