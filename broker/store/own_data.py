"""A customer's own stored telemetry, for the copy of their data (GDPR Art. 15 and 20).

This is *not* a way out for recipients: those read through the gate alone
(``broker.store.telemetry_read`` is the gate's). Here only the records of the
periods in which the customer owned the vehicle are read, decrypted under
that customer's own data key, for the customer themself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from broker.store.tables import TelemetryRecordRow
from broker.store.telemetry_write import telemetry_aad
from broker.vault.vault import Vault, customer_owner


@dataclass(frozen=True)
class OwnedPeriod:
    vin: str
    since: datetime
    until: datetime | None


@dataclass(frozen=True)
class OwnRecord:
    id: str
    vin: str
    category: str
    recorded_at: datetime
    data: dict[str, Any]


def own_records(
    session: Session, vault: Vault, customer_id: str, periods: Sequence[OwnedPeriod]
) -> list[OwnRecord]:
    """The stored records of each vehicle recorded within the customer's ownership periods.

    Encrypted records are opened only under the customer's own data key; records
    whose key was destroyed (crypto-shredded) no longer exist and are left out.
    """
    own_key = customer_owner(customer_id)
    if not periods:
        return []
    conditions = [
        sa.and_(
            col(TelemetryRecordRow.vin) == p.vin,
            col(TelemetryRecordRow.recorded_at) >= p.since,
            *([col(TelemetryRecordRow.recorded_at) < p.until] if p.until else []),
        )
        for p in periods
    ]
    rows = session.exec(
        select(TelemetryRecordRow)
        .where(sa.or_(*conditions))
        .order_by(
            col(TelemetryRecordRow.vin),
            col(TelemetryRecordRow.recorded_at),
            col(TelemetryRecordRow.id),
        )
    ).all()
    found: list[OwnRecord] = []
    for row in rows:
        data = dict(row.data)
        if row.ciphertext is not None:
            if row.key_owner != own_key:
                continue  # sealed for someone else: not this customer's to read
            aad = telemetry_aad(row.id, row.vin, row.category)
            opened = vault.decrypt_json(session, row.key_owner, row.ciphertext, aad)
            if opened is None:
                continue
            data = opened
        found.append(OwnRecord(row.id, row.vin, row.category, row.recorded_at, data))
    return found
