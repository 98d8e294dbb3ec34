"""End to end over real HTTP: subscribe, ingest, deliver; every message verified by the
``standardwebhooks`` library unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import standardwebhooks
from ingest_app import App
from webhooks.support import FLEET, Receiver, status_record, subscribe
from worlds import CLUBMAN, NOW

from broker.webhooks import signing
from broker.webhooks.worker import DeliveryWorker


async def test_deliveries_are_signed_and_verify_with_the_reference_library(
    app: App, receiver: Receiver, worker: DeliveryWorker
) -> None:
    sub = await subscribe(app, receiver.url, ["data.vehicle.status", "grant.ended"])
    assert sub["secret"].startswith("whsec_")
    await app.broker.ingest.ingest(
        [status_record("r-1", NOW - timedelta(hours=1), 100.0)], source="t"
    )
    await worker.drain()

    hook = standardwebhooks.Webhook(sub["secret"])
    kinds = [hook.verify(body, headers)["type"] for body, headers in receiver.received]
    assert kinds == ["ping", "data.vehicle.status"]
    data = json.loads(receiver.received[1][0])["data"]
    assert [r["data"]["mileage_km"] for r in data["records"]] == [100.0]
    assert data["vehicles"] == [CLUBMAN]  # the fleet contract identifies vehicles by VIN

    body, headers = receiver.received[1]
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        hook.verify(body.replace(b"100.0", b"999.0"), headers)  # tampered body
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(signing.new_secret()).verify(body, headers)  # another secret
    stale = int((datetime.now(UTC) - timedelta(minutes=10)).timestamp())
    old = signing.headers([sub["secret"]], headers["webhook-id"], stale, body)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        hook.verify(body, old)  # expired: outside the library's 5-minute tolerance


async def test_a_rotated_secret_signs_alongside_the_old_one_during_the_overlap(
    app: App, receiver: Receiver, worker: DeliveryWorker
) -> None:
    sub = await subscribe(app, receiver.url, ["data.vehicle.status"])
    token = await app.token(*FLEET)
    rotated = await app.client.post(
        f"/v1/recipient/webhooks/{sub['id']}/secret", headers={"Authorization": token}
    )
    new = (await rotated.json())["secret"]
    assert rotated.status == 200 and new != sub["secret"]
    await worker.drain()  # the ping, signed by both
    body, headers = receiver.received[-1]
    assert len(headers["webhook-signature"].split(" ")) == 2
    standardwebhooks.Webhook(sub["secret"]).verify(body, headers)
    standardwebhooks.Webhook(new).verify(body, headers)

    app.clock.advance(timedelta(hours=25))  # the overlap (24 h) is over
    await app.broker.ingest.ingest([status_record("r-2", app.clock.now(), 5.0)], source="t")
    await worker.drain()
    body, headers = receiver.received[-1]
    standardwebhooks.Webhook(new).verify(body, headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(sub["secret"]).verify(body, headers)


async def test_ending_the_grant_drops_queued_data_and_sends_the_notice(
    app: App, receiver: Receiver, worker: DeliveryWorker
) -> None:
    sub = await subscribe(app, receiver.url, ["data.vehicle.status", "grant.ended"])
    await worker.drain()  # the ping
    for n in range(3):
        at = NOW - timedelta(minutes=30 - n)
        await app.broker.ingest.ingest([status_record(f"q-{n}", at, float(n))], source="t")
    broker = app.broker
    from broker.domain.grants import GrantAction

    await broker.database.write(
        lambda s: broker.grants.transition(
            s, "gr-81ac3a06b35dc15c", GrantAction.TERMINATE, at=broker.clock.now(), reason="test"
        )
    )
    await worker.drain()
    hook = standardwebhooks.Webhook(sub["secret"])
    sent = [hook.verify(body, headers) for body, headers in receiver.received[1:]]
    assert [m["type"] for m in sent] == ["grant.ended"]
    assert sent[0]["data"]["grant"] == "gr-81ac3a06b35dc15c" and sent[0]["data"]["erase"] is True
    from broker.store import webhooks as store

    rows = await broker.database.read(lambda s: store.messages(s, subscription_id=sub["id"]))
    dropped = [r for r in rows if r.event_type == "data.vehicle.status"]
    assert [r.state for r in dropped] == ["dropped"] * 3
    assert all("grant" in r.last_error for r in dropped)


async def test_fleet_data_is_released_only_for_the_time_in_the_fleet(
    app: App, receiver: Receiver, worker: DeliveryWorker
) -> None:
    """The clearance starts 2026-01-01: data recorded before it never leaves, data after does."""
    sub = await subscribe(app, receiver.url, ["data.vehicle.status"])
    before = datetime(2025, 12, 31, 23, 0, tzinfo=UTC)
    inside = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    await app.broker.ingest.ingest(
        [status_record("old", before, 1.0), status_record("new", inside, 2.0)], source="t"
    )
    await worker.drain()
    hook = standardwebhooks.Webhook(sub["secret"])
    data = [hook.verify(b, h)["data"] for b, h in receiver.received[1:]]
    assert [r["data"]["mileage_km"] for d in data for r in d["records"]] == [2.0]
    assert [w["code"] for d in data for w in d["withheld"]] == ["recorded_outside_grant"]
    assert FLEET
