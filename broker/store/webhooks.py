"""Persistence of webhook subscriptions and the durable outbox of messages.

Claiming (:func:`claim`) hands each due message to one worker for a lease: on
PostgreSQL with ``FOR UPDATE SKIP LOCKED``, on SQLite inside the one write
transaction (``BEGIN IMMEDIATE``). Only the first open message of a
(subscription, vehicle) chain is ever due, so a vehicle's messages leave in
order. A worker records an outcome only while it still holds the claim
(:func:`finish`), so a message re-claimed after its lease expired is finished
once.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from broker.store.tables import (
    ContractRow,
    FleetMembershipRow,
    GrantRow,
    WebhookMessageRow,
    WebhookSubscriptionRow,
)

ACTIVE = "active"
DISABLED = "disabled"
DELETED = "deleted"

PENDING = "pending"
SENDING = "sending"
DELIVERED = "delivered"
DEAD = "dead"
DROPPED = "dropped"
OPEN = (PENDING, SENDING)


def new_subscription_id() -> str:
    return "whk_" + secrets.token_hex(8)


def new_message_id() -> str:
    return "msg_" + secrets.token_urlsafe(18)


# -- subscriptions ----------------------------------------------------------------------------


def add_subscription(session: Session, row: WebhookSubscriptionRow) -> None:
    session.add(row)
    session.flush()


def subscription(
    session: Session, subscription_id: str, *, recipient_id: str | None = None
) -> WebhookSubscriptionRow | None:
    """The subscription, unless deleted (or, with ``recipient_id``, someone else's)."""
    row = session.get(WebhookSubscriptionRow, subscription_id)
    if row is None or row.status == DELETED:
        return None
    if recipient_id is not None and row.recipient_id != recipient_id:
        return None
    return row


def subscriptions(session: Session, recipient_id: str) -> list[WebhookSubscriptionRow]:
    return list(
        session.exec(
            select(WebhookSubscriptionRow)
            .where(
                WebhookSubscriptionRow.recipient_id == recipient_id,
                WebhookSubscriptionRow.status != DELETED,
            )
            .order_by(col(WebhookSubscriptionRow.created_at), col(WebhookSubscriptionRow.id))
        ).all()
    )


def listening(session: Session) -> list[WebhookSubscriptionRow]:
    """Every active subscription (few: one or two per fleet operator)."""
    return list(
        session.exec(
            select(WebhookSubscriptionRow).where(WebhookSubscriptionRow.status == ACTIVE)
        ).all()
    )


def save_subscription(session: Session, row: WebhookSubscriptionRow) -> None:
    session.add(row)
    session.flush()


def contract_ids(session: Session, recipient_id: str) -> list[str]:
    rows = session.exec(
        select(ContractRow.id).where(ContractRow.recipient_id == recipient_id).distinct()
    ).all()
    return sorted(rows)


def active_grants(session: Session, vins: Iterable[str]) -> list[GrantRow]:
    """Grant rows in state ``active`` for these vehicles (the gate re-checks everything)."""
    wanted = sorted(set(vins))
    if not wanted:
        return []
    return list(
        session.exec(
            select(GrantRow).where(col(GrantRow.vin).in_(wanted), GrantRow.state == "active")
        ).all()
    )


# -- the outbox -------------------------------------------------------------------------------


def enqueue(session: Session, messages: Sequence[dict[str, Any]], *, now: datetime) -> int:
    """Insert messages (column values; ``id``, state and times filled in) in this transaction."""
    if not messages:
        return 0
    rows = [
        {
            "id": new_message_id(),
            "state": PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "last_error": "",
            "created_at": now,
            "updated_at": now,
            "contract_id": None,
            "vin": None,
            "category": None,
            "since": None,
            "until": None,
            "grant_id": None,
        }
        | dict(m)
        for m in messages
    ]
    session.execute(sa.insert(WebhookMessageRow), rows)
    return len(rows)


def claim(
    session: Session, *, worker: str, now: datetime, lease: timedelta, limit: int
) -> list[WebhookMessageRow]:
    """Claim up to ``limit`` due messages for ``worker`` until ``now + lease``, in seq order.

    One statement picks the due heads of their chains (on PostgreSQL locking them,
    skipping rows another worker holds), marks them claimed and returns them.
    """
    message = WebhookMessageRow.__table__  # type: ignore[attr-defined]
    sub = WebhookSubscriptionRow.__table__  # type: ignore[attr-defined]
    earlier = aliased(message)
    # Only the first open message of its (subscription, order_key) chain may go. Asked as
    # "is it the chain's lowest open seq?": a scalar subquery, which both databases answer
    # with one probe of the partial index of open chains, whatever their statistics say.
    # The states are written into the SQL, not bound, so that the index's condition is
    # provably met.
    head = (
        sa.select(sa.func.min(earlier.c.seq))
        .where(
            earlier.c.subscription_id == message.c.subscription_id,
            earlier.c.order_key == message.c.order_key,
            earlier.c.state.in_([sa.literal(s, literal_execute=True) for s in OPEN]),
        )
        .scalar_subquery()
    )
    due = sa.or_(
        sa.and_(message.c.state == PENDING, message.c.next_attempt_at <= now),
        sa.and_(message.c.state == SENDING, message.c.claimed_until <= now),
    )
    picked = (
        sa.select(message.c.seq)
        .join(sub, sub.c.id == message.c.subscription_id)
        .where(due, sub.c.status == ACTIVE, message.c.seq == head)
        .order_by(message.c.seq)
        .limit(limit)
    )
    chosen: sa.ColumnElement[bool]
    if session.get_bind().dialect.name == "postgresql":
        picked = picked.with_for_update(skip_locked=True, of=message)
        # = ANY(ARRAY(...)): the pick runs once and the update finds its rows by primary
        # key (with IN (...) the planner may hash-join the whole table instead).
        chosen = col(WebhookMessageRow.seq) == sa.func.any(sa.func.array(picked.scalar_subquery()))
    else:
        chosen = col(WebhookMessageRow.seq).in_(picked.scalar_subquery())
    rows = session.scalars(
        sa.update(WebhookMessageRow)
        .where(chosen)
        .values(
            state=SENDING,
            claimed_by=worker,
            claimed_until=now + lease,
            attempts=WebhookMessageRow.attempts + 1,
            updated_at=now,
        )
        .returning(WebhookMessageRow),
    ).all()
    return sorted(rows, key=lambda row: row.seq or 0)


def finish(session: Session, seq: int, *, worker: str, now: datetime, **values: Any) -> bool:
    """Record an outcome, if ``worker`` still holds the claim; False when it lost it."""
    message = WebhookMessageRow.__table__  # type: ignore[attr-defined]
    result = session.execute(
        sa.update(message)
        .where(
            message.c.seq == seq,
            message.c.state == SENDING,
            message.c.claimed_by == worker,
        )
        .values(claimed_by=None, claimed_until=None, updated_at=now, **values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def close_open(
    session: Session, subscription_id: str, *, state: str, reason: str, now: datetime
) -> int:
    """Move every open message of a subscription to ``state`` (dead or dropped)."""
    message = WebhookMessageRow.__table__  # type: ignore[attr-defined]
    result = session.execute(
        sa.update(message)
        .where(message.c.subscription_id == subscription_id, message.c.state.in_(OPEN))
        .values(
            state=state,
            last_error=reason[:300],
            claimed_by=None,
            claimed_until=None,
            updated_at=now,
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def replay(
    session: Session,
    *,
    now: datetime,
    subscription_id: str | None = None,
    message_ids: Sequence[str] = (),
) -> int:
    """Queue dead letters again (all, a subscription's, or the named ones)."""
    message = WebhookMessageRow.__table__  # type: ignore[attr-defined]
    query = sa.update(message).where(message.c.state == DEAD)
    if subscription_id is not None:
        query = query.where(message.c.subscription_id == subscription_id)
    if message_ids:
        query = query.where(message.c.id.in_(list(message_ids)))
    result = session.execute(
        query.values(state=PENDING, attempts=0, next_attempt_at=now, last_error="", updated_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def messages(
    session: Session, *, subscription_id: str | None = None, state: str | None = None
) -> list[WebhookMessageRow]:
    query = select(WebhookMessageRow)
    if subscription_id is not None:
        query = query.where(WebhookMessageRow.subscription_id == subscription_id)
    if state is not None:
        query = query.where(WebhookMessageRow.state == state)
    return list(session.exec(query.order_by(col(WebhookMessageRow.seq))).all())


def add_fleet_membership(session: Session, operator_id: str, vin: str, *, since: datetime) -> None:
    """The vehicle joins the operator's fleet (announced to its webhook subscribers)."""
    session.add(FleetMembershipRow(operator_id=operator_id, vin=vin, since=since))
    session.flush()
