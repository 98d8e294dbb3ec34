"""Grant use cases that also announce themselves to webhook subscribers.

:class:`AnnouncingGrantService` is the broker's :class:`GrantService` with the
webhook events queued in the same transaction: ``grant.created`` for a grant
active from its creation, ``fleet.vehicle_joined`` and ``fleet.vehicle_left``
for fleet membership. (``grant.ended``/``grant.expired`` come from the
revocation listener :func:`broker.webhooks.events.on_grant_ended`.) What each
event may name is decided when it is sent (:mod:`broker.gate.announce`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from broker.domain.grants import Grant, GrantState
from broker.errors import NotFound
from broker.services.grants import GrantService
from broker.store import audit as audit_store
from broker.store import parties as party_store
from broker.store import webhooks as webhook_store
from broker.webhooks.events import FLEET_JOINED, FLEET_LEFT, announce_grant, on_grant_created


class AnnouncingGrantService(GrantService):
    def create(self, session: Session, **kwargs: Any) -> Grant:
        grant = super().create(session, **kwargs)
        if grant.state is GrantState.ACTIVE:
            on_grant_created(session, grant, now=kwargs["at"])
        return grant

    def join_fleet(self, session: Session, operator_id: str, vin: str, *, at: datetime) -> None:
        """The vehicle joins the operator's fleet from ``at``."""
        audit_store.serialise(session)
        if party_store.vehicle(session, vin) is None:
            raise NotFound("no such vehicle")
        webhook_store.add_fleet_membership(session, operator_id, vin, since=at)
        announce_grant(
            session, FLEET_JOINED, recipient_id=operator_id, contract_id=None, vin=vin,
            grant_id=None, now=at,
        )  # fmt: skip

    def end_fleet_membership(
        self, session: Session, operator_id: str, vin: str, *, at: datetime
    ) -> list[Grant]:
        """The vehicle leaves: one ``fleet.vehicle_left`` per fleet clearance that ended
        (or one naming no grant, which the gate sends only if an earlier clearance's
        notice gives it a handle the operator already holds)."""
        ended = super().end_fleet_membership(session, operator_id, vin, at=at)
        mine: list[Grant | None] = [g for g in ended if g.recipient_id == operator_id]
        for grant in mine or [None]:
            announce_grant(
                session, FLEET_LEFT, recipient_id=operator_id,
                contract_id=grant.contract_id if grant else None, vin=vin,
                grant_id=grant.id if grant else None, now=at,
            )  # fmt: skip
        return ended
