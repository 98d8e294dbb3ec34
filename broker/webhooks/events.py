"""Webhook events: what a subscriber can hear about, queued with the change they announce.

Each function runs inside the caller's transaction (the ingest batch, the
grant's change), so an event exists exactly when its change committed. An
event is a reference — vehicle (kept internally), category, time range, grant —
never a copy of the data: the data itself is asked of the gate when the message
is sent (``data.*`` of :meth:`~broker.gate.gate.Gate.release`, grant and fleet
events of :meth:`~broker.gate.gate.Gate.announce`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlmodel import Session

from broker.domain.contracts import Channel
from broker.domain.grants import Grant, GrantState
from broker.gate.announce import FLEET_JOINED as FLEET_JOINED
from broker.gate.announce import FLEET_LEFT as FLEET_LEFT
from broker.gate.announce import GRANT_CREATED as GRANT_CREATED
from broker.gate.announce import GRANT_ENDED as GRANT_ENDED
from broker.gate.announce import GRANT_EXPIRED as GRANT_EXPIRED
from broker.gate.revocation import GrantEnded
from broker.store import contracts as contract_store
from broker.store import webhooks as webhook_store

DATA_PREFIX = "data."
PING = "ping"
NON_DATA_EVENTS = (GRANT_CREATED, GRANT_ENDED, GRANT_EXPIRED, FLEET_JOINED, FLEET_LEFT, PING)
#: ``until`` of a data event is exclusive: one microsecond after its newest record.
_AFTER_LAST = timedelta(microseconds=1)


class StoredRecord(Protocol):
    @property
    def vin(self) -> str: ...
    @property
    def category(self) -> str: ...
    @property
    def recorded_at(self) -> datetime: ...


def event_types(categories: Iterable[str]) -> list[str]:
    """Every event type a subscriber may choose, given the data categories."""
    return sorted({DATA_PREFIX + c for c in categories} | set(NON_DATA_EVENTS))


def _webhook_contract(session: Session, contract_id: str, cache: dict[str, bool]) -> bool:
    if contract_id not in cache:
        contract = contract_store.latest(session, contract_id)
        cache[contract_id] = contract is not None and Channel.WEBHOOK in contract.channels
    return cache[contract_id]


def announce_records(session: Session, records: Iterable[StoredRecord], *, now: datetime) -> int:
    """New data stored: one ``data.<category>`` message per vehicle, category and subscriber."""
    by_key: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for record in records:
        by_key[(record.vin, record.category)].append(record.recorded_at)
    if not by_key:
        return 0
    listening = webhook_store.listening(session)
    if not listening:
        return 0
    subscribers: dict[str, list[Any]] = defaultdict(list)
    for sub in listening:
        subscribers[sub.recipient_id].append(sub)
    webhook_contracts: dict[str, bool] = {}
    queued = []
    grants = webhook_store.active_grants(session, {vin for vin, _ in by_key})
    for grant in sorted(grants, key=lambda g: g.id):
        subs = subscribers.get(grant.recipient_id)
        if not subs or not _webhook_contract(session, grant.contract_id, webhook_contracts):
            continue
        for (vin, category), times in sorted(by_key.items()):
            if vin != grant.vin or category not in grant.categories:
                continue
            event = DATA_PREFIX + category
            for sub in subs:
                if event in sub.event_types:
                    queued.append(
                        {
                            "subscription_id": sub.id,
                            "recipient_id": sub.recipient_id,
                            "contract_id": grant.contract_id,
                            "event_type": event,
                            "order_key": vin,
                            "vin": vin,
                            "category": category,
                            "since": min(times),
                            "until": max(times) + _AFTER_LAST,
                            "grant_id": grant.id,
                        }
                    )
    return webhook_store.enqueue(session, queued, now=now)


def announce_grant(
    session: Session, event: str, *, recipient_id: str, contract_id: str | None, vin: str,
    grant_id: str | None, now: datetime,
) -> int:  # fmt: skip
    """A grant or fleet event for one vehicle, to the recipient's subscribers of ``event``."""
    queued = [
        {
            "subscription_id": sub.id,
            "recipient_id": recipient_id,
            "contract_id": contract_id,
            "event_type": event,
            "order_key": vin,
            "vin": vin,
            "grant_id": grant_id,
        }
        for sub in webhook_store.listening(session)
        if sub.recipient_id == recipient_id and event in sub.event_types
    ]
    return webhook_store.enqueue(session, queued, now=now)


def on_grant_ended(session: Session, ended: GrantEnded) -> None:
    """The revocation listener: the grant's end is announced after its queued data.

    Data messages already queued stay queued: when their turn comes the gate
    denies them (the grant is no longer active), so they are dropped unsent.
    """
    grant = ended.grant
    event = GRANT_EXPIRED if grant.state is GrantState.EXPIRED else GRANT_ENDED
    announce_grant(
        session,
        event,
        recipient_id=grant.recipient_id,
        contract_id=grant.contract_id,
        vin=grant.vin,
        grant_id=grant.id,
        now=ended.at,
    )


def on_grant_created(session: Session, grant: Grant, *, now: datetime) -> None:
    announce_grant(
        session,
        GRANT_CREATED,
        recipient_id=grant.recipient_id,
        contract_id=grant.contract_id,
        vin=grant.vin,
        grant_id=grant.id,
        now=now,
    )


def queue_ping(session: Session, subscription_id: str, recipient_id: str, *, now: datetime) -> None:
    """The verification ping of a new subscription (sent whatever its event types)."""
    webhook_store.enqueue(
        session,
        [
            {
                "subscription_id": subscription_id,
                "recipient_id": recipient_id,
                "event_type": PING,
                "order_key": "ping:" + subscription_id,
            }
        ],
        now=now,
    )
