"""Trip trimming and k-anonymous aggregation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from broker.domain.contracts import IsoDuration
from broker.protection.anonymise import Observation, TripPoint, aggregate, trim_trips
from broker.protection.geo import distance_m

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
PERIOD = IsoDuration.parse("PT15M")
STEP = 0.001  # about 111 m of latitude


def trip(vehicle: str, trip_id: str | None, points: int, first_key: int = 0) -> list[TripPoint]:
    """A straight trip north from 52.0, one point every STEP degrees and every minute."""
    return [
        TripPoint(
            key=first_key + i,
            vehicle=vehicle,
            trip_id=trip_id,
            recorded_at=T0 + timedelta(minutes=i),
            latitude=52.0 + i * STEP,
            longitude=4.0,
        )
        for i in range(points)
    ]


def test_positions_near_the_start_and_end_of_a_trip_are_dropped() -> None:
    points = trip("V1", "t1", 30)
    dropped = trim_trips(points, 500)
    first, last = points[0], points[-1]
    for point in points:
        near_an_end = any(
            distance_m(point.latitude, point.longitude, end.latitude, end.longitude) < 500
            for end in (first, last)
        )
        assert (point.key in dropped) == near_an_end
    # 500 m is 4.5 steps: points 0-4 and 25-29 go, 20 stay.
    assert len(dropped) == 10


def test_ends_are_found_by_time_not_by_input_order() -> None:
    points = trip("V1", "t1", 30)
    assert trim_trips(reversed(points), 500) == trim_trips(points, 500)


def test_trips_are_per_vehicle_and_per_trip_id() -> None:
    a = trip("V1", "t1", 30)
    b = trip("V2", "t1", 10, first_key=100)  # same trip id, another vehicle: its own trip
    dropped = trim_trips([*a, *b], 500)
    assert {p.key for p in b} <= dropped  # a 1 km trip with 500 m trimmed at both ends
    assert len(dropped & {p.key for p in a}) == 10


def test_a_round_trip_loses_every_point_near_home() -> None:
    out = trip("V1", "t1", 20)
    back = [
        TripPoint(p.key + 20, "V1", "t1", T0 + timedelta(minutes=40 - p.key), p.latitude, 4.0)
        for p in out
    ]
    dropped = trim_trips([*out, *back], 300)
    kept = [p for p in [*out, *back] if p.key not in dropped]
    # Start and end are both home: everything within 300 m of it goes, both ways.
    assert all(distance_m(p.latitude, p.longitude, 52.0, 4.0) >= 300 for p in kept)
    assert len(kept) == 2 * 17


def test_positions_without_a_trip_are_dropped_and_zero_trim_drops_nothing() -> None:
    points = trip("V1", None, 5)
    assert trim_trips(points, 500) == {p.key for p in points}
    assert trim_trips(points, 0) == frozenset()


def observation(
    vehicle: str, *, cell: tuple[tuple[str, float], ...] = (), minutes: int = 0, **data: Any
) -> Observation:
    start = T0 + timedelta(minutes=minutes // 15 * 15)
    return Observation("vehicle.position", vehicle, start, cell, data)


CELL = (("latitude", 52.373), ("longitude", 4.893), ("grid_m", 1000))
OTHER_CELL = (("latitude", 52.382), ("longitude", 4.893), ("grid_m", 1000))


def test_groups_with_fewer_than_k_vehicles_are_suppressed_and_counted() -> None:
    observations = [
        # Cell A: 3 vehicles, 4 records.
        observation("V1", cell=CELL, speed_kmh=50),
        observation("V1", cell=CELL, speed_kmh=60),
        observation("V2", cell=CELL, speed_kmh=70),
        observation("V3", cell=CELL, speed_kmh=80),
        # Cell B: 2 vehicles, many records: still fewer than k vehicles.
        *(observation("V4", cell=OTHER_CELL, speed_kmh=s) for s in range(10)),
        observation("V5", cell=OTHER_CELL, speed_kmh=1),
        # Cell A but the next quarter: 1 vehicle.
        observation("V1", cell=CELL, minutes=20, speed_kmh=55),
    ]
    result = aggregate(observations, k=3, period=PERIOD)
    assert result.suppressed == 2
    assert result.groups == (
        {
            "category": "vehicle.position",
            "period": {"start": "2026-03-02T08:00:00Z", "duration": "PT15M"},
            "cell": {"latitude": 52.373, "longitude": 4.893, "grid_m": 1000},
            "records": 4,
            "vehicles": 3,
            "numbers": {"speed_kmh": {"count": 4, "mean": 65.0, "min": 50, "max": 80}},
            "values": {},
        },
    )


def test_exactly_k_vehicles_is_enough() -> None:
    observations = [observation(v, cell=CELL, speed_kmh=1) for v in ("V1", "V2", "V3")]
    assert len(aggregate(observations, k=3, period=PERIOD).groups) == 1
    assert aggregate(observations, k=4, period=PERIOD).suppressed == 1


def test_text_and_boolean_values_are_counted_only_when_k_vehicles_share_them() -> None:
    observations = [
        observation("V1", event_type="jam", fog=True, codes=["P0420", "P0300"], note="Jan"),
        observation("V2", event_type="jam", fog=True, codes=["P0420"], note="Piet"),
        observation("V3", event_type="jam", fog=False, codes=["P0420"], note="Kees"),
        observation("V3", event_type="accident", fog=True),
    ]
    (group,) = aggregate(observations, k=3, period=PERIOD).groups
    assert group["values"] == {
        "codes": {"P0420": 3},
        "event_type": {"jam": 3},
        "fog": {"true": 3},
    }
    assert "cell" not in group


def test_means_are_rounded_and_groups_sorted() -> None:
    observations = [
        observation(v, cell=cell, minutes=m, x=value)
        for v in ("V1", "V2")
        for cell, m, value in ((OTHER_CELL, 20, 1), (CELL, 20, 2), (CELL, 0, 1 + int(v[1])))
    ]
    groups = aggregate(observations, k=2, period=PERIOD).groups
    keys = [(g["period"]["start"], g["cell"]["latitude"]) for g in groups]
    assert keys == sorted(keys)
    assert groups[0]["numbers"]["x"]["mean"] == 2.5
    thirds = aggregate(
        [observation(v, x=x) for v, x in (("V1", 1), ("V2", 1), ("V3", 2))], k=3, period=PERIOD
    )
    assert thirds.groups[0]["numbers"]["x"]["mean"] == 1.333
