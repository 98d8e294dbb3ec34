"""A delivery worker's life: its logs, and a graceful stop.

``broker webhooks worker`` logs like ``broker serve`` (JSON lines at
``BROKER_LOG_LEVEL``). On SIGTERM or SIGINT it claims nothing more, lets the
deliveries in flight finish (within one request timeout) and exits 0; a delivery
still running when the grace is over is cancelled and left to its lease.
The receivers run in the test process on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
from aiohttp import web
from ingest_app import App
from processes import env_of
from webhooks.support import Receiver, subscribe
from worlds import ROOT

from broker.store import webhooks as store
from broker.store.tables import WebhookMessageRow
from broker.webhooks.worker import DeliveryWorker

#: Safety nets only (nothing asserts on how long anything took).
WAIT = 60.0
#: The worker's request timeout, and so its grace on stopping: far beyond the slow answer.
TIMEOUT = 60
LOG_FIELDS = {"ts", "level", "logger", "msg", "request_id"}


async def outbox(app: App, subscription_id: str) -> list[WebhookMessageRow]:
    return await app.broker.database.read(
        lambda s: store.messages(s, subscription_id=subscription_id)
    )


async def queue_ping(app: App, sub: dict[str, Any], order_key: str) -> None:
    recipient = (await outbox(app, sub["id"]))[0].recipient_id
    message = {
        "subscription_id": sub["id"],
        "recipient_id": recipient,
        "event_type": "ping",
        "order_key": order_key,
    }
    now = app.clock.now()
    await app.broker.database.write(lambda s: store.enqueue(s, [message], now=now))


async def hanging_receiver(aiohttp_server: Any) -> tuple[str, list[str], asyncio.Event]:
    """An endpoint that holds every request until the returned event is set."""
    arrived: list[str] = []
    answer = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        arrived.append(request.headers["webhook-id"])
        await answer.wait()
        return web.Response(status=204)

    server_app = web.Application()
    server_app.router.add_post("/hook", hang)
    server = await aiohttp_server(server_app, host="127.0.0.1")
    return str(server.make_url("/hook")), arrived, answer


async def until(condition: Any, about: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not condition():
        assert loop.time() < deadline, about
        await asyncio.sleep(0.02)


# -- in process -------------------------------------------------------------------------------


async def test_on_stop_a_delivery_in_flight_finishes_and_nothing_more_is_claimed(
    app: App, worker: DeliveryWorker, aiohttp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="broker.webhooks.worker")
    url, arrived, answer = await hanging_receiver(aiohttp_server)
    sub = await subscribe(app, url, ["data.vehicle.status"])  # queues its ping
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: arrived, "the ping never arrived")
    stop.set()
    await until(lambda: "webhook worker stopping" in caplog.messages, "never stopping")
    await queue_ping(app, sub, "after-stop")  # due now, with the ping still in flight
    answer.set()
    await running

    first, later = await outbox(app, sub["id"])
    assert (first.state, first.attempts, first.last_status) == (store.DELIVERED, 1, 204)
    assert (later.state, later.attempts) == (store.PENDING, 0)  # not claimed after the stop
    assert arrived == [first.id]


async def test_a_delivery_still_running_after_the_grace_is_left_to_its_lease(
    app: App, worker: DeliveryWorker, aiohttp_server: Any
) -> None:
    url, arrived, answer = await hanging_receiver(aiohttp_server)
    sub = await subscribe(app, url, ["data.vehicle.status"])
    worker.config = replace(worker.config, grace=timedelta(0))
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await until(lambda: arrived, "the ping never arrived")
        stop.set()
        await running  # returns although the receiver has not answered
    finally:
        answer.set()
    (ping,) = await outbox(app, sub["id"])
    assert (ping.state, ping.attempts) == (store.SENDING, 1)  # claimed; sent again later


# -- as a process -----------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    """One ``broker webhooks worker`` process on the app's database and keys."""

    app: App
    tmp_path: Path
    process: subprocess.Popen[bytes] | None = None
    stdout: Path = field(init=False)
    stderr: Path = field(init=False)

    def __post_init__(self) -> None:
        self.stdout = self.tmp_path / "worker.out"
        self.stderr = self.tmp_path / "worker.err"

    def start(self) -> subprocess.Popen[bytes]:
        env = env_of(
            self.app.broker.settings,
            BROKER_WEBHOOK_ALLOW_HTTP_LOOPBACK="1",
            BROKER_WEBHOOK_TIMEOUT=str(TIMEOUT),
            BROKER_LOG_LEVEL="INFO",
        )
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "broker", "webhooks", "worker"],
                cwd=ROOT, env=env, stdout=out, stderr=err,
            )  # fmt: skip
        return self.process

    def output(self) -> str:
        return f"--- stdout\n{self.stdout.read_text()}\n--- stderr\n{self.stderr.read_text()}"

    def log(self) -> list[dict[str, Any]]:
        """The stderr lines, each of which must be one JSON object."""
        lines = self.stderr.read_text().splitlines()
        entries = []
        for line in lines:
            entry = json.loads(line)
            assert isinstance(entry, dict), line
            entries.append(entry)
        return entries

    def logged(self, msg: str) -> bool:
        return f'"msg":"{msg}"' in self.stderr.read_text()

    async def wait(self) -> int:
        assert self.process is not None
        return await asyncio.to_thread(self.process.wait, WAIT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(WAIT)


@pytest.fixture
async def worker_process(app: App, tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    started = WorkerProcess(app, tmp_path)
    try:
        yield started
    finally:
        started.kill()  # a test failing half-way leaves no process behind


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signalled_worker_process_finishes_its_delivery_and_exits_0(
    app: App, aiohttp_server: Any, worker_process: WorkerProcess, signum: signal.Signals
) -> None:
    # The process runs on the system clock: bring the app's clock to it.
    app.clock.set(datetime.now(UTC).replace(microsecond=0))
    received: Receiver | None = None
    subscribed: dict[str, Any] = {}

    async def slow(request: web.Request) -> web.Response:
        """Signal the worker mid-request, and answer only once it has stopped claiming."""
        assert received is not None and worker_process.process is not None
        received.received.append((await request.read(), dict(request.headers)))
        os.kill(worker_process.process.pid, signum)
        await until(
            lambda: worker_process.logged("webhook worker stopping"),
            f"the worker never stopped\n{worker_process.output()}",
        )
        await queue_ping(app, subscribed, "after-stop")  # due now, and never claimed
        await asyncio.sleep(1)  # a slow receiver
        return web.Response(status=204)

    server_app = web.Application()
    server_app.router.add_post("/hook", slow)
    received = Receiver(await aiohttp_server(server_app, host="127.0.0.1"))
    subscribed.update(await subscribe(app, received.url, ["data.vehicle.status"]))

    worker_process.start()
    code = await worker_process.wait()
    assert code == 0, worker_process.output()

    # The delivery in flight at the signal completed; nothing was claimed after it.
    rows = await outbox(app, subscribed["id"])
    assert [(r.state, r.attempts, r.last_status) for r in rows] == [
        (store.DELIVERED, 1, 204),
        (store.PENDING, 0, None),
    ], worker_process.output()
    first = rows[0]
    (body, headers), *others = received.received
    assert others == []
    assert headers["webhook-id"] == first.id
    assert standardwebhooks.Webhook(subscribed["secret"]).verify(body, headers)["type"] == "ping"

    # Logs: JSON lines on stderr, as `broker serve` writes them, at BROKER_LOG_LEVEL=INFO.
    assert worker_process.stdout.read_text() == ""
    entries = worker_process.log()
    assert all(set(e) >= LOG_FIELDS for e in entries), entries
    assert all(e["ts"].endswith("Z") for e in entries), entries
    assert [e for e in entries if e["level"] in {"ERROR", "CRITICAL"}] == []
    lifecycle = {e["msg"]: e for e in entries if e["logger"] == "broker.webhooks.worker"}
    assert set(lifecycle) == {
        "webhook worker started",
        "webhook worker stopping",
        "webhook worker stopped",
    }, entries
    assert lifecycle["webhook worker stopping"]["in_flight"] == 1
    assert lifecycle["webhook worker stopped"]["cancelled"] == 0
