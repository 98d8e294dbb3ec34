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

A customer who approves the same recipient, contract and vehicle again while the
grant is open amends it (:meth:`Grant.amend`): it stays one grant, with the
amendment in its history, and its active periods (the range it covers) unchanged.
What an amendment adds (a category, a finer location precision) applies only to
data recorded from the amendment on; what it removes stops at once, for older data
too (:meth:`Grant.terms_at`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from broker.domain.contracts import LocationPrecision
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
    AMEND = "amend"  # the customer approves again, with other terms; the state stays


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
    # An open grant can be amended; a suspended one stays suspended (the operator's
    # suspension is not the customer's to lift), a pending one stays pending.
    GrantAction.AMEND: frozenset({GrantState.PENDING, GrantState.ACTIVE, GrantState.SUSPENDED}),
}

#: Which activations admit each action at all (the legal guard).
_ADMITTED: dict[GrantAction, frozenset[Activation]] = {
    GrantAction.WITHDRAW: frozenset({Activation.CONSENT, Activation.CONTRACT}),
    GrantAction.OBJECT: frozenset({Activation.LEGITIMATE_INTEREST, Activation.FLEET_CLEARANCE}),
    GrantAction.OWNER_CHANGED: frozenset({Activation.CONSENT, Activation.CONTRACT}),
    GrantAction.REFUSE: frozenset({Activation.LEGAL_OBLIGATION}),
    GrantAction.AMEND: frozenset({Activation.CONSENT, Activation.CONTRACT}),
}

_REFUSAL_REASONS: dict[GrantAction, str] = {
    GrantAction.WITHDRAW: "only consent and service-contract grants can be withdrawn",
    GrantAction.OBJECT: (
        "objection applies to legitimate-interest processing only"
        " (a legal obligation admits no objection)"
    ),
    GrantAction.OWNER_CHANGED: "only grants given by the owner end with a change of owner",
    GrantAction.REFUSE: "only a legally required read-out (such as OBFCM) can be refused",
    GrantAction.AMEND: "only a grant a customer gave can be amended by the customer's approval",
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
class Amendment:
    """The terms a customer approved at ``at``: for data recorded from then to the next
    amendment, as far as every later amendment keeps them (:meth:`Grant.terms_at`)."""

    at: datetime
    categories: frozenset[str]
    location_precision: str | None = None


@dataclass(frozen=True)
class Terms:
    """What a grant releases of data recorded at one time."""

    categories: frozenset[str]
    location_precision: str | None


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
    #: The terms in force from each amendment's time on, oldest first; the first holds the
    #: terms the grant was given with (from ``valid_from``). Empty: never amended.
    amendments: tuple[Amendment, ...] = ()

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
        if action is GrantAction.AMEND:  # approved again with the same terms
            return self.amend(
                at=at,
                categories=self.categories,
                location_precision=self.location_precision,
                reason=reason,
            )
        target = _TARGET[action]
        event = GrantEvent(at, action, self.state, target, reason or action.value)
        return replace(self, state=target, history=(*self.history, event))

    def amend(
        self,
        *,
        at: datetime,
        categories: frozenset[str],
        location_precision: str | None,
        reason: str = "",
    ) -> Grant:
        """The grant with new terms from ``at`` on, the amendment in its history; raises
        :class:`TransitionRefused` if the grant cannot be amended.

        The state does not change. Whether the terms fit the contract is the caller's
        to check (:class:`~broker.services.grants.GrantService`).
        """
        refusal = self.allows(GrantAction.AMEND)
        if refusal is not None:
            raise TransitionRefused(refusal, grant=self.id, action=GrantAction.AMEND.value)
        if self.history and at < self.history[-1].at:
            raise TransitionRefused("a transition cannot predate the grant's last event")
        if not categories:
            raise ValueError("a grant covers at least one category")
        given = Amendment(self.valid_from, self.categories, self.location_precision)
        earlier = self.amendments or (given,)
        amendment = Amendment(max(at, self.valid_from), frozenset(categories), location_precision)
        event = GrantEvent(at, GrantAction.AMEND, self.state, self.state, reason or "amended")
        return replace(
            self,
            categories=amendment.categories,
            location_precision=location_precision,
            amendments=(*earlier, amendment),
            history=(*self.history, event),
        )

    def terms_at(self, recorded_at: datetime) -> Terms:
        """What the grant releases of data recorded at ``recorded_at``.

        The categories in force then that every later amendment kept (an addition
        applies only from its amendment on; a removal stops at once, and adding the
        category back later does not revive the older data), at the coarsest location
        precision in force from then on. Whether the grant was active then is
        :meth:`covers`'s to say.
        """
        since = 0  # the amendment in force then (the first, for data before it)
        for index, amendment in enumerate(self.amendments):
            if amendment.at > recorded_at:
                break
            since = index
        categories = self.categories
        precision = self.location_precision
        for amendment in reversed(self.amendments[since:]):
            categories = categories & amendment.categories
            precision = coarser(amendment.location_precision, precision)
        return Terms(categories, precision)

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


def coarser(then: str | None, current: str | None) -> str | None:
    """The coarser of two location precisions; ``current`` when they disclose as much.

    None (no precision named: the contract's terms decide) discloses as much as
    ``precise``; a precision this code does not know counts as coarser than any.
    """
    return then if _detail(then) < _detail(current) else current


def _detail(precision: str | None) -> int:
    if precision is None:
        return LocationPrecision.PRECISE.detail
    try:
        return LocationPrecision(precision).detail
    except ValueError:
        return -1
