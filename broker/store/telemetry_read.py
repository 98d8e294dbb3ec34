"""The telemetry read API for releases. Only :mod:`broker.gate` may import this module.

import-linter enforces it (``protected`` contract in pyproject.toml): every
byte of vehicle data a recipient sees is read here, by the gate, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from broker.store.tables import TelemetryRecordRow, VehicleRow
from broker.store.telemetry_write import telemetry_aad
from broker.vault.vault import Vault


@dataclass(frozen=True)
class StoredRecord:
    id: str
    vin: str
    category: str
    recorded_at: datetime
    data: dict[str, Any]


@dataclass(frozen=True)
class LocationSetting:
    collection: bool
    sharing: bool


def records(
    session: Session,
    vault: Vault,
    *,
    vins: Collection[str],
    categories: Collection[str],
    since: datetime,
    until: datetime,
    after: tuple[datetime, str] | None = None,
    limit: int | None = None,
) -> list[StoredRecord]:
    """Records of these vehicles and categories in ``[since, until)``, in (time, id) order,
    starting after the ``after`` cursor."""
    if not vins or not categories:
        return []
    query = (
        select(TelemetryRecordRow)
        .where(
            col(TelemetryRecordRow.vin).in_(list(vins)),
            col(TelemetryRecordRow.category).in_(list(categories)),
            TelemetryRecordRow.recorded_at >= since,
            TelemetryRecordRow.recorded_at < until,
        )
        .order_by(col(TelemetryRecordRow.recorded_at), col(TelemetryRecordRow.id))
    )
    if after is not None:
        at, record_id = after
        query = query.where(
            sa.or_(
                col(TelemetryRecordRow.recorded_at) > at,
                sa.and_(
                    col(TelemetryRecordRow.recorded_at) == at,
                    col(TelemetryRecordRow.id) > record_id,
                ),
            )
        )
    if limit is not None:
        query = query.limit(limit)
    found = []
    for row in session.exec(query).all():
        data = dict(row.data)
        if row.ciphertext is not None:
            assert row.key_owner is not None
            aad = telemetry_aad(row.id, row.vin, row.category)
            decrypted = vault.decrypt_json(session, row.key_owner, row.ciphertext, aad)
            if decrypted is None:
                continue  # crypto-shredded: the data no longer exists
            data = decrypted
        found.append(StoredRecord(row.id, row.vin, row.category, row.recorded_at, data))
    return found


def location_settings(session: Session, vins: Collection[str]) -> dict[str, LocationSetting]:
    rows = session.exec(select(VehicleRow).where(col(VehicleRow.vin).in_(list(vins)))).all()
    return {r.vin: LocationSetting(r.location_collection, r.location_sharing) for r in rows}
