"""The telemetry write API: store records idempotently by record id.

There is deliberately no read function here: reading stored telemetry for a
recipient is the gate's alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from broker.store.tables import TelemetryRecordRow


@dataclass(frozen=True)
class NewRecord:
    """A record to store: ``data`` in clear, or (sensitive categories) ``ciphertext``
    under ``key_owner``'s data key with ``data`` left empty."""

    id: str
    vin: str
    category: str
    recorded_at: datetime
    data: dict[str, Any]
    key_owner: str | None = None
    ciphertext: bytes | None = None


def telemetry_aad(record_id: str, vin: str, category: str) -> bytes:
    """What an encrypted record's ciphertext is bound to: it cannot be moved to another row."""
    return f"telemetry:{record_id}:{vin}:{category}".encode()


def store_records(session: Session, records: Sequence[NewRecord], *, received_at: datetime) -> int:
    """Insert the records whose ids are new; returns how many were stored."""
    if not records:
        return 0
    ids = [r.id for r in records]
    existing = set(
        session.exec(select(TelemetryRecordRow.id).where(col(TelemetryRecordRow.id).in_(ids)))
    )
    fresh: dict[str, NewRecord] = {}
    for record in records:
        if record.id not in existing and record.id not in fresh:
            fresh[record.id] = record
    if fresh:
        # A Core bulk insert: building ORM objects cost more than the insert itself.
        session.execute(
            sa.insert(TelemetryRecordRow),
            [
                {
                    "id": r.id,
                    "vin": r.vin,
                    "category": r.category,
                    "recorded_at": r.recorded_at,
                    "received_at": received_at,
                    "data": {} if r.ciphertext is not None else r.data,
                    "key_owner": r.key_owner,
                    "ciphertext": r.ciphertext,
                }
                for r in fresh.values()
            ],
        )
    session.flush()
    return len(fresh)
