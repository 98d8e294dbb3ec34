"""The vehicle simulator: realistic, valid drives, delivered over real HTTP."""

from __future__ import annotations

import importlib.util
import itertools
import math
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import sqlalchemy as sa
from ingest_app import App
from worlds import NOW, ROOT

from broker.clock import parse_instant
from broker.documents import default_library
from broker.simulator import VehicleState, drive


def simulator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "vehicle_simulator", ROOT / "examples" / "vehicle_simulator.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_drive_is_valid_and_realistic() -> None:
    catalogue = default_library().catalogue
    state = VehicleState("WMWXR31002TA10001", mileage_km=5000.0)
    records = list(drive(state, start=datetime(2026, 3, 1, 8, tzinfo=UTC)))
    for record in records:
        assert catalogue.validate_record_data(record["category"], record["data"]) == []
    positions = [r for r in records if r["category"] == "vehicle.position"]
    assert len(positions) > 40  # about 35 km at motorway speed, a position every 30 s
    for a, b in itertools.pairwise(positions):
        step = math.dist(
            (a["data"]["latitude"], a["data"]["longitude"]),
            (b["data"]["latitude"], b["data"]["longitude"]),
        )
        assert step < 0.02  # about a kilometre: a car, not a teleport
        assert parse_instant(b["recorded_at"]) > parse_instant(a["recorded_at"])
    mileage = [r["data"]["mileage_km"] for r in records if r["category"] == "vehicle.status"]
    assert mileage == sorted(mileage) and mileage[-1] > mileage[0] + 20
    assert len({r["record_id"] for r in records}) == len(records)


def test_any_number_of_vehicles_can_be_driven() -> None:
    module = simulator()
    vins = [module.generated_vin(i) for i in range(40)]
    assert len(set(vins)) == 40
    schemas = default_library().schemas
    for vin in vins:
        assert schemas.errors(
            "urn:vehicle-data-broker:schema:telemetry-record",
            {"record_id": "x", "vin": vin, "category": "vehicle.status",
             "recorded_at": "2026-01-01T00:00:00Z", "data": {}},
        ) == []  # fmt: skip


async def test_the_simulator_feeds_the_broker_over_http(app: App) -> None:
    module = simulator()
    start = NOW.replace(hour=10)
    vins = ["WMWXR31002TA10001", "WMWZC31030TE50005"]
    items: list[Any] = list(module.records(vins, start=start, seed=1))
    off = [r for r in items if r["vin"] == vins[1] and r["category"] == "vehicle.position"]
    totals = await module.send_http(
        iter(items),
        url=str(app.client.make_url("/")),
        client="broker-backend",
        secret="demo-secret-broker-backend",
        batch=100,
    )
    assert totals["rejected"] == 0
    assert totals["received"] == len(items)
    assert totals["withheld"] == len(off) > 20  # the second vehicle has location collection off
    assert totals["stored"] == len(items) - len(off)
    stored_positions = app.broker.database.run_sync(
        lambda s: s.execute(
            sa.text(
                "SELECT count(*) FROM telemetry_record WHERE vin = 'WMWZC31030TE50005' "
                "AND category = 'vehicle.position'"
            )
        ).scalar_one()
    )
    assert stored_positions == 0
