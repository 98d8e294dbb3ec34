"""The rules a release must pass, in the gate's order, as pure functions.

recipient active -> contract in force, allowing the channel and the purpose ->
per vehicle, a grant active now and covering each category -> per record, a
time the grant was active -> location safeguard.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from broker.domain.contracts import Channel, Contract
from broker.domain.grants import Grant, GrantState
from broker.domain.parties import Recipient

POSITION = "vehicle.position"


@dataclass(frozen=True)
class Reason:
    """Why something was withheld or denied. ``code`` is stable; ``message`` is for people.

    Messages never name a VIN, a person or a position.
    """

    code: str
    message: str
    category: str | None = None
    count: int = 0

    def text(self) -> str:
        scope = f"{self.category}: " if self.category else ""
        counted = f" ({self.count} record(s))" if self.count else ""
        return f"{scope}{self.message}{counted}"


def check_recipient(recipient: Recipient | None) -> list[Reason]:
    if recipient is None:
        return [Reason("unknown_recipient", "the recipient is not known")]
    if not recipient.active:
        return [Reason("recipient_suspended", "the recipient is suspended")]
    return []


def check_contract(
    contract: Contract | None, recipient_id: str, channel: Channel, purpose: str, now: datetime
) -> list[Reason]:
    if contract is None or contract.recipient != recipient_id:
        return [Reason("unknown_contract", "no such contract for this recipient")]
    reasons = []
    if not contract.is_valid_at(now):
        reasons.append(Reason("contract_not_in_force", "the contract is not in force"))
    if channel not in contract.channels:
        reasons.append(
            Reason(
                "channel_not_allowed", f"the contract does not allow the {channel.value} channel"
            )
        )
    if purpose != contract.purpose.code:
        reasons.append(
            Reason("purpose_mismatch", f"the contract's purpose is {contract.purpose.code}")
        )
    return reasons


_ENDED = {
    GrantState.PENDING: ("grant_pending", "the grant is not active yet"),
    GrantState.SUSPENDED: ("grant_suspended", "the grant is suspended"),
    GrantState.REVOKED: ("grant_revoked", "the grant was revoked"),
    GrantState.OBJECTED: ("grant_objected", "the customer objected"),
    GrantState.EXPIRED: ("grant_expired", "the grant has expired"),
}


def check_grant(grant: Grant | None, now: datetime) -> list[Reason]:
    """Whether a vehicle's grant lets anything out now."""
    if grant is None:
        # Worded so that it never tells whether the vehicle exists.
        return [Reason("no_grant", "no active grant covers this vehicle")]
    state = grant.effective_state(now)
    if state is not GrantState.ACTIVE:
        code, message = _ENDED[state]
        return [Reason(code, message)]
    if now < grant.valid_from:
        return [Reason("grant_not_yet_valid", "the grant's validity has not started")]
    return []


def split_categories(
    requested: frozenset[str], terms: Contract, grant: Grant, location_shared: bool
) -> tuple[frozenset[str], list[Reason]]:
    """The requested categories this grant releases, and why the others are withheld."""
    allowed: set[str] = set()
    withheld: list[Reason] = []
    for category in sorted(requested):
        if category not in terms.category_ids:
            withheld.append(
                Reason("category_not_in_contract", "not in the contract", category=category)
            )
        elif category not in grant.categories:
            withheld.append(
                Reason("category_not_granted", "not covered by the grant", category=category)
            )
        elif category == POSITION and not location_shared:
            withheld.append(
                Reason("location_off", "the customer has switched location off", category=category)
            )
        else:
            allowed.add(category)
    return frozenset(allowed), withheld


def pick_grant(grants: list[Grant], now: datetime) -> Grant | None:
    """The grant that decides for one vehicle: an active one if any, else the latest."""
    if not grants:
        return None
    active = [g for g in grants if g.is_active(now)]
    pool = active or grants
    return max(pool, key=lambda g: (g.history[-1].at if g.history else g.valid_from, g.id))
