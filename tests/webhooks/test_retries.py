"""Retries on the back-off schedule, order per vehicle, 410 Gone, and a hanging endpoint."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import standardwebhooks
from aiohttp import web
from ingest_app import App
from webhooks.support import Receiver, status_record, subscribe
from worlds import NOW

from broker.store import webhooks as store
from broker.webhooks.worker import DeliveryWorker


async def test_a_receiver_failing_then_recovering_gets_everything_in_order(
    app: App, receiver: Receiver, worker: DeliveryWorker
) -> None:
    sub = await subscribe(app, receiver.url, ["data.vehicle.status"])
    await worker.drain()  # the ping
    receiver.answers = [500, 503, 500, 502]  # the next four requests fail
    for n in range(5):
        at = NOW - timedelta(minutes=50 - n)
        await app.broker.ingest.ingest([status_record(f"o-{n}", at, float(n))], source="t")
    for _ in range(12):  # move time instead of sleeping: past each back-off step
        await worker.drain()
        app.clock.advance(timedelta(hours=11))
    hook = standardwebhooks.Webhook(sub["secret"])
    seen: dict[str, Any] = {}
    for body, headers in receiver.received:
        seen.setdefault(headers["webhook-id"], hook.verify(body, headers))  # dedupe by id
    data = [m for m in seen.values() if m["type"] == "data.vehicle.status"]
    mileages = [r["data"]["mileage_km"] for m in data for r in m["data"]["records"]]
    assert mileages == [0.0, 1.0, 2.0, 3.0, 4.0]  # each once, in recorded order
    retried = {h["webhook-id"] for _, h in receiver.received[1:6]}
    assert len(retried) == 1  # the same message (same webhook-id) was retried; none overtook it
    rows = await app.broker.database.read(lambda s: store.messages(s, subscription_id=sub["id"]))
    assert {r.state for r in rows} == {"delivered"}


async def test_retry_after_is_honoured(
    app: App, receiver: Receiver, worker: DeliveryWorker, aiohttp_server: Any
) -> None:
    calls: list[str] = []

    async def busy(request: web.Request) -> web.Response:
        calls.append(request.headers["webhook-id"])
        if len(calls) == 1:
            return web.Response(status=429, headers={"Retry-After": "3600"})
        return web.Response(status=200)

    server_app = web.Application()
    server_app.router.add_post("/hook", busy)
    server = await aiohttp_server(server_app, host="127.0.0.1")
    await subscribe(app, str(server.make_url("/hook")), ["data.vehicle.status"])
    await worker.drain()
    app.clock.advance(timedelta(minutes=30))  # past the schedule's 5 s, not the hour asked for
    await worker.drain()
    assert len(calls) == 1
    app.clock.advance(timedelta(minutes=40))
    await worker.drain()
    assert calls == [calls[0], calls[0]]


async def test_410_gone_ends_the_subscription(
    app: App, receiver: Receiver, worker: DeliveryWorker
) -> None:
    sub = await subscribe(app, receiver.url, ["data.vehicle.status"])
    receiver.answers = [410]
    await worker.drain()
    await app.broker.ingest.ingest([status_record("g-1", NOW, 1.0)], source="t")
    await worker.drain()
    assert len(receiver.received) == 1  # nothing after the 410
    token = await app.token("fleet-demo", "demo-secret-fleet-demo")
    got = await app.client.get(
        f"/v1/recipient/webhooks/{sub['id']}", headers={"Authorization": token}
    )
    assert (await got.json())["status"] == "disabled"


async def test_an_endpoint_failing_through_the_schedule_is_disabled_and_told(
    app: App, receiver: Receiver, worker: DeliveryWorker
) -> None:
    sub = await subscribe(app, receiver.url, ["data.vehicle.status"])
    receiver.answers = [500] * 20
    for _ in range(10):
        await worker.drain()
        app.clock.advance(timedelta(hours=11))
    assert len(receiver.received) == 8  # the whole schedule, then no more
    rows = await app.broker.database.read(lambda s: store.messages(s, subscription_id=sub["id"]))
    assert [r.state for r in rows] == ["dead"]
    from broker.store import audit as audit_store

    entries = await app.broker.database.read(lambda s: audit_store.read(s, limit=10_000))
    assert any(e.details.get("notice") == "webhook_disabled" for e in entries)
    # the dead letter is replayed once the endpoint is enabled again
    token = await app.token("fleet-demo", "demo-secret-fleet-demo")
    await app.client.patch(
        f"/v1/recipient/webhooks/{sub['id']}", json={"status": "active"},
        headers={"Authorization": token},
    )  # fmt: skip
    count = await app.broker.database.write(lambda s: store.replay(s, now=app.clock.now()))
    await worker.drain()
    assert count == 1 and len(receiver.received) == 9


async def test_a_hanging_receiver_does_not_hold_up_the_others(
    app: App, receiver: Receiver, worker: DeliveryWorker, aiohttp_server: Any
) -> None:
    release = asyncio.Event()
    hanging: list[str] = []

    async def hang(request: web.Request) -> web.Response:
        hanging.append(request.headers["webhook-id"])
        await release.wait()
        return web.Response(status=204)

    slow_app = web.Application()
    slow_app.router.add_post("/hook", hang)
    slow = await aiohttp_server(slow_app, host="127.0.0.1")
    await subscribe(app, str(slow.make_url("/hook")), ["data.vehicle.status"])
    await subscribe(app, receiver.url, ["data.vehicle.status"])
    for n in range(5):
        at = NOW - timedelta(minutes=20 - n)
        await app.broker.ingest.ingest([status_record(f"h-{n}", at, float(n))], source="t")
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        for _ in range(200):
            if len(receiver.received) >= 6:
                break
            await asyncio.sleep(0.05)
        assert len(receiver.received) == 6  # its ping and the five data messages
        # its requests are still open: the ping and the vehicle's first message; the
        # vehicle's later messages wait behind that one (order per vehicle)
        assert len(hanging) == 2 and not release.is_set()
    finally:
        release.set()
        stop.set()
        await running
