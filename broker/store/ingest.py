"""Ingest persistence: what validation needs to know, quarantine, and withheld counters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime

from sqlmodel import Session, col, select

from broker.store.tables import (
    IngestWithheldRow,
    QuarantineRow,
    TelemetryRecordRow,
    VehiclePartyRow,
    VehicleRow,
)
from broker.vault.vault import BROKER_QUARANTINE_OWNER, Vault


@dataclass(frozen=True)
class KnownVehicle:
    vin: str
    location_collection: bool
    owners: tuple[tuple[str, datetime, datetime | None], ...]  # (customer, since, until)

    def owner_at(self, when: datetime) -> str | None:
        for customer_id, since, until in self.owners:
            if since <= when and (until is None or when < until):
                return customer_id
        return None


def vehicles(session: Session, vins: Collection[str]) -> dict[str, KnownVehicle]:
    if not vins:
        return {}
    rows = session.exec(select(VehicleRow).where(col(VehicleRow.vin).in_(list(vins)))).all()
    parties = session.exec(
        select(VehiclePartyRow).where(
            col(VehiclePartyRow.vin).in_(list(vins)), VehiclePartyRow.role == "owner"
        )
    ).all()
    owners: dict[str, list[tuple[str, datetime, datetime | None]]] = {}
    for party in parties:
        owners.setdefault(party.vin, []).append((party.customer_id, party.since, party.until))
    return {
        r.vin: KnownVehicle(r.vin, r.location_collection, tuple(owners.get(r.vin, [])))
        for r in rows
    }


def existing_ids(session: Session, ids: Collection[str]) -> set[str]:
    if not ids:
        return set()
    found = session.exec(
        select(TelemetryRecordRow.id).where(col(TelemetryRecordRow.id).in_(list(ids)))
    ).all()
    return set(found)


def count_withheld(
    session: Session, counts: Counter[tuple[str, str]], *, day: date, reason: str
) -> None:
    for (vin, category), count in sorted(counts.items()):
        row = session.get(IngestWithheldRow, (vin, category, day, reason))
        if row is None:
            row = IngestWithheldRow(vin=vin, category=category, day=day, reason=reason, count=0)
        row.count += count
        session.add(row)


def withheld_counts(session: Session, vin: str) -> dict[str, int]:
    rows = session.exec(select(IngestWithheldRow).where(IngestWithheldRow.vin == vin)).all()
    totals: Counter[str] = Counter()
    for row in rows:
        totals[row.category] += row.count
    return dict(totals)


def quarantine(
    session: Session,
    vault: Vault,
    *,
    source: str,
    raw: bytes,
    record_id: str | None,
    category: str | None,
    code: str,
    reason: str,
    at: datetime,
    key_owner: str = BROKER_QUARANTINE_OWNER,
) -> None:
    """Keep a rejected input: the reason in clear (no values), the input encrypted.

    Under the vehicle owner's data key when known (erasing the customer shreds it
    too), else under the broker's quarantine key.
    """
    row = QuarantineRow(
        received_at=at,
        source=source[:16],
        record_id=record_id,
        category=category,
        reason_code=code[:32],
        reason=reason[:300],
        key_owner=key_owner,
        ciphertext=b"",
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    row.ciphertext = vault.encrypt(session, key_owner, raw, _aad(row.id))
    session.add(row)


def quarantined(
    session: Session, vault: Vault, *, limit: int = 100
) -> list[tuple[QuarantineRow, bytes | None]]:
    rows = session.exec(
        select(QuarantineRow).order_by(col(QuarantineRow.id).desc()).limit(limit)
    ).all()
    return [(r, vault.decrypt(session, r.key_owner, r.ciphertext, _aad(r.id or 0))) for r in rows]


def _aad(row_id: int) -> bytes:
    return f"quarantine:{row_id}".encode()
