"""Grant and fleet events over real HTTP: decided by the gate when sent, each one audited.

Before issue 13 the worker built these events itself from the latest contract: a
vehicle with no grant at all had its VIN sent on joining a fleet, and nothing was
audited. Now each sent event matches exactly one audit entry by its ``audit_seq`` and
the digest of its data, and an event the gate refuses is dropped unsent (and audited).
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
import standardwebhooks
from ingest_app import App
from webhooks.support import Receiver, subscribe
from worlds import CLUBMAN, COOPER

from broker.audit.entry import AuditEntry
from broker.domain.grants import GrantAction
from broker.gate.release import document_digest
from broker.store import audit as audit_store
from broker.store import contracts as contract_store
from broker.store import webhooks as store
from broker.store.tables import RecipientRow
from broker.webhooks.worker import DeliveryWorker

FLEET = "rcp-fleet"
EVENTS = ["grant.created", "grant.ended", "grant.expired", "fleet.vehicle_joined",
          "fleet.vehicle_left"]  # fmt: skip


def entries(app: App) -> list[AuditEntry]:
    return app.broker.database.run_sync(lambda s: audit_store.read(s, start=0, limit=10**6))


def sent(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    hook = standardwebhooks.Webhook(secret)
    return [m for b, h in receiver.received if (m := hook.verify(b, h))["type"] != "ping"]


def suspend(app: App, **values: Any) -> None:
    update = sa.update(RecipientRow).where(sa.column("id") == FLEET).values(**values)
    app.broker.database.run_sync(lambda s: s.execute(update), write=True)


def join_and_clear(app: App, vin: str) -> None:
    broker = app.broker
    now = broker.clock.now()
    broker.database.run_sync(lambda s: broker.grants.join_fleet(s, FLEET, vin, at=now), write=True)
    contract = broker.database.run_sync(lambda s: contract_store.latest(s, "fleet-operator"))
    assert contract is not None
    broker.database.run_sync(
        lambda s: broker.grants.create(s, contract=contract, vin=vin, at=now), write=True
    )


async def test_a_vehicle_without_a_grant_joining_the_fleet_sends_no_vin(
    app: App, receiver: Receiver, worker: DeliveryWorker
) -> None:
    sub = await subscribe(app, receiver.url, EVENTS)
    broker = app.broker
    now = broker.clock.now()
    broker.database.run_sync(
        lambda s: broker.grants.join_fleet(s, FLEET, COOPER, at=now), write=True
    )
    broker.database.run_sync(
        lambda s: broker.grants.end_fleet_membership(s, FLEET, COOPER, at=now), write=True
    )
    await worker.drain()
    assert sent(receiver, sub["secret"]) == []
    assert all(COOPER.encode() not in body for body, _ in receiver.received)
    rows = await broker.database.read(lambda s: store.messages(s, subscription_id=sub["id"]))
    dropped = [r for r in rows if r.event_type.startswith("fleet.")]
    assert [r.state for r in dropped] == ["dropped", "dropped"]
    denials = {e.seq: e for e in entries(app) if e.kind == "event" and e.decision == "denied"}
    assert {r.audit_seq for r in dropped} <= set(denials)
    assert {denials[r.audit_seq or 0].subject_ref for r in dropped} == {
        broker.keyring.vehicle_ref(COOPER)
    }


async def test_every_sent_event_matches_exactly_one_audit_entry_by_digest(
    app: App, receiver: Receiver, worker: DeliveryWorker
) -> None:
    sub = await subscribe(app, receiver.url, EVENTS)
    join_and_clear(app, COOPER)  # joined, then its clearance created
    await worker.drain()  # (decided when sent: had it left by then, neither would go)
    broker = app.broker
    broker.database.run_sync(
        lambda s: broker.grants.transition(
            s, "gr-81ac3a06b35dc15c", GrantAction.TERMINATE, at=broker.clock.now(), reason="t"
        ),
        write=True,
    )
    now = broker.clock.now()
    broker.database.run_sync(
        lambda s: broker.grants.end_fleet_membership(s, FLEET, COOPER, at=now), write=True
    )
    await worker.drain()
    messages = sent(receiver, sub["secret"])
    assert sorted(m["type"] for m in messages) == sorted(
        ["fleet.vehicle_joined", "grant.created", "grant.ended", "grant.expired",
         "fleet.vehicle_left"]
    )  # fmt: skip
    log = entries(app)
    for message in messages:
        data = dict(message["data"])
        seq = data.pop("audit_seq")
        digest = document_digest(data)
        matching = [e for e in log if e.payload_digest == digest]
        assert [e.seq for e in matching] == [seq], message
        [found] = matching
        assert found.kind == "event" and found.decision == "released"
        assert found.subject_ref == data["grant"] and found.grant_ids == (data["grant"],)
        assert found.destination_countries == ("CH", "NL") and found.legal_basis == "6(1)(f)"
        assert data["vehicle"] in (COOPER, CLUBMAN)  # the contract names vehicles by VIN


async def test_no_new_grant_is_announced_to_a_suspended_recipient(
    app: App, receiver: Receiver, worker: DeliveryWorker
) -> None:
    sub = await subscribe(app, receiver.url, EVENTS)
    await worker.drain()  # the ping
    suspend(app, status="suspended")
    join_and_clear(app, COOPER)
    await worker.drain()
    assert sent(receiver, sub["secret"]) == []
    denied = [e for e in entries(app) if e.kind == "event" and e.decision == "denied"]
    assert len(denied) == 2 and all("suspended" in e.reasons[0] for e in denied)
    assert all(e.subject_ref.startswith("gr-") for e in denied)


async def test_a_refused_country_hears_of_no_new_grant(
    app: App, receiver: Receiver, worker: DeliveryWorker
) -> None:
    sub = await subscribe(app, receiver.url, EVENTS)
    await worker.drain()
    suspend(app, processing_countries=["NL", "US"])  # no DPF certification, no SCC
    join_and_clear(app, COOPER)
    await worker.drain()
    assert sent(receiver, sub["secret"]) == []
    denied = [e for e in entries(app) if e.kind == "event" and e.decision == "denied"]
    assert len(denied) == 2 and all("US" in e.destination_countries for e in denied)


async def test_the_end_of_a_grant_reaches_a_suspended_recipient(
    app: App, receiver: Receiver, worker: DeliveryWorker
) -> None:
    sub = await subscribe(app, receiver.url, EVENTS)
    await worker.drain()
    suspend(app, status="suspended", processing_countries=["NL", "US"])
    broker = app.broker
    broker.database.run_sync(
        lambda s: broker.grants.transition(
            s, "gr-81ac3a06b35dc15c", GrantAction.TERMINATE, at=broker.clock.now(), reason="t"
        ),
        write=True,
    )
    await worker.drain()
    [ended] = sent(receiver, sub["secret"])
    assert ended["type"] == "grant.ended" and ended["data"]["erase"] is True
    assert ended["data"]["vehicle"] == CLUBMAN and ended["data"]["grant"] == "gr-81ac3a06b35dc15c"
    found = next(e for e in entries(app) if e.seq == ended["data"]["audit_seq"])
    assert found.destination_countries == ("CH", "NL", "US")
    assert found.details["transfer"] == "not_allowed" and found.details["recipient"] == "suspended"
    assert json.dumps(found.details)  # it stays small and JSON
