"""The ingest service: one validation path for every transport.

Per record, in order: parsed -> envelope schema -> category known -> data
against the category's schema -> vehicle known -> not in the future ->
location safeguard (position data of a vehicle whose customer switched location
collection off is counted, never kept) -> stored once by record id. A rejected
record is quarantined with its reason (the raw input encrypted, the reason
without values) and reported per record; the rest of the batch goes on.
A batch is written in one transaction.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from broker.clock import Clock, parse_instant
from broker.documents import DocumentLibrary
from broker.documents.schemas import DocumentError
from broker.store import ingest as ingest_store
from broker.store.database import Database
from broker.store.ingest import KnownVehicle
from broker.store.telemetry_write import NewRecord, store_records, telemetry_aad
from broker.vault.vault import Vault, customer_owner, vehicle_owner
from broker.webhooks.events import announce_records

RECORD_SCHEMA = "urn:vehicle-data-broker:schema:telemetry-record"
POSITION = "vehicle.position"
#: Clock skew tolerated between the car maker's backend and the broker.
FUTURE_TOLERANCE = timedelta(minutes=5)

STORED = "stored"
DUPLICATE = "duplicate"
WITHHELD = "withheld"
REJECTED = "rejected"


@dataclass(frozen=True)
class RawItem:
    """One incoming record as its transport delivered it."""

    value: Any  # the parsed JSON record, or None when it could not be parsed
    position: int  # index in the batch, line number, or message sequence number
    error: str | None = None  # why it could not be parsed
    source_ref: str | None = None  # e.g. the MQTT topic
    raw: bytes | None = None  # the undecodable input, kept (encrypted) in quarantine


@dataclass(frozen=True)
class RecordResult:
    position: int
    record_id: str | None
    status: str  # stored | duplicate | withheld | rejected
    code: str | None = None
    message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"position": self.position, "status": self.status}
        if self.record_id is not None:
            body["record_id"] = self.record_id
        if self.code is not None:
            body["code"] = self.code
            body["message"] = self.message
        return body


@dataclass(frozen=True)
class BatchResult:
    results: tuple[RecordResult, ...]

    def _count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def stored(self) -> int:
        return self._count(STORED)

    @property
    def duplicates(self) -> int:
        return self._count(DUPLICATE)

    @property
    def withheld(self) -> int:
        return self._count(WITHHELD)

    @property
    def rejected(self) -> int:
        return self._count(REJECTED)

    def summary(self) -> dict[str, int]:
        return {
            "received": len(self.results),
            "stored": self.stored,
            "duplicates": self.duplicates,
            "withheld": self.withheld,
            "rejected": self.rejected,
        }


@dataclass(frozen=True)
class _Valid:
    item: RawItem
    record: NewRecord


class IngestService:
    def __init__(
        self, *, database: Database, documents: DocumentLibrary, clock: Clock, vault: Vault
    ) -> None:
        self.database = database
        self.documents = documents
        self.clock = clock
        self.vault = vault

    async def ingest(self, items: Sequence[RawItem], *, source: str) -> BatchResult:
        """Validate and store a batch; one result per item, in the items' order."""
        now = self.clock.now()
        checked = [(item, self._check(item, now)) for item in items]
        return await self.database.write(lambda s: self._write(s, checked, source, now))

    def ingest_sync(self, items: Sequence[RawItem], *, source: str) -> BatchResult:
        now = self.clock.now()
        checked = [(item, self._check(item, now)) for item in items]
        return self.database.run_sync(lambda s: self._write(s, checked, source, now), write=True)

    # -- validation that needs no database ---------------------------------------------------

    def _check(self, item: RawItem, now: datetime) -> _Valid | RecordResult:
        if item.error is not None:
            code = "topic_mismatch" if item.error.startswith("topic_mismatch") else "malformed"
            return _rejected(item, code, item.error)
        value = item.value
        errors = self.documents.schemas.errors(RECORD_SCHEMA, value, echo_values=False)
        if errors:
            return _rejected(item, "invalid_record", _describe(errors))
        category = value["category"]
        if category not in self.documents.catalogue:
            return _rejected(item, "unknown_category", "unknown data category")
        errors = self.documents.catalogue.validate_record_data(category, value["data"])
        if errors:
            return _rejected(item, "invalid_data", _describe(errors, prefix="data"))
        recorded_at = parse_instant(value["recorded_at"])
        if recorded_at > now + FUTURE_TOLERANCE:
            return _rejected(item, "recorded_in_future", "recorded_at is in the future")
        record = NewRecord(value["record_id"], value["vin"], category, recorded_at, value["data"])
        return _Valid(item, record)

    # -- one transaction per batch -----------------------------------------------------------

    def _write(
        self,
        session: Session,
        checked: list[tuple[RawItem, _Valid | RecordResult]],
        source: str,
        now: datetime,
    ) -> BatchResult:
        valid = [c for _, c in checked if isinstance(c, _Valid)]
        vins = {v.record.vin for v in valid} | {
            str(item.value["vin"])
            for item, c in checked
            if isinstance(c, RecordResult) and isinstance(item.value, dict) and "vin" in item.value
        }
        vehicles = ingest_store.vehicles(session, vins)
        existing = ingest_store.existing_ids(session, [v.record.id for v in valid])
        results: dict[int, RecordResult] = {}
        to_store: list[NewRecord] = []
        seen: set[str] = set()
        withheld: Counter[tuple[str, str]] = Counter()
        for index, (_, entry) in enumerate(checked):
            if isinstance(entry, RecordResult):
                results[index] = entry
                continue
            record, item = entry.record, entry.item
            vehicle = vehicles.get(record.vin)
            if vehicle is None:
                results[index] = _rejected(item, "unknown_vehicle", "the vehicle is not known")
            elif record.id in existing or record.id in seen:
                results[index] = RecordResult(item.position, record.id, DUPLICATE)
            elif record.category == POSITION and not vehicle.location_collection:
                withheld[(record.vin, record.category)] += 1
                results[index] = RecordResult(
                    item.position,
                    record.id,
                    WITHHELD,
                    "location_off",
                    "location collection is switched off: counted, not kept",
                )
            else:
                seen.add(record.id)
                to_store.append(record)
                results[index] = RecordResult(item.position, record.id, STORED)
        store_records(
            session, [self._sealed(session, r, vehicles) for r in to_store], received_at=now
        )
        announce_records(session, to_store, now=now)  # webhook events, in this transaction
        ingest_store.count_withheld(session, withheld, day=now.date(), reason="location_off")
        for index, (item, _) in enumerate(checked):
            result = results[index]
            if result.status != REJECTED:
                continue
            owner = _owner_of(item, vehicles, now)
            ingest_store.quarantine(
                session,
                self.vault,
                source=source,
                raw=_raw_bytes(item),
                record_id=result.record_id,
                category=_category_of(item),
                code=result.code or "rejected",
                reason=result.message or "",
                at=now,
                **({"key_owner": owner} if owner else {}),
            )
        return BatchResult(tuple(results[i] for i in range(len(checked))))

    def _sealed(
        self, session: Session, record: NewRecord, vehicles: dict[str, KnownVehicle]
    ) -> NewRecord:
        """The record with its data encrypted if its category is sensitive."""
        if not self.documents.catalogue.category(record.category).encrypted_at_rest:
            return record
        customer = vehicles[record.vin].owner_at(record.recorded_at)
        owner = customer_owner(customer) if customer else vehicle_owner(record.vin)
        blob = self.vault.encrypt_json(
            session, owner, record.data, telemetry_aad(record.id, record.vin, record.category)
        )
        return replace(record, data={}, key_owner=owner, ciphertext=blob)


def _owner_of(item: RawItem, vehicles: dict[str, KnownVehicle], now: datetime) -> str | None:
    """The data key a quarantined input goes under: its vehicle's owner's, when known."""
    if not isinstance(item.value, dict):
        return None
    vehicle = vehicles.get(str(item.value.get("vin")))
    if vehicle is None:
        return None
    customer = vehicle.owner_at(now)
    return customer_owner(customer) if customer else vehicle_owner(vehicle.vin)


def _rejected(item: RawItem, code: str, message: str) -> RecordResult:
    record_id = item.value.get("record_id") if isinstance(item.value, dict) else None
    return RecordResult(
        item.position,
        record_id if isinstance(record_id, str) and len(record_id) <= 128 else None,
        REJECTED,
        code,
        message,
    )


def _describe(errors: list[DocumentError], *, prefix: str = "") -> str:
    first = errors[0]
    path = first.path if not prefix else first.path.replace("$", f"$.{prefix}", 1)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{path}: {first.message}{more}"[:300]


def _raw_bytes(item: RawItem) -> bytes:
    if item.raw is not None:
        return item.raw
    return json.dumps(item.value, sort_keys=True, default=str).encode()


def _category_of(item: RawItem) -> str | None:
    if isinstance(item.value, dict) and isinstance(item.value.get("category"), str):
        category: str = item.value["category"][:64]
        return category
    return None
