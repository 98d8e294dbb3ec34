"""Retention: erase what is due, and audit each purge (what kind, how many, up to when).

- Vehicle data: per category, after the catalogue's retention (4 weeks by
  default, ``contracts/categories.json``), overridable per category with
  ``BROKER_RETENTION`` (e.g. ``{"vehicle.position": "P14D"}``).
- Quarantined input: after the longest vehicle-data retention.
- Contract data: a customer's contact data 1 year after their relationship
  ended (no vehicle held, no open grant since then).
- Financial records (``customer.account``): the catalogue's 10 years.

Every step uses the controllable clock, so tests move time instead of waiting.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from broker.audit.entry import AuditEntry
from broker.clock import format_instant
from broker.documents.catalogue import Catalogue
from broker.domain.contracts import IsoDuration
from broker.errors import ConfigurationError
from broker.store import audit as audit_store
from broker.store.tables import (
    CustomerContactRow,
    GrantRow,
    IngestWithheldRow,
    QuarantineRow,
    TelemetryRecordRow,
    VehiclePartyRow,
)

CONTRACT_DATA_RETENTION = timedelta(days=365)
COUNTER_RETENTION = timedelta(days=366)


def parse_overrides(text: str | None, catalogue: Catalogue) -> dict[str, IsoDuration]:
    """``BROKER_RETENTION``: a JSON object of category id -> ISO 8601 duration."""
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"BROKER_RETENTION is not JSON: {exc.msg}") from exc
    if not isinstance(raw, dict):
        raise ConfigurationError("BROKER_RETENTION must be a JSON object")
    overrides = {}
    for category, duration in raw.items():
        if category not in catalogue:
            raise ConfigurationError(f"BROKER_RETENTION names an unknown category {category!r}")
        try:
            overrides[category] = IsoDuration.parse(str(duration))
        except ValueError as exc:
            raise ConfigurationError(f"BROKER_RETENTION[{category}]: {exc}") from exc
    return overrides


def _as_timedelta(duration: IsoDuration) -> timedelta:
    return timedelta(seconds=float(duration.nominal_seconds))


@dataclass
class PurgeReport:
    purged: dict[str, tuple[int, datetime]] = field(default_factory=dict)

    def add(self, kind: str, count: int, up_to: datetime) -> None:
        self.purged[kind] = (count, up_to)

    def as_dict(self) -> dict[str, dict[str, object]]:
        return {
            kind: {"count": count, "up_to": format_instant(up_to)}
            for kind, (count, up_to) in sorted(self.purged.items())
        }


def purge(
    session: Session,
    *,
    now: datetime,
    catalogue: Catalogue,
    overrides: Mapping[str, IsoDuration] | None = None,
) -> PurgeReport:
    """Erase everything whose retention has passed; one audit entry per kind purged."""
    overrides = overrides or {}
    report = PurgeReport()
    longest = timedelta(0)
    for category in catalogue:
        if category.subject.value != "vehicle" and category.id != "customer.account":
            continue
        keep = _as_timedelta(overrides.get(category.id, category.retention))
        longest = max(longest, keep)
        cutoff = now - keep
        deleted = session.execute(
            sa.delete(TelemetryRecordRow).where(
                col(TelemetryRecordRow.category) == category.id,
                col(TelemetryRecordRow.recorded_at) < cutoff,
            )
        )
        report.add(f"telemetry:{category.id}", _count(deleted), cutoff)
    cutoff = now - (longest or timedelta(days=28))
    deleted = session.execute(
        sa.delete(QuarantineRow).where(col(QuarantineRow.received_at) < cutoff)
    )
    report.add("quarantine", _count(deleted), cutoff)
    cutoff = now - COUNTER_RETENTION
    deleted = session.execute(
        sa.delete(IngestWithheldRow).where(col(IngestWithheldRow.day) < cutoff.date())
    )
    report.add("withheld_counters", _count(deleted), cutoff)
    cutoff = now - CONTRACT_DATA_RETENTION
    report.add("contact_data", _purge_contacts(session, cutoff), cutoff)
    _audit(session, report, now)
    return report


def _purge_contacts(session: Session, cutoff: datetime) -> int:
    """Contact data of customers whose relationship ended before ``cutoff``."""
    purged = 0
    for contact in session.exec(select(CustomerContactRow)).all():
        holds = session.exec(
            select(VehiclePartyRow).where(
                VehiclePartyRow.customer_id == contact.customer_id,
                sa.or_(col(VehiclePartyRow.until).is_(None), col(VehiclePartyRow.until) >= cutoff),
            )
        ).first()
        open_grant = session.exec(
            select(GrantRow).where(
                GrantRow.customer_id == contact.customer_id,
                sa.or_(
                    col(GrantRow.state).in_(["pending", "active", "suspended"]),
                    col(GrantRow.updated_at) >= cutoff,
                ),
            )
        ).first()
        if holds is None and open_grant is None and contact.updated_at < cutoff:
            session.delete(contact)
            purged += 1
    return purged


def _count(result: object) -> int:
    rowcount = getattr(result, "rowcount", 0)
    return int(rowcount) if rowcount and rowcount > 0 else 0


def _audit(session: Session, report: PurgeReport, now: datetime) -> None:
    entries = [
        AuditEntry(
            at=now,
            kind="purge",
            decision="recorded",
            record_count=count,
            reasons=(f"retention passed for {kind}",),
            details={"kind": kind, "count": count, "up_to": format_instant(up_to)},
        )
        for kind, (count, up_to) in sorted(report.purged.items())
        if count
    ]
    audit_store.append(session, entries)
