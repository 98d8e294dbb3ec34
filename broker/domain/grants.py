"""Grants: a recipient's right to one vehicle's data under one contract.

A grant moves through named states by guarded transitions (never a flag, never
deleted)::

    pending -> active -> revoked | objected | expired | suspended
    suspended -> active | revoked | objected | expired

Which transitions a grant admits depends on how its contract activates grants
(:class:`~broker.domain.legal.Activation`): consent can be withdrawn, legitimate
interest can be objected to, a legal obligation refuses objection, and a fleet
clearance ends with the fleet membership (or, when it rests on legitimate interest,
with the owner's objection: :func:`~broker.domain.legal.admits_objection`). A grant
covers only data recorded while it was active; its history says when that was.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from broker.domain.legal import Activation
from broker.errors import TransitionRefused


class GrantState(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"
    OBJECTED = "objected"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({GrantState.REVOKED, GrantState.OBJECTED, GrantState.EXPIRED})


class GrantAction(StrEnum):
    """What asks for a transition; the guards decide by it."""

    ACTIVATE = "activate"  # consent given, contract booked, or default activation
    WITHDRAW = "withdraw"  # the customer withdraws consent or ends the service contract
    OBJECT = "object"  # the customer objects (Art. 21)
    EXPIRE = "expire"  # validity ended, or the fleet membership ended
    SUSPEND = "suspend"  # the operator suspends (recipient or contract suspended)
    RESUME = "resume"
    OWNER_CHANGED = "owner_changed"  # the vehicle changed hands
    TERMINATE = "terminate"  # the operator ends it (contract ended, recipient removed)
    REFUSE = "refuse"  # the owner refuses a read-out the law lets them refuse (OBFCM, workshop)


_TARGET: dict[GrantAction, GrantState] = {
    GrantAction.ACTIVATE: GrantState.ACTIVE,
    GrantAction.WITHDRAW: GrantState.REVOKED,
    GrantAction.OBJECT: GrantState.OBJECTED,
    GrantAction.EXPIRE: GrantState.EXPIRED,
    GrantAction.SUSPEND: GrantState.SUSPENDED,
    GrantAction.RESUME: GrantState.ACTIVE,
    GrantAction.OWNER_CHANGED: GrantState.REVOKED,
    GrantAction.TERMINATE: GrantState.REVOKED,
    GrantAction.REFUSE: GrantState.REVOKED,
}

_FROM: dict[GrantAction, frozenset[GrantState]] = {
    GrantAction.ACTIVATE: frozenset({GrantState.PENDING}),
    GrantAction.WITHDRAW: frozenset({GrantState.PENDING, GrantState.ACTIVE, GrantState.SUSPENDED}),
    GrantAction.OBJECT: frozenset({GrantState.ACTIVE, GrantState.SUSPENDED}),
    GrantAction.EXPIRE: frozenset({GrantState.PENDING, GrantState.ACTIVE, GrantState.SUSPENDED}),
    GrantAction.SUSPEND: frozenset({GrantState.ACTIVE}),
    GrantAction.RESUME: frozenset({GrantState.SUSPENDED}),
    GrantAction.OWNER_CHANGED: frozenset(
        {GrantState.PENDING, GrantState.ACTIVE, GrantState.SUSPENDED}
    ),
    GrantAction.TERMINATE: frozenset({GrantState.PENDING, GrantState.ACTIVE, GrantState.SUSPENDED}),
    GrantAction.REFUSE: frozenset({GrantState.PENDING, GrantState.ACTIVE, GrantState.SUSPENDED}),
}

#: Which activations admit each action at all (the legal guard).
_ADMITTED: dict[GrantAction, frozenset[Activation]] = {
    GrantAction.WITHDRAW: frozenset({Activation.CONSENT, Activation.CONTRACT}),
    GrantAction.OBJECT: frozenset({Activation.LEGITIMATE_INTEREST, Activation.FLEET_CLEARANCE}),
    GrantAction.OWNER_CHANGED: frozenset({Activation.CONSENT, Activation.CONTRACT}),
    GrantAction.REFUSE: frozenset({Activation.LEGAL_OBLIGATION}),
}

_REFUSAL_REASONS: dict[GrantAction, str] = {
    GrantAction.WITHDRAW: "only consent and service-contract grants can be withdrawn",
    GrantAction.OBJECT: (
        "objection applies to legitimate-interest processing only"
        " (a legal obligation admits no objection)"
    ),
    GrantAction.OWNER_CHANGED: "only grants given by the owner end with a change of owner",
    GrantAction.REFUSE: "only a legally required read-out (such as OBFCM) can be refused",
}


@dataclass(frozen=True)
class GrantEvent:
    """One transition in a grant's history."""

    at: datetime
    action: GrantAction
    from_state: GrantState | None
    to_state: GrantState
    reason: str


@dataclass(frozen=True)
class Grant:
    id: str
    contract_id: str
    contract_version: int
    recipient_id: str
    vin: str
    activation: Activation
    categories: frozenset[str]
    valid_from: datetime
    valid_until: datetime | None = None
    customer_id: str | None = None
    location_precision: str | None = None
    state: GrantState = GrantState.PENDING
    history: tuple[GrantEvent, ...] = field(default_factory=tuple)

    @classmethod
    def create(cls, *, at: datetime, reason: str = "created", **values: object) -> Grant:
        """A new grant in ``pending``, with its creation in its history."""
        grant = cls(**values)  # type: ignore[arg-type]
        if grant.valid_until is not None and grant.valid_until <= grant.valid_from:
            raise ValueError("a grant's validity must end after it starts")
        created = GrantEvent(at, GrantAction.ACTIVATE, None, GrantState.PENDING, reason)
        return replace(grant, state=GrantState.PENDING, history=(created,))

    def allows(self, action: GrantAction) -> str | None:
        """None if ``action`` is allowed now, else why not."""
        if self.state not in _FROM[action]:
            return f"cannot {action.value} a grant that is {self.state.value}"
        admitted = _ADMITTED.get(action)
        if admitted is not None and self.activation not in admitted:
            return _REFUSAL_REASONS[action]
        return None

    def apply(self, action: GrantAction, *, at: datetime, reason: str = "") -> Grant:
        """The grant after ``action``; raises :class:`TransitionRefused` if not allowed."""
        refusal = self.allows(action)
        if refusal is not None:
            raise TransitionRefused(refusal, grant=self.id, action=action.value)
        if self.history and at < self.history[-1].at:
            raise TransitionRefused("a transition cannot predate the grant's last event")
        target = _TARGET[action]
        event = GrantEvent(at, action, self.state, target, reason or action.value)
        return replace(self, state=target, history=(*self.history, event))

    def effective_state(self, now: datetime) -> GrantState:
        """The state at ``now``, counting a passed validity end as expiry."""
        if not self.state.terminal and self.valid_until is not None and now >= self.valid_until:
            return GrantState.EXPIRED
        return self.state

    def is_active(self, now: datetime) -> bool:
        return self.effective_state(now) is GrantState.ACTIVE and now >= self.valid_from

    def active_periods(self) -> list[tuple[datetime, datetime | None]]:
        """When the grant was active: ``[start, end)`` periods, clipped to its validity."""
        periods: list[tuple[datetime, datetime | None]] = []
        opened: datetime | None = None
        for event in self.history:
            if event.to_state is GrantState.ACTIVE and opened is None:
                opened = event.at
            elif event.to_state is not GrantState.ACTIVE and opened is not None:
                periods.append((opened, event.at))
                opened = None
        if opened is not None:
            periods.append((opened, None))
        return [clipped for p in periods if (clipped := self._clip(p)) is not None]

    def _clip(
        self, period: tuple[datetime, datetime | None]
    ) -> tuple[datetime, datetime | None] | None:
        start = max(period[0], self.valid_from)
        end = period[1]
        if self.valid_until is not None:
            end = self.valid_until if end is None else min(end, self.valid_until)
        if end is not None and end <= start:
            return None
        return (start, end)

    def covers(self, recorded_at: datetime) -> bool:
        """Whether data recorded at ``recorded_at`` falls in a period the grant was active."""
        return any(
            start <= recorded_at and (end is None or recorded_at < end)
            for start, end in self.active_periods()
        )
