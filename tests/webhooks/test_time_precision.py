"""Webhook data messages at the contract's time precision; the signature's time stays exact."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import standardwebhooks
from ingest_app import App
from webhooks.support import Receiver, status_record, subscribe
from worlds import NOW

from broker.clock import parse_instant
from broker.store import contracts as contract_store
from broker.webhooks.worker import DeliveryWorker


async def test_a_coarse_contract_sends_coarse_times_and_an_exact_signature_time(
    app: App, receiver: Receiver, worker: DeliveryWorker
) -> None:
    def amend(session: object) -> None:
        latest = contract_store.latest(session, "fleet-operator")  # type: ignore[arg-type]
        assert latest is not None
        document = latest.to_document()
        document["version"] = latest.version + 1
        document["protection"]["time_precision"] = "PT15M"  # coarser: applies at once
        amended = app.broker.documents.contract_from_document(document)
        contract_store.add(session, amended, at=NOW - timedelta(days=1))  # type: ignore[arg-type]

    app.broker.database.run_sync(amend, write=True)
    sub = await subscribe(app, receiver.url, ["data.vehicle.status"])
    at = NOW - timedelta(minutes=52, seconds=7, microseconds=123)
    await app.broker.ingest.ingest([status_record("r-1", at, 100.0)], source="t")
    await worker.drain()

    body, headers = receiver.received[-1]
    document = standardwebhooks.Webhook(sub["secret"]).verify(body, headers)
    assert document["type"] == "data.vehicle.status"
    data = document["data"]
    times = [data["since"], data["until"], document["timestamp"]]
    times += [r["recorded_at"] for r in data["records"]]
    assert [r["data"]["mileage_km"] for r in data["records"]] == [100.0]
    for text in times:
        moment = parse_instant(text)
        assert moment.second == moment.microsecond == 0 and moment.minute % 15 == 0, text
    assert parse_instant(data["since"]) < at < parse_instant(data["until"])
    assert "07.000123" not in body.decode() and "52:07" not in body.decode()
    # The header is the signing time (verified against the receiver's clock), not a data time.
    signed = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
    assert abs(signed - datetime.now(UTC)) < timedelta(minutes=1)
    assert json.loads(body) == document
