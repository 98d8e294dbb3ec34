"""``broker bench webhooks``: webhook messages/s through a delivery worker, next to a baseline.

The outbox holds data messages for one fleet subscription, spread over many
vehicles (one ordering chain each); one :class:`DeliveryWorker` drains it into
a receiver on 127.0.0.1 that answers 204, each message asking the gate at send
time (release and audit entry), signed, sent and recorded. The baseline is the
same number of signed POSTs of the same body to the same receiver with the same
concurrency from a bare aiohttp client, no database, in the same run and event
loop. Only the ratio is comparable between machines.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
from aiohttp import web
from sqlmodel import Session

from broker.bench import scratch_database
from broker.clock import Clock, ManualClock
from broker.documents import DocumentLibrary
from broker.gate.gate import Gate
from broker.gate.keyring import Keyring
from broker.gate.revocation import RevocationListeners
from broker.services.grants import GrantService
from broker.services.seed import SeedFile, apply_seed, read_seed
from broker.settings import Settings
from broker.store import webhooks as webhook_store
from broker.store.database import Database
from broker.store.migrate import upgrade
from broker.store.tables import WebhookMessageRow, WebhookSubscriptionRow
from broker.store.telemetry_write import NewRecord, store_records
from broker.transfer.adequacy import AdequacyTable
from broker.vault.vault import Vault
from broker.webhooks import signing
from broker.webhooks.egress import Egress
from broker.webhooks.events import PING
from broker.webhooks.runner import egress_policy, make_worker
from broker.webhooks.secrets import SecretBox

_NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
_OPERATOR = "rcp-fleet"
_CONTRACT = "fleet-operator"
_CATEGORY = "vehicle.status"
_SINCE = "2025-06-01T08:00:00Z"


@dataclass(frozen=True)
class WebhookBenchResult:
    backend: str
    event: str
    messages: int
    vehicles: int
    concurrency: int
    webhook_per_second: float
    plain_per_second: float

    @property
    def ratio(self) -> float:
        return self.webhook_per_second / self.plain_per_second

    def lines(self) -> list[str]:
        return [
            f"backend:             {self.backend}",
            f"messages:            {self.messages} {self.event} ({self.vehicles} vehicles,"
            f" concurrency {self.concurrency})",
            f"webhook messages/s:  {self.webhook_per_second:,.0f}  ("
            + ("" if self.event == PING else "gate release and audit, ")
            + "signed, sent, recorded)",
            f"plain POSTs/s:       {self.plain_per_second:,.0f}"
            "  (signed, same body and receiver, no database)",
            f"ratio webhook/plain: {self.ratio:.2f}",
        ]


@dataclass
class _Parts:
    """What :func:`make_worker` needs (see :class:`broker.webhooks.runner.WorkerParts`)."""

    settings: Settings
    database: Database
    gate: Gate
    clock: Clock
    vault: Vault
    keyring: Keyring


class _Receiver:
    """An endpoint on 127.0.0.1 that reads each request and answers 204."""

    def __init__(self) -> None:
        self.count = 0
        self.body = b""
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        self.body = await request.read()
        self.count += 1
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _fleet_seed(seed: SeedFile, vins: list[str]) -> SeedFile:
    """The demo seed, plus ``vins`` in the fleet operator's fleet under an active grant."""
    document = dict(seed.document)
    document["vehicles"] = [
        *document["vehicles"],
        *(
            {
                "vin": v,
                "model": "Mini Clubman",
                "owners": [{"customer": "cus-carla", "since": _SINCE}],
            }
            for v in vins
        ),
    ]
    document["fleets"] = [
        *document["fleets"],
        *({"operator": _OPERATOR, "vin": v, "since": _SINCE} for v in vins),
    ]
    document["grants"] = [
        *document["grants"],
        *(
            {
                "id": f"gr-bench-{n}",
                "contract": _CONTRACT,
                "contract_version": 1,
                "vin": v,
                "categories": [_CATEGORY, "vehicle.position", "vehicle.maintenance"],
                "state": "active",
                "valid_from": "2026-01-01T00:00:00Z",
            }
            for n, v in enumerate(vins)
        ),
    ]
    return replace(seed, document=document)


def _records(count: int, vins: list[str]) -> list[NewRecord]:
    """``count`` status records, one a minute per vehicle, round robin over ``vins``."""
    return [
        NewRecord(
            f"bench-{n}",
            vins[n % len(vins)],
            _CATEGORY,
            _NOW - timedelta(hours=3) + timedelta(minutes=n // len(vins)),
            {"mileage_km": 1000.0 + n, "battery_voltage_v": 12.5},
        )
        for n in range(count)
    ]


def _subscribe(session: Session, box: SecretBox, url: str, secret: str) -> str:
    sub_id = webhook_store.new_subscription_id()
    webhook_store.add_subscription(
        session,
        WebhookSubscriptionRow(
            id=sub_id,
            recipient_id=_OPERATOR,
            url=url,
            description="bench",
            event_types=["data." + _CATEGORY],
            status=webhook_store.ACTIVE,
            secrets=box.seal(session, sub_id, secret),
            created_at=_NOW,
            updated_at=_NOW,
        ),
    )
    return sub_id


def _messages(sub_id: str, records: list[NewRecord], *, pings: bool) -> list[dict[str, Any]]:
    """One data message per record, in the record's vehicle's chain (as ingest queues them);
    or, with ``pings``, a ping in its place (the delivery machinery without the gate)."""
    if pings:
        return [
            {
                "subscription_id": sub_id,
                "recipient_id": _OPERATOR,
                "event_type": PING,
                "order_key": r.vin,
            }
            for r in records
        ]
    return [
        {
            "subscription_id": sub_id,
            "recipient_id": _OPERATOR,
            "contract_id": _CONTRACT,
            "event_type": "data." + _CATEGORY,
            "order_key": r.vin,
            "vin": r.vin,
            "category": _CATEGORY,
            "since": r.recorded_at,
            "until": r.recorded_at + timedelta(microseconds=1),
            "grant_id": None,
        }
        for r in records
    ]


def _open_count(session: Session) -> int:
    message = WebhookMessageRow.__table__  # type: ignore[attr-defined]
    query = sa.select(sa.func.count()).where(message.c.state.in_(webhook_store.OPEN))
    return int(session.execute(query).scalar_one())


def _delivered(session: Session) -> int:
    message = WebhookMessageRow.__table__  # type: ignore[attr-defined]
    query = sa.select(sa.func.count()).where(message.c.state == webhook_store.DELIVERED)
    return int(session.execute(query).scalar_one())


async def _drain(parts: _Parts, egress: Egress, receiver: _Receiver, count: int) -> float:
    """Run one worker until the outbox has no open message; how many seconds it took."""
    worker = make_worker(parts, egress, name="bench-worker")
    stop = asyncio.Event()
    started = time.perf_counter()
    running = asyncio.create_task(worker.run(stop))
    try:
        polled = started
        while True:
            if running.done():
                running.result()
                raise RuntimeError("the delivery worker stopped early")
            # Polling the outbox costs the broker too: often only once everything arrived.
            now = time.perf_counter()
            if receiver.count >= count or now - polled > 1:
                polled = now
                if not await parts.database.read(_open_count):
                    break
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        await running
    return elapsed


async def _plain(url: str, body: bytes, secret: str, count: int, concurrency: int) -> float:
    """``count`` signed POSTs of ``body`` by a bare client; per second."""
    connector = aiohttp.TCPConnector(limit=200, force_close=True)  # as the egress client
    semaphore = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as client:

        async def one(n: int) -> None:
            async with semaphore:
                timestamp = int(time.time())
                headers = signing.headers([secret], f"msg_plain_{n}", timestamp, body) | {
                    "Content-Type": "application/json"
                }
                async with client.post(url, data=body, headers=headers) as answer:
                    await answer.read()
                    assert answer.status == 204

        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(count)))
        return count / (time.perf_counter() - started)


async def _run(
    url: str, count: int, vehicles: int, concurrency: int, seed_path: Path, *, pings: bool
) -> WebhookBenchResult:
    database = Database(url, pool_size=max(8, min(concurrency, 32)))
    receiver = _Receiver()
    await receiver.start()
    try:
        upgrade(database)
        settings = replace(
            Settings(), webhook_allow_http_loopback=True, webhook_concurrency=concurrency
        )
        library = DocumentLibrary(settings.contracts_dir)
        clock = ManualClock(_NOW)
        vault = Vault(bytes(range(32)), clock)
        vins = [f"WMWBENCH{n:09d}" for n in range(vehicles)]
        seed = _fleet_seed(read_seed(library, seed_path), vins)
        grants = GrantService(RevocationListeners())
        database.run_sync(lambda s: apply_seed(s, seed, grants, vault=vault, now=_NOW), write=True)
        records = _records(count, vins)
        database.run_sync(lambda s: store_records(s, records, received_at=_NOW), write=True)
        secret = signing.new_secret()
        box = SecretBox(vault)
        sub_id = database.run_sync(lambda s: _subscribe(s, box, receiver.url, secret), write=True)
        queued = _messages(sub_id, records, pings=pings)
        database.run_sync(lambda s: webhook_store.enqueue(s, queued, now=_NOW), write=True)

        keyring = Keyring(bytes(32))
        gate = Gate(
            database=database,
            clock=clock,
            adequacy=AdequacyTable.load(settings.contracts_dir / "adequacy.json"),
            keyring=keyring,
            vault=vault,
        )
        parts = _Parts(settings, database, gate, clock, vault, keyring)
        egress = Egress(egress_policy(settings))
        await egress.start()
        try:
            seconds = await _drain(parts, egress, receiver, count)
        finally:
            await egress.close()
            await gate.close()
        delivered = database.run_sync(_delivered)
        if delivered != count or receiver.count != count:
            raise RuntimeError(
                f"the bench's messages must all be delivered once: {delivered} delivered, "
                f"{receiver.count} received of {count}"
            )
        sent = json.loads(receiver.body)
        if not pings and len(sent["data"]["records"]) != 1:
            raise RuntimeError("the bench's data messages must each release their record")
        plain_rate = await _plain(receiver.url, receiver.body, secret, count, concurrency)
        return WebhookBenchResult(
            backend=database.dialect,
            event=PING if pings else "data." + _CATEGORY,
            messages=count,
            vehicles=vehicles,
            concurrency=concurrency,
            webhook_per_second=count / seconds,
            plain_per_second=plain_rate,
        )
    finally:
        await receiver.close()
        database.close()


def bench_webhooks(
    *,
    messages: int,
    vehicles: int,
    concurrency: int,
    postgres_admin_url: str | None,
    seed_path: Path,
    pings: bool = False,
) -> WebhookBenchResult:
    with scratch_database(postgres_admin_url) as url:
        return asyncio.run(_run(url, messages, vehicles, concurrency, seed_path, pings=pings))
