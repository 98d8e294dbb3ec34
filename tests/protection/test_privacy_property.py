"""The privacy property: nothing planted in the input survives pseudonymisation or anonymisation.

Generators plant identifiers (the vehicles' VINs, the drivers' names, e-mail
addresses, phone numbers and licence plates, strangers' VINs, e-mail addresses
and phone numbers, and exact positions with 5 or 6 decimals) into known fields,
unknown keys, nested objects and lists under known and unknown keys, and free
text. The whole serialised output (records and fields) must contain none of
them, in any letter case. Pseudonyms must be one per vehicle for a (recipient,
contract), the same in every contract version, and different for another
recipient.

Hypothesis explores the space with shrinking; the slow test runs the same
property over 100,000 payloads drawn from a seeded ``random.Random``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.domain.contracts import Contract, ProtectionLevel
from broker.protection import (
    ProtectedPayload,
    ProtectionContext,
    SourceRecord,
    Subject,
    protect,
    vehicle_reference,
)

MakeContract = Callable[..., Contract]
MakeContext = Callable[..., ProtectionContext]

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
VIN_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
FIRST_NAMES = ["Jan", "Anna", "Pieter", "Sanne", "Mohamed", "Jürgen", "Zoë", "Kees", "Fatma", "Li"]
LAST_NAMES = ["de Vries", "Jansen", "Bakker", "Öztürk", "van den Berg", "Smit", "Meijer", "Wang"]
DOMAINS = ["example.nl", "mail.example.com", "provider.de", "post.example.org"]
CITIES = ["Utrecht", "Amsterdam", "Rotterdam", "Den Haag"]
FILLER = ["parked", "near", "the", "office", "driver", "called", "about", "service", "route", "ok"]
SEPARATORS = [" ", ", ", "; ", " - ", ": ", " (", ") ", " / ", "\n", "\t", " | "]
HOTSPOTS = [(52.37, 4.89), (52.09, 5.12), (51.92, 4.48)]

#: The fields the test contracts share; every generated record keeps at least one.
CATEGORIES = {
    "vehicle.position": ["latitude", "longitude", "speed_kmh", "altitude_m", "trip_id"],
    "vehicle.general": ["model", "colour", "equipment", "build_year"],
    "vehicle.maintenance": ["warning_codes", "oil_level_pct", "next_service_date"],
    "customer.contact": ["name", "email", "phone", "city"],
    "vehicle.traffic": ["event_type", "road_segment_id", "jam_length_m"],
}


# --- what is planted -------------------------------------------------------------------------


@dataclass(frozen=True)
class Driver:
    vin: str
    name: str
    email: str
    phone: str
    plate: str

    @property
    def subject(self) -> Subject:
        return Subject(self.vin, frozenset({self.name, self.email, self.phone, self.plate}))


@dataclass(frozen=True)
class Plants:
    drivers: tuple[Driver, ...]
    stranger_vins: tuple[str, ...]
    stranger_emails: tuple[str, ...]
    stranger_phones: tuple[str, ...]
    positions: tuple[tuple[str, str], ...]  # exact positions as decimal text

    def strings(self) -> set[str]:
        """Every planted string that must not be in the output (positions also with commas)."""
        planted = {*self.stranger_vins, *self.stranger_emails, *self.stranger_phones}
        for d in self.drivers:
            planted |= {d.vin, d.name, d.email, d.phone, d.plate}
        for lat, lon in self.positions:
            planted |= {lat, lon, lat.replace(".", ","), lon.replace(".", ",")}
        return planted

    @property
    def subjects(self) -> dict[str, Subject]:
        return {d.vin: d.subject for d in self.drivers}


def exact_coordinate(base: float, offset_micro: int, six_decimals: bool) -> str:
    """A coordinate near ``base`` as text with exactly 5 or 6 decimals (last one not 0)."""
    micro = round(base * 1_000_000) + offset_micro
    if six_decimals:
        micro += micro % 10 == 0
        text = f"{micro // 1_000_000}.{micro % 1_000_000:06d}"
    else:
        units = micro // 10
        units += units % 10 == 0
        text = f"{units // 100_000}.{units % 100_000:05d}"
    assert repr(float(text)) == text
    return text


def random_plants(rnd: random.Random, vehicles: int) -> Plants:
    """Plants for one batch: a few shared names, so text values can reach k vehicles."""

    def vin() -> str:
        return "".join(rnd.choices(VIN_ALPHABET, k=17))

    names = [f"{rnd.choice(FIRST_NAMES)} {rnd.choice(LAST_NAMES)}" for _ in range(3)]
    drivers = []
    for _ in range(vehicles):
        name = rnd.choice(names)
        drivers.append(
            Driver(
                vin=vin(),
                name=name,
                email=f"{name.split()[0].lower()}.{rnd.randrange(10**6)}@{rnd.choice(DOMAINS)}",
                phone=f"+316{rnd.randrange(10**8):08d}",
                plate=f"{rnd.randrange(10, 99)}-{''.join(rnd.choices('BDFGHJKLNPRSTVXZ', k=3))}-"
                f"{rnd.randrange(1, 9)}",
            )
        )
    positions = []
    for _ in range(rnd.randint(3, 8)):
        lat, lon = rnd.choice(HOTSPOTS)
        positions.append(
            (
                exact_coordinate(lat, rnd.randint(-3000, 3000), rnd.random() < 0.5),
                exact_coordinate(lon, rnd.randint(-3000, 3000), rnd.random() < 0.5),
            )
        )
    return Plants(
        drivers=tuple(drivers),
        stranger_vins=(vin(), vin()),
        stranger_emails=(f"stranger{rnd.randrange(10**6)}@{rnd.choice(DOMAINS)}",),
        stranger_phones=(f"+4915{rnd.randrange(10**8):08d}",),
        positions=tuple(positions),
    )


@st.composite
def plants_strategy(draw: st.DrawFn) -> Plants:
    vins = st.text(alphabet=VIN_ALPHABET, min_size=17, max_size=17)
    word = st.text(
        alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzäöüéèßçñ"), min_size=2, max_size=9
    ).map(lambda w: w[0].upper() + w[1:])
    names = st.builds(lambda a, b: f"{a} {b}", word, word)
    phones = st.integers(10**7, 10**12).map(lambda n: f"+31{n}")
    plates = st.from_regex(r"[0-9]{2}-[B-Z]{3}-[0-9]", fullmatch=True)
    drivers = draw(
        st.lists(
            st.builds(Driver, vin=vins, name=names, email=st.emails(), phone=phones, plate=plates),
            min_size=1,
            max_size=5,
            unique_by=lambda d: d.vin,
        )
    )
    coordinate = st.tuples(st.integers(-3000, 3000), st.booleans())
    positions = draw(
        st.lists(
            st.tuples(st.sampled_from(HOTSPOTS), coordinate, coordinate).map(
                lambda p: (
                    exact_coordinate(p[0][0], *p[1]),
                    exact_coordinate(p[0][1], *p[2]),
                )
            ),
            min_size=1,
            max_size=5,
        )
    )
    return Plants(
        drivers=tuple(drivers),
        stranger_vins=tuple(draw(st.lists(vins, min_size=1, max_size=2))),
        stranger_emails=tuple(draw(st.lists(st.emails(), min_size=1, max_size=2))),
        stranger_phones=tuple(draw(st.lists(phones, max_size=1))),
        positions=tuple(positions),
    )


# --- records with plants in them -------------------------------------------------------------


@dataclass
class Planter:
    """Builds records of a batch, planting identifiers everywhere a record can hold them."""

    rnd: random.Random
    plants: Plants
    trips: dict[str, str] = field(default_factory=dict)

    def identifier(self, driver: Driver) -> str:
        """One planted string: the driver's own, another driver's, a stranger's, or a position."""
        rnd, plants = self.rnd, self.plants
        other = rnd.choice(plants.drivers)
        lat, lon = rnd.choice(plants.positions)
        choices = [
            driver.vin,
            driver.vin.lower(),
            driver.name,
            driver.name.upper(),
            driver.email,
            driver.phone,
            driver.plate,
            other.name,
            other.vin,
            rnd.choice(plants.stranger_vins),
            rnd.choice(plants.stranger_emails),
            lat,
            lon,
            f"{lat},{lon}",
            f"{lat.replace('.', ',')} {lon.replace('.', ',')}",
        ]
        if plants.stranger_phones:
            choices.append(rnd.choice(plants.stranger_phones))
        return rnd.choice(choices)

    def text(self, driver: Driver) -> str:
        """Free text: filler words and planted strings, with separators between them."""
        rnd = self.rnd
        parts = [
            rnd.choice(FILLER) if rnd.random() < 0.4 else self.identifier(driver)
            for _ in range(rnd.randint(1, 5))
        ]
        out = parts[0]
        for part in parts[1:]:
            out += rnd.choice(SEPARATORS) + part
        return out

    def nested(self, driver: Driver, depth: int = 0) -> Any:
        """A nested object or list full of plants."""
        rnd = self.rnd
        if depth >= 2 or rnd.random() < 0.3:
            return self.text(driver)
        if rnd.random() < 0.5:
            return {f"k{i}": self.nested(driver, depth + 1) for i in range(rnd.randint(1, 3))}
        return [self.nested(driver, depth + 1) for _ in range(rnd.randint(1, 3))]

    def scalar_or_plant(self, driver: Driver, value: Any) -> Any:
        """``value``, or in its place plain text, a nested object or a list with plants."""
        roll = self.rnd.random()
        if roll < 0.45:
            return value
        if roll < 0.8:
            return self.text(driver)
        if roll < 0.9:
            return {"text": self.text(driver), "deeper": self.nested(driver)}
        return [self.text(driver), self.nested(driver), value]

    def record(self, index: int) -> SourceRecord:
        rnd = self.rnd
        driver = rnd.choice(self.plants.drivers)
        category = rnd.choice(list(CATEGORIES))
        data = self.data(category, driver)
        for _ in range(rnd.randint(0, 2)):  # unknown keys, flat or nested
            data[rnd.choice(["vin", "driver", "owner", "note", "gps", "meta"])] = (
                self.nested(driver) if rnd.random() < 0.5 else self.identifier(driver)
            )
        at = T0 + timedelta(seconds=rnd.randrange(0, 2 * 3600))
        return SourceRecord(f"rec-{index}", driver.vin, category, at, data)

    def data(self, category: str, driver: Driver) -> dict[str, Any]:
        rnd = self.rnd
        if category == "vehicle.position":
            lat, lon = rnd.choice(self.plants.positions)
            data: dict[str, Any] = {
                "latitude": float(lat),
                "longitude": float(lon),
                "speed_kmh": rnd.randint(0, 130),
                "altitude_m": round(rnd.uniform(-5, 50), 1),
            }
            if rnd.random() < 0.1:
                data["latitude"] = lat  # a position as text in a position field
            if rnd.random() < 0.9:
                trip = self.trips.setdefault(driver.vin, f"trip-{rnd.randrange(100)}")
                data["trip_id"] = trip if rnd.random() < 0.8 else f"trip-{driver.vin}"
            return data
        if category == "vehicle.general":
            return {
                "model": self.scalar_or_plant(driver, "MINI Cooper SE"),
                "colour": self.scalar_or_plant(driver, "green"),
                "equipment": ["sunroof", self.text(driver), {"owner": self.identifier(driver)}],
                "build_year": rnd.choice([2022, 2023, 2024]),
            }
        if category == "vehicle.maintenance":
            return {
                "warning_codes": ["P0420", self.identifier(driver), [self.identifier(driver)]],
                "oil_level_pct": round(rnd.uniform(50, 100), 1),
                "next_service_date": "2026-05-17",
            }
        if category == "customer.contact":
            return {
                "name": driver.name,
                "email": driver.email,
                "phone": driver.phone,
                "city": self.scalar_or_plant(driver, rnd.choice(CITIES)),
            }
        return {
            "event_type": rnd.choice(["jam", "accident"]),
            "road_segment_id": self.scalar_or_plant(driver, "A2:km12"),
            "jam_length_m": rnd.randrange(0, 5000, 100),
        }


def contract_terms(rnd: random.Random, level: str) -> tuple[dict[str, Any], str | None]:
    """Random contract terms for ``level``, and the grant's location precision."""
    transforms: dict[str, dict[str, Any]] = {}
    options: list[tuple[str, dict[str, Any]]] = [
        ("vehicle.position.speed_kmh", {"op": "bucket", "size": 10}),
        ("customer.contact.city", {"op": "pseudonymise"}),
        ("vehicle.position.latitude", {"op": "generalise", "grid_m": 500}),
        ("vehicle.general.model", {"op": "keep"}),
        ("vehicle.maintenance.oil_level_pct", {"op": "round", "decimals": 0}),
        ("vehicle.maintenance.next_service_date", {"op": "bucket", "size": "P1M"}),
    ]
    for target, spec in options:
        if rnd.random() < 0.3:
            transforms[target] = spec
    terms: dict[str, Any] = {
        "level": level,
        "categories": CATEGORIES,
        "transforms": transforms,
        "coarse_grid_m": rnd.choice([None, 250, 1000, 5000]),
    }
    if level == "anonymised":
        terms["anonymisation"] = {
            "grid_m": rnd.choice([250, 1000]),
            "time_bucket": rnd.choice(["PT15M", "PT1H"]),
            "trip_trim_m": rnd.choice([0, 100, 300]),
            "k": rnd.choice([2, 3]),
        }
    else:
        terms["vehicle_identifier"] = rnd.choice(["pseudonym", "pseudonym", "none"])
    return terms, rnd.choice([None, "precise", "coarse"])


# --- the property ----------------------------------------------------------------------------


def serialised(payload: ProtectedPayload) -> str:
    """Everything the recipient receives, as text (non-ASCII kept as is, so it can be found)."""
    return json.dumps(
        {"records": payload.records, "fields": payload.fields}, ensure_ascii=False, sort_keys=True
    )


def leaks(payload: ProtectedPayload, planted: set[str]) -> list[str]:
    text = serialised(payload).casefold()
    return sorted(p for p in planted if p.casefold() in text)


@dataclass
class Stats:
    payloads: int = 0
    batches: int = 0
    records_out: int = 0
    groups_out: int = 0
    text_values_out: int = 0


def check_batch(
    plants: Plants,
    records: list[SourceRecord],
    terms: dict[str, Any],
    precision: str | None,
    make_contract: MakeContract,
    make_context: MakeContext,
    stats: Stats | None = None,
    check_pseudonyms: bool = True,
) -> None:
    contract = make_contract(**terms)
    ctx = make_context(contract, location_precision=precision)
    payload = protect(records, ctx, plants.subjects)
    found = leaks(payload, plants.strings())
    assert not found, f"planted identifiers in the output: {found}\n{serialised(payload)}"
    if stats is not None:
        stats.payloads += len(records)
        stats.batches += 1
        if payload.level is ProtectionLevel.ANONYMISED:
            stats.groups_out += len(payload.records)
            stats.text_values_out += sum(len(g["values"]) for g in payload.records)
        else:
            stats.records_out += len(payload.records)
    if payload.level is ProtectionLevel.ANONYMISED:
        assert all(g["vehicles"] >= contract.protection.anonymisation.k for g in payload.records)  # type: ignore[union-attr]
        assert all("vehicle" not in g for g in payload.records)
        return
    assert len(payload.records) == len(records)  # every record keeps a field
    references = [r.get("vehicle") for r in payload.records]
    vins = {r.vin for r in records}
    if contract.vehicle_identifier.value == "none":
        assert references == [None] * len(references)
        return
    # One pseudonym per vehicle for this (recipient, contract).
    expected = {vin: ctx.pseudonymiser.vehicle(vin) for vin in vins}
    assert set(references) == set(expected.values())
    assert len(set(expected.values())) == len(vins)
    if not check_pseudonyms:
        return
    # Stable across versions: the same terms in a new version give the same payload.
    next_version = make_context(
        make_contract(**terms, version=contract.version + 1), location_precision=precision
    )
    assert protect(records, next_version, plants.subjects).digest() == payload.digest()
    # Different for another recipient (and another contract of the same recipient).
    for other in (
        make_contract(**terms, recipient="rcp-other"),
        make_contract(**terms, contract_id="another-contract"),
    ):
        other_ctx = make_context(other, location_precision=precision)
        theirs = {vehicle_reference(vin, other_ctx) for vin in vins}
        assert not theirs & set(expected.values())


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    plants=plants_strategy(),
    rnd=st.randoms(use_true_random=False),
    count=st.integers(1, 25),
    level=st.sampled_from(["pseudonymised", "anonymised"]),
)
def test_nothing_planted_survives_protection(
    plants: Plants,
    rnd: random.Random,
    count: int,
    level: str,
    make_contract: MakeContract,
    make_context: MakeContext,
) -> None:
    planter = Planter(rnd, plants)
    records = [planter.record(i) for i in range(count)]
    terms, precision = contract_terms(rnd, level)
    check_batch(plants, records, terms, precision, make_contract, make_context)


def test_the_generators_plant_in_every_place_and_anonymised_output_is_not_empty(
    make_contract: MakeContract, make_context: MakeContext
) -> None:
    """The property is not vacuous: plants reach every field, and groups and values come out."""
    rnd = random.Random(7)
    stats = Stats()
    for _ in range(40):
        plants = random_plants(rnd, vehicles=rnd.randint(3, 8))
        planter = Planter(rnd, plants)
        records = [planter.record(i) for i in range(60)]
        raw = json.dumps([r.data for r in records], ensure_ascii=False)
        assert sum(p in raw for p in plants.strings()) >= len(plants.strings()) // 3
        for level in ("pseudonymised", "anonymised"):
            terms, precision = contract_terms(rnd, level)
            check_batch(plants, records, terms, precision, make_contract, make_context, stats)
    assert stats.records_out > 0
    assert stats.groups_out > 0
    assert stats.text_values_out > 0


@pytest.mark.slow
def test_nothing_planted_survives_protection_in_100000_payloads(
    make_contract: MakeContract, make_context: MakeContext
) -> None:
    rnd = random.Random(20260302)
    stats = Stats()
    started = time.perf_counter()
    batch = 0
    while stats.payloads < 100_000:
        plants = random_plants(rnd, vehicles=rnd.randint(2, 10))
        planter = Planter(rnd, plants)
        records = [planter.record(i) for i in range(rnd.randint(20, 80))]
        level = "anonymised" if batch % 2 else "pseudonymised"
        terms, precision = contract_terms(rnd, level)
        check_batch(
            plants,
            records,
            terms,
            precision,
            make_contract,
            make_context,
            stats,
            check_pseudonyms=batch % 10 == 0,
        )
        batch += 1
    elapsed = time.perf_counter() - started
    print(
        f"\nprivacy property: {stats.payloads} payloads in {stats.batches} batches,"
        f" {stats.records_out} records and {stats.groups_out} groups"
        f" ({stats.text_values_out} text fields) released, {elapsed:.1f} s"
    )
    assert stats.groups_out > 0
    assert stats.text_values_out > 0
    assert elapsed < 240
