"""The parties: customers, vehicles (with owners and drivers), fleets and recipients."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum


class Language(StrEnum):
    NL = "nl"
    EN = "en"


@dataclass(frozen=True)
class Period:
    """A half-open period ``[start, end)``; ``end`` None means open-ended."""

    start: datetime
    end: datetime | None = None

    def contains(self, when: datetime) -> bool:
        return self.start <= when and (self.end is None or when < self.end)


@dataclass(frozen=True)
class Customer:
    id: str
    login: str
    language: Language = Language.EN


@dataclass(frozen=True)
class Ownership:
    customer_id: str
    period: Period


@dataclass(frozen=True)
class Vehicle:
    vin: str
    owners: tuple[Ownership, ...] = ()
    secondary_drivers: tuple[Ownership, ...] = ()

    def owner_at(self, when: datetime) -> str | None:
        for ownership in self.owners:
            if ownership.period.contains(when):
                return ownership.customer_id
        return None


class RecipientKind(StrEnum):
    INSURER = "insurer"
    FLEET_OPERATOR = "fleet_operator"
    DEVELOPMENT_PARTNER = "development_partner"
    SERVICE_PARTNER = "service_partner"
    ANONYMISED_DATA_CONSUMER = "anonymised_data_consumer"
    AUTHORITY = "authority"


class RecipientRole(StrEnum):
    """The recipient's role towards the car maker (decides the SCC module)."""

    INDEPENDENT_CONTROLLER = "independent_controller"
    PROCESSOR = "processor"


class RecipientStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


@dataclass(frozen=True)
class SccAgreement:
    """Standard contractual clauses (Commission Decision (EU) 2021/914)."""

    reference: str
    module: int  # 1: C2C, 2: C2P, 3: P2P, 4: P2C
    signed_on: date
    expires_on: date | None
    tia_reference: str | None  # transfer-impact assessment
    tia_review_due: date | None


@dataclass(frozen=True)
class Recipient:
    id: str
    name: str
    kind: RecipientKind
    legal_entity: str
    role: RecipientRole
    headquarters_country: str
    processing_countries: tuple[str, ...]
    storage_countries: tuple[str, ...]
    status: RecipientStatus = RecipientStatus.ACTIVE
    dpf_certified_until: date | None = None  # EU-US Data Privacy Framework
    scc_agreements: tuple[SccAgreement, ...] = field(default_factory=tuple)

    @property
    def active(self) -> bool:
        return self.status is RecipientStatus.ACTIVE


@dataclass(frozen=True)
class FleetMembership:
    fleet_operator_id: str
    vin: str
    period: Period
