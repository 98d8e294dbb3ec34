"""What a channel asks the gate for, and what the gate hands back.

A :class:`Release` can only be made by the gate: it carries a seal (an HMAC
under a per-process key over its audit sequence number and payload digest)
that :func:`verify_release` checks. A channel calls ``verify_release`` before
sending anything, so nothing it did not get from the gate can leave through it.
The other things the gate hands over whole (an event's data,
:mod:`broker.gate.announce`) carry the same seal over their audit sequence
number and :func:`document_digest`, checked with :func:`seal_matches`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from broker.audit.entry import canonical_json
from broker.domain.contracts import Channel
from broker.errors import BrokerError
from broker.policy.release import Reason
from broker.protection.protect import ProtectedPayload

_SEAL_KEY = secrets.token_bytes(32)


@dataclass(frozen=True)
class VehicleTarget:
    """One vehicle, as the broker knows it (the gate never echoes the VIN to a recipient)."""

    vin: str


@dataclass(frozen=True)
class PopulationTarget:
    """Every vehicle whose grant under the contract is active."""


Target = VehicleTarget | PopulationTarget


@dataclass(frozen=True)
class ReleaseRequest:
    recipient_id: str
    contract_id: str
    channel: Channel
    purpose: str
    target: Target
    categories: frozenset[str]
    since: datetime
    until: datetime
    #: The last (recorded_at, record id) seen, from a sealed cursor: never shown to anyone.
    after: tuple[datetime, str] | None = None
    limit: int | None = None
    customer_id: str | None = None  # a customer-bound token: only this customer's grants count
    within_grant: bool = False  # refuse a range that starts before the grant was active
    #: The range is the broker's own (a webhook event's), not chosen by the recipient: read
    #: exactly as given. Otherwise the gate widens it to the contract's time precision, so
    #: bisecting a range tells nothing finer (see :class:`Release` ``since``/``until``).
    exact_range: bool = False


@dataclass(frozen=True)
class Withheld:
    """Something requested that was not released, and why."""

    reason: Reason
    vehicle_ref: str | None = None


@dataclass(frozen=True)
class Release:
    """Data the gate let out: protected, country-checked and already audited."""

    request: ReleaseRequest
    payload: ProtectedPayload
    decision: str  # released | partial
    audit_seq: int
    withheld: tuple[Withheld, ...]
    transfer: dict[str, Any]
    vehicle_refs: tuple[str, ...]
    grant_ids: tuple[str, ...]
    next_after: tuple[datetime, str] | None
    seal: str = field(repr=False)
    #: The range released as the recipient may see it: at the contract's time precision.
    since: datetime | None = None
    until: datetime | None = None

    @property
    def digest(self) -> str:
        return self.payload.digest()


@dataclass(frozen=True)
class Denial:
    """Nothing left the broker; the reasons are logged and audited."""

    request: ReleaseRequest
    reasons: tuple[Reason, ...]
    audit_seq: int

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)


Outcome = Release | Denial


@dataclass(frozen=True)
class Eligibility:
    """Which of a contract's categories a vehicle's model can provide: categories only,
    no data. ``document`` is the answer a channel sends, ``digest`` the SHA-256 of its
    canonical JSON, as in its audit entry (see :mod:`broker.gate.eligibility`)."""

    recipient_id: str
    contract_id: str
    categories: tuple[str, ...]
    audit_seq: int
    document: dict[str, Any] = field(default_factory=dict)
    digest: str = ""


class ForgedRelease(BrokerError):
    code = "forged_release"
    status = 500
    title = "Release not produced by the gate"


def seal_for(audit_seq: int, digest: str) -> str:
    message = f"{audit_seq}:{digest}".encode()
    return hmac.new(_SEAL_KEY, message, hashlib.sha256).hexdigest()


def seal_matches(audit_seq: int, digest: str, seal: str) -> bool:
    """Whether ``seal`` is the gate's seal over (``audit_seq``, ``digest``)."""
    return hmac.compare_digest(seal_for(audit_seq, digest), seal)


def document_digest(document: Mapping[str, Any] | list[Any]) -> str:
    """The SHA-256 of a document's canonical JSON: the payload digest of anything the gate
    hands over whole (an event's data, a notices page), as its audit entry records it."""
    return hashlib.sha256(canonical_json(document)).hexdigest()


def verify_release(release: object) -> Release:
    """The release, if the gate made it; raises :class:`ForgedRelease` otherwise."""
    if not isinstance(release, Release):
        raise ForgedRelease("a channel accepts only releases made by the gate")
    if not seal_matches(release.audit_seq, release.payload.digest(), release.seal):
        raise ForgedRelease("the release's seal does not match its content")
    return release
