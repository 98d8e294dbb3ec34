"""The delivery worker inside ``broker serve``: on by default, off with ``BROKER_WEBHOOK_WORKER=0``.

A real ``broker serve`` process on the demo seed, used over HTTP as a fleet
operator and the car maker's backend use it; the receiver runs in the test
process on 127.0.0.1 and verifies every delivery with the ``standardwebhooks``
reference library.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import standardwebhooks
from ingest_app import free_port
from processes import broker_env
from webhooks.support import FLEET, Receiver
from worlds import CLUBMAN, ROOT

from broker.clock import format_instant
from broker.store import webhooks as store
from broker.store.database import Database
from broker.store.tables import WebhookMessageRow

#: Safety nets only (nothing asserts on how long anything took).
WAIT = 60.0
BACKEND = ("broker-backend", "demo-secret-broker-backend")


@dataclass
class Served:
    base: str
    process: subprocess.Popen[bytes]
    log_path: Path
    http: aiohttp.ClientSession

    def log(self) -> list[dict[str, Any]]:
        text = self.log_path.read_text(errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def messages(self) -> list[str]:
        return [str(entry.get("msg")) for entry in self.log()]

    async def token(self, client: tuple[str, str], scope: str | None = None) -> str:
        form = {"grant_type": "client_credentials"} | ({"scope": scope} if scope else {})
        basic = base64.b64encode(":".join(client).encode()).decode()
        async with self.http.post(
            f"{self.base}/oauth/token", data=form, headers={"Authorization": f"Basic {basic}"}
        ) as response:
            body = await response.json()
            assert response.status == 200, body
            return f"Bearer {body['access_token']}"

    async def subscribe(self, url: str) -> dict[str, Any]:
        async with self.http.post(
            f"{self.base}/v1/recipient/webhooks",
            json={"url": url, "event_types": ["data.vehicle.status"]},
            headers={"Authorization": await self.token(FLEET)},
        ) as response:
            body: dict[str, Any] = await response.json()
            assert response.status == 201, body
            return body

    async def ingest_status(self, mileage: float) -> None:
        record = {
            "record_id": f"serve-{mileage}",
            "vin": CLUBMAN,
            "category": "vehicle.status",
            "recorded_at": format_instant(datetime.now(UTC) - timedelta(minutes=1)),
            "data": {"mileage_km": mileage, "battery_voltage_v": 12.5},
        }
        async with self.http.post(
            f"{self.base}/v1/ingest/records",
            json=[record],
            headers={"Authorization": await self.token(BACKEND, "ingest")},
        ) as response:
            body = await response.json()
            assert response.status == 200 and body["summary"]["stored"] == 1, body


@asynccontextmanager
async def serving(database_url: str, tmp_path: Path, *, worker: bool) -> AsyncIterator[Served]:
    """``broker serve`` on the demo seed; stopped (SIGTERM) on leaving, and must exit 0."""
    port = free_port()
    env = broker_env(
        database_url,
        tmp_path,
        BROKER_HOST="127.0.0.1",
        BROKER_PORT=str(port),
        BROKER_PUBLIC_URL=f"http://127.0.0.1:{port}",
        BROKER_PURGE_INTERVAL="86400",
        BROKER_LOG_LEVEL="INFO",
        BROKER_WEBHOOK_ALLOW_HTTP_LOOPBACK="1",
        BROKER_WEBHOOK_WORKER="1" if worker else "0",
    )
    broker = [sys.executable, "-m", "broker"]
    seed = ROOT / "examples" / "demo-seed.json"
    seeded = await asyncio.to_thread(
        subprocess.run, [*broker, "seed", str(seed)], cwd=ROOT, env=env, capture_output=True
    )
    assert seeded.returncode == 0, seeded.stderr
    log_path = tmp_path / "serve.log"
    process = _start([*broker, "serve"], env, log_path)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            served = Served(base, process, log_path, http)
            await _ready(served)
            yield served
        process.terminate()
        code = await asyncio.to_thread(process.wait, WAIT)
        assert code == 0, log_path.read_text(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)


def _start(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


async def _ready(served: Served) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        try:
            async with served.http.get(f"{served.base}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if served.process.poll() is not None or loop.time() > deadline:
            raise AssertionError(served.log_path.read_text(errors="replace"))
        await asyncio.sleep(0.1)


def outbox(database_url: str, subscription_id: str) -> list[WebhookMessageRow]:
    database = Database(database_url)
    try:
        return database.run_sync(lambda s: store.messages(s, subscription_id=subscription_id))
    finally:
        database.close()


async def test_serve_delivers_with_its_own_worker(
    database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    async with serving(database_url, tmp_path, worker=True) as served:
        sub = await served.subscribe(receiver.url)  # queues a ping
        await served.ingest_status(4321.0)  # queues a data.vehicle.status message
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while len(receiver.received) < 2:
            assert loop.time() < deadline, served.log_path.read_text(errors="replace")
            await asyncio.sleep(0.05)
        rows = await asyncio.to_thread(outbox, database_url, sub["id"])
        assert "webhook worker started" in served.messages()

    hook = standardwebhooks.Webhook(sub["secret"])
    payloads = {
        headers["webhook-id"]: hook.verify(body, headers) for body, headers in receiver.received
    }
    assert sorted(p["type"] for p in payloads.values()) == ["data.vehicle.status", "ping"]
    (data,) = [p["data"] for p in payloads.values() if p["type"] == "data.vehicle.status"]
    assert [r["data"]["mileage_km"] for r in data["records"]] == [4321.0]
    assert data["vehicles"] == [CLUBMAN]  # the fleet contract identifies vehicles by VIN
    assert set(payloads) == {r.id for r in rows}
    assert all(r.state == store.DELIVERED for r in rows)


async def test_serve_with_its_worker_off_delivers_nothing(
    database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    async with serving(database_url, tmp_path, worker=False) as served:
        sub = await served.subscribe(receiver.url)
        await served.ingest_status(4321.0)
        # The same process goes on serving (and would deliver, were its worker on) ...
        for _ in range(5):
            async with served.http.get(
                f"{served.base}/v1/recipient/webhooks",
                headers={"Authorization": await served.token(FLEET)},
            ) as response:
                assert response.status == 200
        # ... but no worker ever started, and both messages wait in the outbox.
        rows = await asyncio.to_thread(outbox, database_url, sub["id"])
        assert "broker listening" in served.messages()
        assert "webhook worker started" not in served.messages()

    assert sorted((r.event_type, r.state, r.attempts) for r in rows) == [
        ("data.vehicle.status", store.PENDING, 0),
        ("ping", store.PENDING, 0),
    ]
    assert receiver.received == []
