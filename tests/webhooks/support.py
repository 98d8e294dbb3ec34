"""Helpers shared by the webhook tests (importable as ``webhooks.support``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp.test_utils import TestServer
from ingest_app import App
from worlds import CLUBMAN

from broker.ingest.service import RawItem

FLEET = ("fleet-demo", "demo-secret-fleet-demo")


@dataclass
class Receiver:
    """An endpoint on 127.0.0.1 that records every request (body and headers)."""

    server: TestServer
    received: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # statuses to answer first, in order

    @property
    def url(self) -> str:
        return str(self.server.make_url("/hook"))


async def subscribe(app: App, url: str, events: list[str]) -> dict[str, Any]:
    token = await app.token(*FLEET)
    response = await app.client.post(
        "/v1/recipient/webhooks",
        json={"url": url, "event_types": events},
        headers={"Authorization": token},
    )
    body: dict[str, Any] = await response.json()
    assert response.status == 201, body
    return body


def status_record(record_id: str, at: datetime, mileage: float) -> RawItem:
    return RawItem(
        {
            "record_id": record_id,
            "vin": CLUBMAN,
            "category": "vehicle.status",
            "recorded_at": at.isoformat().replace("+00:00", "Z"),
            "data": {"mileage_km": mileage, "battery_voltage_v": 12.5},
        },
        0,
    )
