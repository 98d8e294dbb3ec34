"""Webhook test fixtures: a broker app, receivers on loopback, and a loopback-only guard."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from ingest_app import App, start_app
from webhooks.support import Receiver

from broker.webhooks.egress import Egress
from broker.webhooks.runner import egress_policy, make_worker
from broker.webhooks.worker import DeliveryWorker


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Fail the test if anything tries to connect to an address other than loopback."""
    attempted: list[Any] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def check(address: Any) -> None:
        if isinstance(address, tuple):
            host = str(address[0]).split("%", 1)[0]
            if not ipaddress.ip_address(host).is_loopback:
                attempted.append(address)
                raise AssertionError(f"a connection to {host} was attempted")

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield attempted
    assert attempted == [], f"connections attempted beyond loopback: {attempted}"


@pytest.fixture
async def receiver(aiohttp_server: Any) -> Receiver:
    holder: list[Receiver] = []

    async def hook(request: web.Request) -> web.Response:
        me = holder[0]
        body = await request.read()
        me.received.append((body, dict(request.headers)))
        status = me.answers.pop(0) if me.answers else 204
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app, host="127.0.0.1")
    holder.append(Receiver(server))
    return holder[0]


@pytest.fixture
async def app(database_url: str, tmp_path: Path, aiohttp_client: Any) -> App:
    return await start_app(
        database_url,
        tmp_path,
        aiohttp_client,
        webhook_allow_http_loopback=True,
        webhook_worker=False,
    )


@pytest.fixture
async def worker(app: App) -> AsyncIterator[DeliveryWorker]:
    egress = Egress(egress_policy(app.broker.settings))
    await egress.start()
    yield make_worker(app.broker, egress)
    await egress.close()
