"""A vehicle simulator: realistic drives as telemetry records, for demos, tests and benchmarks.

A drive follows a route of waypoints at a plausible speed; positions every 30 s,
status (mileage rising, battery voltage, doors) every 5 min, environment every
10 min, and the maintenance and general data once per drive. Deterministic for a
given seed. Records are plain dicts in the ingest format::

    {"record_id": ..., "vin": ..., "category": ..., "recorded_at": RFC 3339, "data": {...}}
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from broker.clock import format_instant

#: Routes in the Netherlands as (latitude, longitude) waypoints.
ROUTES: dict[str, tuple[tuple[float, float], ...]] = {
    "amsterdam-utrecht": (
        (52.37890, 4.90040),
        (52.35210, 4.91650),
        (52.30860, 4.94510),
        (52.23540, 5.00430),
        (52.16900, 5.05860),
        (52.09070, 5.12140),
    ),
    "rotterdam-den-haag": (
        (51.92440, 4.46970),
        (51.95990, 4.42180),
        (52.00670, 4.36110),
        (52.04590, 4.32660),
        (52.07870, 4.31370),
    ),
    "eindhoven-tilburg": (
        (51.44160, 5.46970),
        (51.46930, 5.38900),
        (51.50630, 5.23230),
        (51.55550, 5.09130),
    ),
}


@dataclass
class VehicleState:
    vin: str
    mileage_km: float = 12_000.0
    fuel_level_pct: float = 80.0
    model: str = "MINI Cooper SE"


def _distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def _heading(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    x = math.sin(lon2 - lon1) * math.cos(lat2)
    y = math.cos(lat1) * math.sin(lat2) - math.sin(lat1) * math.cos(lat2) * math.cos(lon2 - lon1)
    return (math.degrees(math.atan2(x, y)) + 360.0) % 360.0


def _record(vin: str, category: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    stamp = int(at.timestamp())
    return {
        "record_id": f"sim-{vin}-{category}-{stamp}",
        "vin": vin,
        "category": category,
        "recorded_at": format_instant(at),
        "data": data,
    }


def drive(
    vehicle: VehicleState,
    *,
    start: datetime,
    route: str = "amsterdam-utrecht",
    seed: int = 0,
    position_every: timedelta = timedelta(seconds=30),
) -> Iterator[dict[str, Any]]:
    """One drive along ``route`` starting at ``start``; updates ``vehicle`` as it goes."""
    rng = random.Random(f"{vehicle.vin}:{seed}")  # noqa: S311 - simulation, not security
    waypoints = ROUTES[route]
    trip_id = f"trip-{seed}-{int(start.timestamp())}"
    at = start
    yield _record(
        vehicle.vin,
        "vehicle.general",
        at,
        {
            "model": vehicle.model,
            "fuel_type": "electric",
            "build_year": 2024,
            "colour": "British Racing Green",
        },
    )
    yield _record(
        vehicle.vin,
        "vehicle.maintenance",
        at,
        {
            "next_service_km": round(30_000 - vehicle.mileage_km % 30_000, 1),
            "oil_level_pct": round(rng.uniform(70, 95), 1),
            "brake_pad_wear_pct": round(rng.uniform(10, 40), 1),
            "warning_codes": [],
        },
    )
    step_s = position_every.total_seconds()
    tick = 0
    for a, b in itertools.pairwise(waypoints):
        leg_km = _distance_km(a, b)
        speed = rng.uniform(70, 115)
        steps = max(1, math.ceil(leg_km / (speed * step_s / 3600)))
        heading = _heading(a, b)
        for i in range(steps):
            f = i / steps
            lat = a[0] + (b[0] - a[0]) * f + rng.gauss(0, 0.00005)
            lon = a[1] + (b[1] - a[1]) * f + rng.gauss(0, 0.00005)
            kmh = max(0.0, speed + rng.gauss(0, 6))
            yield _record(
                vehicle.vin,
                "vehicle.position",
                at,
                {
                    "latitude": round(lat, 6),
                    "longitude": round(lon, 6),
                    "speed_kmh": round(kmh, 1),
                    "heading_deg": round(heading, 1),
                    "altitude_m": round(rng.uniform(-3, 12), 1),
                    "trip_id": trip_id,
                },
            )
            vehicle.mileage_km += leg_km / steps
            vehicle.fuel_level_pct = max(5.0, vehicle.fuel_level_pct - 0.05)
            if tick % 10 == 0:
                yield _record(
                    vehicle.vin,
                    "vehicle.status",
                    at,
                    {
                        "mileage_km": round(vehicle.mileage_km, 1),
                        "battery_voltage_v": round(rng.uniform(13.6, 14.4), 2),
                        "doors_locked": True,
                        "boot_open": False,
                        "state_of_charge_pct": round(vehicle.fuel_level_pct, 1),
                        "ignition_on": True,
                    },
                )
            if tick % 20 == 0:
                yield _record(
                    vehicle.vin,
                    "vehicle.environment",
                    at,
                    {
                        "outside_temperature_c": round(rng.uniform(4, 14), 1),
                        "precipitation": "none",
                    },
                )
            at += position_every
            tick += 1
    yield _record(
        vehicle.vin,
        "vehicle.status",
        at,
        {
            "mileage_km": round(vehicle.mileage_km, 1),
            "battery_voltage_v": round(rng.uniform(12.3, 12.7), 2),
            "doors_locked": True,
            "boot_open": False,
            "state_of_charge_pct": round(vehicle.fuel_level_pct, 1),
            "ignition_on": False,
        },
    )
