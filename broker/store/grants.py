"""Grant persistence: a grant's row plus its append-only history of events.

A grant's amendments (the terms in force from each re-approval on) are a JSON list on
its row: ``at`` (RFC 3339), ``categories`` and ``location_precision``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from broker.clock import format_instant, parse_instant
from broker.domain.grants import Amendment, Grant, GrantAction, GrantEvent, GrantState
from broker.domain.legal import Activation
from broker.store.tables import GrantEventRow, GrantRow


def _to_domain(row: GrantRow, events: Iterable[GrantEventRow]) -> Grant:
    return Grant(
        id=row.id,
        contract_id=row.contract_id,
        contract_version=row.contract_version,
        recipient_id=row.recipient_id,
        vin=row.vin,
        activation=Activation(row.activation),
        categories=frozenset(row.categories),
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        customer_id=row.customer_id,
        location_precision=row.location_precision,
        state=GrantState(row.state),
        history=tuple(
            GrantEvent(
                at=e.at,
                action=GrantAction(e.action),
                from_state=GrantState(e.from_state) if e.from_state else None,
                to_state=GrantState(e.to_state),
                reason=e.reason,
            )
            for e in sorted(events, key=lambda e: e.seq)
        ),
        amendments=tuple(
            Amendment(
                at=parse_instant(a["at"]),
                categories=frozenset(a["categories"]),
                location_precision=a.get("location_precision"),
            )
            for a in row.amendments or ()
        ),
    )


def _amendments(grant: Grant) -> list[dict[str, Any]]:
    return [
        {
            "at": format_instant(a.at),
            "categories": sorted(a.categories),
            "location_precision": a.location_precision,
        }
        for a in grant.amendments
    ]


def _load_many(session: Session, rows: list[GrantRow]) -> list[Grant]:
    if not rows:
        return []
    ids = [r.id for r in rows]
    events = session.exec(select(GrantEventRow).where(col(GrantEventRow.grant_id).in_(ids))).all()
    by_grant: dict[str, list[GrantEventRow]] = {}
    for event in events:
        by_grant.setdefault(event.grant_id, []).append(event)
    return [_to_domain(r, by_grant.get(r.id, [])) for r in rows]


def get(session: Session, grant_id: str, *, for_update: bool = False) -> Grant | None:
    query = select(GrantRow).where(GrantRow.id == grant_id)
    if for_update and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = session.exec(query).first()
    return _load_many(session, [row])[0] if row else None


def save(session: Session, grant: Grant, *, now: datetime) -> None:
    """Insert or update the grant and append the events not yet stored."""
    row = session.get(GrantRow, grant.id)
    if row is None:
        row = GrantRow(
            id=grant.id,
            contract_id=grant.contract_id,
            contract_version=grant.contract_version,
            recipient_id=grant.recipient_id,
            vin=grant.vin,
            customer_id=grant.customer_id,
            activation=grant.activation.value,
            categories=sorted(grant.categories),
            location_precision=grant.location_precision,
            state=grant.state.value,
            valid_from=grant.valid_from,
            valid_until=grant.valid_until,
            amendments=_amendments(grant),
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        session.flush()
        stored = 0
    else:
        stored = session.exec(
            select(sa.func.count())
            .select_from(GrantEventRow)
            .where(GrantEventRow.grant_id == grant.id)
        ).one()
        row.state = grant.state.value
        row.contract_version = grant.contract_version
        row.categories = sorted(grant.categories)
        row.location_precision = grant.location_precision
        row.valid_until = grant.valid_until
        if len(grant.amendments) < len(row.amendments or ()):
            raise ValueError("a grant's amendments are append-only")
        row.amendments = _amendments(grant)
        row.updated_at = now
        session.add(row)
    if stored > len(grant.history):
        raise ValueError("a grant's history is append-only")
    for seq, event in enumerate(grant.history[stored:], start=stored):
        session.add(
            GrantEventRow(
                grant_id=grant.id,
                seq=seq,
                at=event.at,
                action=event.action.value,
                from_state=event.from_state.value if event.from_state else None,
                to_state=event.to_state.value,
                reason=event.reason[:500],
            )
        )
    session.flush()


def for_vehicle(session: Session, vin: str) -> list[Grant]:
    rows = session.exec(select(GrantRow).where(GrantRow.vin == vin).order_by(GrantRow.id)).all()
    return _load_many(session, list(rows))


def for_customer(session: Session, customer_id: str) -> list[Grant]:
    rows = session.exec(
        select(GrantRow).where(GrantRow.customer_id == customer_id).order_by(GrantRow.id)
    ).all()
    return _load_many(session, list(rows))


def in_states(session: Session, states: Iterable[GrantState]) -> list[Grant]:
    wanted = [s.value for s in states]
    rows = session.exec(
        select(GrantRow).where(col(GrantRow.state).in_(wanted)).order_by(GrantRow.id)
    ).all()
    return _load_many(session, list(rows))


def for_contract(session: Session, contract_id: str) -> list[Grant]:
    rows = session.exec(
        select(GrantRow).where(GrantRow.contract_id == contract_id).order_by(GrantRow.id)
    ).all()
    return _load_many(session, list(rows))


def for_release(session: Session, contract_id: str, *, vins: list[str] | None) -> list[Grant]:
    """The grants a release under ``contract_id`` may rely on, share-locked on PostgreSQL.

    A revocation takes the row lock exclusively, so it waits for a release in
    flight (and the release's audit entry) to commit, or the release waits for it.
    """
    query = select(GrantRow).where(GrantRow.contract_id == contract_id)
    if vins is not None:
        query = query.where(col(GrantRow.vin).in_(vins))
    else:
        query = query.where(col(GrantRow.state).in_(["active", "suspended"]))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(read=True)
    rows = session.exec(query.order_by(col(GrantRow.vin), col(GrantRow.id))).all()
    return _load_many(session, list(rows))


def covered_by(session: Session, recipient_id: str, grant_ids: list[str] | None) -> list[Grant]:
    """The recipient's grants: those named (a customer-bound token), or all of them."""
    query = select(GrantRow).where(GrantRow.recipient_id == recipient_id)
    if grant_ids is not None:
        query = query.where(col(GrantRow.id).in_(grant_ids))
    rows = session.exec(query.order_by(col(GrantRow.id))).all()
    return _load_many(session, list(rows))


def of_recipient(session: Session, recipient_id: str, vins: list[str] | None) -> list[Grant]:
    """The recipient's grants on ``vins`` (every vehicle: None), under any of its contracts."""
    query = select(GrantRow).where(GrantRow.recipient_id == recipient_id)
    if vins is not None:
        query = query.where(col(GrantRow.vin).in_(vins))
    rows = session.exec(query.order_by(col(GrantRow.vin), col(GrantRow.id))).all()
    return _load_many(session, list(rows))


def open_for(
    session: Session, contract_id: str, contract_version: int, *, vin: str, customer_id: str
) -> Grant | None:
    """The customer's open grant (pending, active, suspended) under this contract version
    on ``vin``, the latest if there are several (from before re-consent amended grants)."""
    rows = session.exec(
        select(GrantRow).where(
            GrantRow.contract_id == contract_id,
            GrantRow.contract_version == contract_version,
            GrantRow.vin == vin,
            GrantRow.customer_id == customer_id,
            col(GrantRow.state).in_(["pending", "active", "suspended"]),
        )
    ).all()
    grants = _load_many(session, list(rows))
    return max(
        grants,
        key=lambda g: (g.history[-1].at if g.history else g.valid_from, g.id),
        default=None,
    )
