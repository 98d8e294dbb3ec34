"""Anonymisation: trimmed trips, and k-anonymous aggregates instead of records.

Trips: the first and last part of every trip reveal where a driver lives and
works. Every position within ``trip_trim_m`` metres of its trip's first or last
position is dropped (a trip is one ``trip_id`` of one vehicle, in time order);
a position with no trip cannot be trimmed, so it is dropped too.

Aggregates: the remaining records are grouped by (category, grid cell when the
record has a position, time bucket). A group is released only when it holds at
least ``k`` distinct vehicles (k-anonymity, Sweeney 2002,
https://doi.org/10.1142/S0218488502001648); the rest are suppressed and counted.
A released group gives its record and vehicle counts, the count, mean, minimum
and maximum of every numeric field, and how many records reported each text or
boolean value, but only for values reported by at least ``k`` vehicles of the
group. No vehicle or trip identifier is ever part of the output.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from broker.clock import format_instant
from broker.domain.contracts import IsoDuration
from broker.protection.geo import distance_m
from broker.protection.transforms import is_number

#: Means are rounded to this many decimals.
MEAN_DECIMALS: Final = 3


@dataclass(frozen=True)
class TripPoint:
    """A position record as trip trimming sees it; ``key`` is the caller's handle."""

    key: int
    vehicle: str
    trip_id: str | None
    recorded_at: datetime
    latitude: float
    longitude: float


def trim_trips(points: Iterable[TripPoint], trim_m: float) -> frozenset[int]:
    """The keys of the points to drop: near a trip's ends, or on no trip at all.

    ``trim_m`` of 0 trims nothing.
    """
    if trim_m <= 0:
        return frozenset()
    dropped: set[int] = set()
    trips: dict[tuple[str, str], list[TripPoint]] = defaultdict(list)
    for point in points:
        if point.trip_id is None:
            dropped.add(point.key)
        else:
            trips[(point.vehicle, point.trip_id)].append(point)
    for trip in trips.values():
        trip.sort(key=lambda p: (p.recorded_at, p.key))
        ends = (trip[0], trip[-1])
        for point in trip:
            if any(_distance(point, end) < trim_m for end in ends):
                dropped.add(point.key)
    return frozenset(dropped)


def _distance(a: TripPoint, b: TripPoint) -> float:
    return distance_m(a.latitude, a.longitude, b.latitude, b.longitude)


@dataclass(frozen=True)
class Observation:
    """One protected record ready to be aggregated.

    ``cell``: the generalised coordinates (and the grid size) as (name, value)
    pairs, empty when the record has no position. ``vehicle`` only counts
    distinct vehicles and never leaves this module.
    """

    category: str
    vehicle: str
    period_start: datetime
    cell: tuple[tuple[str, float], ...]
    data: Mapping[str, Any]


@dataclass(frozen=True)
class Aggregation:
    groups: tuple[dict[str, Any], ...]
    suppressed: int


@dataclass
class _Group:
    records: int = 0
    vehicles: set[str] = field(default_factory=set)
    numbers: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    values: dict[str, dict[str, list[str]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )

    def add(self, observation: Observation) -> None:
        self.records += 1
        self.vehicles.add(observation.vehicle)
        for name, value in observation.data.items():
            for item in value if isinstance(value, list) else [value]:
                if is_number(item):
                    if not isinstance(value, list):
                        self.numbers[name].append(item)
                elif isinstance(item, str | bool):
                    text = ("true" if item else "false") if isinstance(item, bool) else item
                    self.values[name][text].append(observation.vehicle)


def aggregate(observations: Iterable[Observation], *, k: int, period: IsoDuration) -> Aggregation:
    """Groups of at least ``k`` vehicles, sorted; and how many groups were suppressed."""
    groups: dict[tuple[str, datetime, tuple[tuple[str, float], ...]], _Group] = defaultdict(_Group)
    for observation in observations:
        key = (observation.category, observation.period_start, observation.cell)
        groups[key].add(observation)
    released = []
    suppressed = 0
    for (category, start, cell), group in sorted(groups.items(), key=lambda item: item[0]):
        if len(group.vehicles) < k:
            suppressed += 1
            continue
        released.append(_document(category, start, cell, group, k, period))
    return Aggregation(groups=tuple(released), suppressed=suppressed)


def _document(
    category: str,
    start: datetime,
    cell: tuple[tuple[str, float], ...],
    group: _Group,
    k: int,
    period: IsoDuration,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "category": category,
        "period": {"start": format_instant(start), "duration": str(period)},
        "records": group.records,
        "vehicles": len(group.vehicles),
        "numbers": {
            name: {
                "count": len(values),
                "mean": round(sum(values) / len(values), MEAN_DECIMALS),
                "min": min(values),
                "max": max(values),
            }
            for name, values in sorted(group.numbers.items())
        },
        "values": {},
    }
    for name, counts in sorted(group.values.items()):
        shared = {
            value: len(vehicles)
            for value, vehicles in sorted(counts.items())
            if len(set(vehicles)) >= k
        }
        if shared:
            doc["values"][name] = shared
    if cell:
        doc["cell"] = dict(cell)
    return doc
