"""Test worlds shared by several test folders (importable as ``worlds``: pytest's pythonpath).

A gate world: the demo seed loaded, telemetry stored on demand, a gate wired.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from broker.clock import ManualClock, format_instant
from broker.documents import DocumentLibrary
from broker.gate.gate import Gate
from broker.gate.keyring import Keyring
from broker.gate.notices import issue_notice
from broker.gate.revocation import GrantEnded, RevocationListeners
from broker.ingest.service import IngestService, RawItem
from broker.services.grants import GrantService
from broker.services.seed import apply_seed, read_seed
from broker.settings import Settings
from broker.store.database import Database
from broker.transfer.adequacy import AdequacyTable
from broker.vault.vault import Vault

ROOT = Path(__file__).resolve().parents[1]
COOPER = "WMWXR31002TA10001"  # anna's; insurer grant (coarse location), dev partner, maps
COUNTRYMAN = "WMWXR51093TB20002"  # sold by anna to bram on 2026-03-01
CLUBMAN = "WMW21DH04T2C30003"  # carla's, in the fleet
COOPER_C = "WMWZC31030TE50005"  # carla's, location off
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
MASTER_KEY = bytes(range(32))


@dataclass
class World:
    db: Database
    clock: ManualClock
    gate: Gate
    grants: GrantService
    ended: list[GrantEnded]
    library: DocumentLibrary
    vault: Vault
    ingest: IngestService

    def _ingest(self, records: list[dict[str, Any]]) -> None:
        items = [RawItem(record, index) for index, record in enumerate(records)]
        result = self.ingest.ingest_sync(items, source="test")
        assert result.rejected == 0, [r for r in result.results if r.status == "rejected"]

    def store(self, vin: str, category: str, at: datetime, data: dict[str, Any]) -> str:
        record_id = f"r-{vin[-5:]}-{category}-{int(at.timestamp())}"
        self._ingest([_record(record_id, vin, category, at, data)])
        return record_id

    def drive(self, vin: str, start: datetime, minutes: int) -> None:
        records = []
        for minute in range(minutes):
            at = start + timedelta(minutes=minute)
            stamp = int(at.timestamp())
            position = {"latitude": 52.370216 + minute / 1000, "longitude": 4.895167,
                        "speed_kmh": 50.0, "heading_deg": 90.0, "trip_id": "t1"}  # fmt: skip
            status = {"mileage_km": 1000.0 + minute, "battery_voltage_v": 13.9,
                      "doors_locked": True}  # fmt: skip
            records.append(_record(f"p-{vin[-5:]}-{stamp}", vin, "vehicle.position", at, position))
            records.append(_record(f"s-{vin[-5:]}-{stamp}", vin, "vehicle.status", at, status))
        self._ingest(records)


def _record(
    record_id: str, vin: str, category: str, at: datetime, data: dict[str, Any]
) -> dict[str, Any]:
    return {
        "record_id": record_id,
        "vin": vin,
        "category": category,
        "recorded_at": format_instant(at),
        "data": data,
    }


async def make_world(db: Database) -> World:
    clock = ManualClock(NOW)
    library = DocumentLibrary(Settings().contracts_dir)
    keyring = Keyring(MASTER_KEY)
    ended: list[GrantEnded] = []
    listeners = RevocationListeners()
    adequacy = AdequacyTable.load(Settings().contracts_dir / "adequacy.json")
    listeners.register(
        "notice", lambda session, event: issue_notice(session, event, keyring, adequacy)
    )
    listeners.register("test", lambda _session, event: ended.append(event))
    grants = GrantService(listeners)
    vault = Vault(MASTER_KEY, clock)
    seed = read_seed(library, ROOT / "examples" / "demo-seed.json")
    db.run_sync(lambda s: apply_seed(s, seed, grants, vault=vault, now=NOW), write=True)
    gate = Gate(
        database=db,
        clock=clock,
        adequacy=adequacy,
        keyring=keyring,
        vault=vault,
        free_text=library.catalogue.free_text_targets,
    )
    ingest = IngestService(database=db, documents=library, clock=clock, vault=vault)
    return World(db, clock, gate, grants, ended, library, vault, ingest)
