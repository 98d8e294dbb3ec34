"""Contracts as values: reading documents, amendments, and effective terms."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.domain.contracts import (
    Channel,
    Contract,
    IsoDuration,
    LocationPrecision,
    ProtectionLevel,
    TransformOp,
    VehicleIdentifier,
    classify_amendment,
    effective_terms,
)
from broker.settings import Settings

SAMPLES = Settings().contracts_dir / "samples"

Doc = dict[str, Any]


def sample(name: str) -> Doc:
    doc: Doc = json.loads((SAMPLES / f"{name}.json").read_text(encoding="utf-8"))
    return doc


def contract(doc: Doc) -> Contract:
    return Contract.from_document(doc)


def amended(doc: Doc, change: Callable[[Doc], object]) -> Contract:
    new = copy.deepcopy(doc)
    new["version"] += 1
    change(new)
    return contract(new)


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "days"),
    [("P28D", 28), ("P2W", 14), ("PT36H", 1.5), ("P1Y", 365.2425), ("P1M", 365.2425 / 12)],
)
def test_duration_nominal_length(text: str, days: float) -> None:
    assert float(IsoDuration.parse(text).nominal_seconds) == pytest.approx(days * 86_400)


@pytest.mark.parametrize("text", ["P28D", "P1Y", "PT15M", "P2W", "P1Y2M3DT4H5M6S", "PT0S"])
def test_duration_prints_as_parsed(text: str) -> None:
    assert str(IsoDuration.parse(text)) == text


@pytest.mark.parametrize("text", ["", "P", "PT", "P1", "1D", "P1.5D", "P1W2D", "P1DT", "p1d"])
def test_duration_rejects_non_iso(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        IsoDuration.parse(text)


# --- reading a document ----------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.json")), ids=lambda p: p.stem)
def test_samples_round_trip_through_documents(path: Path) -> None:
    original = contract(json.loads(path.read_text(encoding="utf-8")))
    assert contract(original.to_document()) == original


def test_from_document_reads_every_term() -> None:
    ubi = contract(sample("insurer-ubi"))
    assert (ubi.id, ubi.version, ubi.recipient) == ("insurer-ubi", 1, "rcp-insurer")
    assert ubi.channels == {Channel.PULL}
    assert ubi.vehicle_identifier is VehicleIdentifier.VIN
    assert ubi.protection.level is ProtectionLevel.IDENTIFIED
    assert ubi.allows("vehicle.status", "mileage_km")
    assert not ubi.allows("vehicle.status", "fuel_level_pct")
    position = ubi.terms_for("vehicle.position")
    assert position is not None
    assert position.optional
    assert ubi.location is not None
    assert ubi.location.precisions == {LocationPrecision.PRECISE, LocationPrecision.COARSE}
    latitude = ubi.protection.transform_for("vehicle.position.latitude")
    assert latitude is not None
    assert (latitude.op, latitude.decimals) == (TransformOp.ROUND, 4)
    assert ubi.document["id"] == "insurer-ubi"


def test_validity_is_half_open() -> None:
    ubi = contract(sample("insurer-ubi"))
    assert not ubi.is_valid_at(datetime(2025, 12, 31, 23, 59, tzinfo=UTC))
    assert ubi.is_valid_at(datetime(2026, 1, 1, tzinfo=UTC))
    assert not ubi.is_valid_at(datetime(2028, 1, 1, tzinfo=UTC))
    assert contract(sample("dealer-service")).is_valid_at(datetime(2090, 1, 1, tzinfo=UTC))


# --- amendments ------------------------------------------------------------------------------


def _set(path: list[str | int], value: object) -> Callable[[Doc], object]:
    def change(doc: Doc) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


WIDENING = {
    "new category": _set(
        ["categories", "vehicle.maintenance"], {"fields": ["oil_level_pct"], "optional": True}
    ),
    "new field": _set(
        ["categories", "vehicle.status", "fields"], ["mileage_km", "battery_voltage_v", "range_km"]
    ),
    "required category": _set(["categories", "vehicle.position", "optional"], False),
    "new channel": _set(["channels"], ["pull", "webhook"]),
    "longer retention": _set(["retention_at_recipient"], "P2Y"),
    "new country": _set(["processing_countries"], ["NL", "US"]),
    "later end": _set(["validity", "until"], "2029-01-01T00:00:00Z"),
    "open end": lambda doc: doc["validity"].pop("until"),
    "earlier start": _set(["validity", "from"], "2025-06-01T00:00:00Z"),
    "higher rate": _set(["rate_limit"], {"requests": 2, "per": "PT1S"}),
    "weaker transform": _set(
        ["protection", "transforms", "vehicle.position.latitude"], {"op": "round", "decimals": 6}
    ),
    "transform dropped": lambda doc: doc["protection"]["transforms"].pop(
        "vehicle.position.speed_kmh"
    ),
    "finer coarse grid": _set(["location", "coarse_grid_m"], 1000),
}

NARROWING = {
    "category removed": lambda doc: doc["categories"].pop("vehicle.general"),
    "field removed": _set(["categories", "vehicle.status", "fields"], ["mileage_km"]),
    "optional category": _set(["categories", "vehicle.general", "optional"], True),
    "stronger protection": _set(["protection", "level"], "pseudonymised"),
    "shorter retention": _set(["retention_at_recipient"], "P6M"),
    "earlier end": _set(["validity", "until"], "2027-01-01T00:00:00Z"),
    "lower rate": _set(["rate_limit", "requests"], 10),
    "precise location removed": _set(["location", "precisions"], ["coarse"]),
    "stronger transform": _set(
        ["protection", "transforms", "vehicle.position.speed_kmh"], {"op": "drop"}
    ),
}


@pytest.mark.parametrize("change", WIDENING.values(), ids=WIDENING.keys())
def test_widening_amendments_need_consent(change: Callable[[Doc], object]) -> None:
    old = sample("insurer-ubi")
    result = classify_amendment(contract(old), amended(old, change))
    assert result.needs_consent
    assert result.widens
    assert not result.narrows


@pytest.mark.parametrize("change", NARROWING.values(), ids=NARROWING.keys())
def test_narrowing_amendments_apply_at_once(change: Callable[[Doc], object]) -> None:
    old = sample("insurer-ubi")
    result = classify_amendment(contract(old), amended(old, change))
    assert result.narrows
    assert not result.widens


def test_reasons_name_what_changed() -> None:
    old = sample("insurer-ubi")
    result = classify_amendment(contract(old), amended(old, _set(["processing_countries"], ["DE"])))
    assert result.widens == ("processing country added: DE",)
    assert result.narrows == ("processing country removed: NL",)


def test_identifier_revealing_more_widens() -> None:
    old = sample("development-partner")
    new = amended(
        old,
        lambda d: d.update(vehicle_identifier="vin", protection={"level": "identified"}),
    )
    result = classify_amendment(contract(old), new)
    assert "vehicle identifier reveals more: pseudonym -> vin" in result.widens
    assert "protection weaker: pseudonymised -> identified" in result.widens


def test_precise_location_newly_allowed_widens() -> None:
    old = sample("map-provider-anonymised")
    new = amended(old, _set(["location", "precisions"], ["precise", "coarse"]))
    assert classify_amendment(contract(old), new).widens == ("precise location newly allowed",)


def test_a_new_purpose_is_a_new_agreement() -> None:
    old = sample("insurer-ubi")
    new = amended(old, _set(["purpose", "code"], "marketing"))
    result = classify_amendment(contract(old), new)
    assert result.needs_consent
    assert result.narrows == result.widens
    assert effective_terms(contract(old), new).categories == ()


def test_versions_of_different_contracts_do_not_compare() -> None:
    with pytest.raises(ValueError, match="contract id"):
        classify_amendment(contract(sample("insurer-ubi")), contract(sample("dealer-service")))
    with pytest.raises(ValueError, match="one contract"):
        effective_terms(contract(sample("insurer-ubi")), contract(sample("dealer-service")))


# --- effective terms -------------------------------------------------------------------------


def test_narrowing_applies_to_existing_grants_at_once() -> None:
    v1 = sample("insurer-ubi")
    v2 = amended(v1, _set(["categories", "vehicle.status", "fields"], ["mileage_km"]))
    terms = effective_terms(contract(v1), v2)
    assert terms.version == 2
    assert terms.allows("vehicle.status", "mileage_km")
    assert not terms.allows("vehicle.status", "battery_voltage_v")


def test_widening_waits_for_new_consent() -> None:
    v1 = sample("insurer-ubi")
    v2 = amended(
        v1,
        lambda d: d.update(
            channels=["pull", "webhook"],
            retention_at_recipient="P3Y",
            processing_countries=["NL", "US"],
        ),
    )
    terms = effective_terms(contract(v1), v2)
    assert terms.channels == {Channel.PULL}
    assert str(terms.retention_at_recipient) == "P1Y"
    assert terms.processing_countries == {"NL"}


def test_effective_terms_keep_the_stronger_protection() -> None:
    v1 = sample("insurer-ubi")
    v2 = amended(
        v1,
        lambda d: d.update(
            protection={
                "level": "pseudonymised",
                "transforms": {"vehicle.position.latitude": {"op": "round", "decimals": 2}},
            },
            vehicle_identifier="pseudonym",
        ),
    )
    terms = effective_terms(contract(v1), v2)
    assert terms.protection.level is ProtectionLevel.PSEUDONYMISED
    assert terms.vehicle_identifier is VehicleIdentifier.PSEUDONYM
    latitude = terms.protection.transform_for("vehicle.position.latitude")
    assert latitude is not None
    assert latitude.decimals == 2
    speed = terms.protection.transform_for("vehicle.position.speed_kmh")
    assert speed is not None
    assert speed.op is TransformOp.BUCKET  # kept from the consented version


def test_incomparable_transforms_drop_the_field() -> None:
    v1 = sample("insurer-ubi")
    v2 = amended(
        v1,
        _set(
            ["protection", "transforms", "vehicle.position.speed_kmh"],
            {"op": "round", "decimals": 0},
        ),
    )
    speed = effective_terms(contract(v1), v2).protection.transform_for("vehicle.position.speed_kmh")
    assert speed is not None
    assert speed.op is TransformOp.DROP


def test_location_precision_falls_back_to_coarse() -> None:
    v1 = sample("insurer-ubi")  # precise and coarse
    v2 = amended(v1, _set(["location"], {"precisions": ["coarse"], "coarse_grid_m": 10000}))
    terms = effective_terms(contract(v1), v2)
    assert terms.location is not None
    assert terms.location.precisions == {LocationPrecision.COARSE}
    assert terms.location.coarse_grid_m == 10000


# --- properties ------------------------------------------------------------------------------

FIELDS = {
    "vehicle.status": ("mileage_km", "battery_voltage_v", "fuel_level_pct"),
    "vehicle.position": ("latitude", "longitude", "speed_kmh"),
    "vehicle.general": ("model", "build_year"),
}
INSTANTS = ("2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z")
LATER = ("2027-06-01T00:00:00Z", "2028-01-01T00:00:00Z", None)


def _subset(values: tuple[str, ...] | list[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), min_size=1, unique=True)


TRANSFORMS: st.SearchStrategy[Doc] = st.one_of(
    st.sampled_from([{"op": "keep"}, {"op": "drop"}, {"op": "pseudonymise"}]),
    st.builds(lambda d: {"op": "round", "decimals": d}, st.integers(0, 5)),
    st.builds(
        lambda s: {"op": "bucket", "size": s}, st.sampled_from([1, 5, 10.5, "PT15M", "PT1H"])
    ),
    st.builds(lambda g: {"op": "generalise", "grid_m": g}, st.sampled_from([100, 1000])),
)


@st.composite
def contract_documents(draw: st.DrawFn) -> Doc:
    fields = {cid: draw(_subset(FIELDS[cid])) for cid in draw(_subset(list(FIELDS)))}
    categories = {cid: {"fields": f, "optional": draw(st.booleans())} for cid, f in fields.items()}
    targets = [f"{cid}.{name}" for cid, names in fields.items() for name in names]
    level = draw(st.sampled_from(["identified", "pseudonymised", "anonymised"]))
    identifiers = {
        "identified": ["vin", "pseudonym", "none"],
        "pseudonymised": ["pseudonym", "none"],
        "anonymised": ["none"],
    }[level]
    protection: Doc = {
        "level": level,
        "transforms": draw(st.dictionaries(st.sampled_from(targets), TRANSFORMS, max_size=3)),
    }
    if level == "anonymised":
        protection["anonymisation"] = {
            "grid_m": draw(st.sampled_from([500, 1000])),
            "time_bucket": draw(st.sampled_from(["PT5M", "PT15M", "PT1H"])),
            "trip_trim_m": draw(st.sampled_from([0, 500])),
            "k": draw(st.sampled_from([2, 5, 10])),
        }
    validity: Doc = {"from": draw(st.sampled_from(INSTANTS))}
    until = draw(st.sampled_from(LATER))
    if until is not None:
        validity["until"] = until
    doc: Doc = {
        "id": "c",
        "version": draw(st.integers(1, 3)),
        "title": {"en": "t", "nl": "t"},
        "recipient": "rcp-x",
        "purpose": {"code": "p"},
        "legal_basis": "6(1)(a)",
        "activation": "consent",
        "categories": categories,
        "protection": protection,
        "channels": draw(_subset(["pull", "webhook", "dataspace", "export"])),
        "vehicle_identifier": draw(st.sampled_from(identifiers)),
        "retention_at_recipient": draw(st.sampled_from(["P28D", "P1M", "P1Y", "P2W"])),
        "rate_limit": {
            "requests": draw(st.integers(1, 100)),
            "per": draw(st.sampled_from(["PT1S", "PT1M", "PT1H"])),
        },
        "validity": validity,
        "processing_countries": draw(_subset(["NL", "DE", "BE", "US", "IN"])),
    }
    if "vehicle.position" in categories:
        precisions = draw(_subset(["precise", "coarse"]))
        location: Doc = {"precisions": precisions}
        if "coarse" in precisions or draw(st.booleans()):
            location["coarse_grid_m"] = draw(st.sampled_from([1000, 5000]))
        doc["location"] = location
    return doc


CONTRACTS = contract_documents().map(Contract.from_document)


def assert_allows_no_more(terms: Contract, version: Contract) -> None:
    """Check 'never wider' directly, without trusting classify_amendment."""
    for t in terms.categories:
        allowed = version.terms_for(t.category)
        assert allowed is not None
        assert t.fields <= allowed.fields
    assert terms.protection.level.strength >= version.protection.level.strength
    assert terms.vehicle_identifier.disclosure <= version.vehicle_identifier.disclosure
    assert terms.channels <= version.channels
    assert terms.processing_countries <= version.processing_countries
    assert (
        terms.retention_at_recipient.nominal_seconds
        <= version.retention_at_recipient.nominal_seconds
    )
    assert terms.rate_limit.per_second <= version.rate_limit.per_second
    assert terms.valid_from >= version.valid_from
    if version.valid_until is not None:
        assert terms.valid_until is not None
        assert terms.valid_until <= version.valid_until
    if terms.location is not None and terms.categories:
        assert version.location is not None
        top = terms.location.most_detailed
        assert top is None or top.detail <= max(p.detail for p in version.location.precisions)


@settings(max_examples=150, deadline=None)
@given(CONTRACTS)
def test_a_version_compared_with_itself_is_unchanged(c: Contract) -> None:
    assert classify_amendment(c, c).unchanged


@settings(max_examples=150, deadline=None)
@given(CONTRACTS)
def test_documents_round_trip(c: Contract) -> None:
    assert Contract.from_document(c.to_document()) == c


@settings(max_examples=300, deadline=None)
@given(CONTRACTS, CONTRACTS)
def test_effective_terms_are_never_wider_than_either_version(a: Contract, b: Contract) -> None:
    terms = effective_terms(a, b)
    assert not classify_amendment(a, terms).widens
    assert not classify_amendment(b, terms).widens
    assert_allows_no_more(terms, a)
    assert_allows_no_more(terms, b)


@settings(max_examples=150, deadline=None)
@given(CONTRACTS)
def test_effective_terms_of_one_version_are_that_version(c: Contract) -> None:
    assert effective_terms(c, c) == c


@settings(max_examples=300, deadline=None)
@given(CONTRACTS, CONTRACTS)
def test_what_widens_one_way_narrows_the_other(a: Contract, b: Contract) -> None:
    forward, backward = classify_amendment(a, b), classify_amendment(b, a)
    assert len(forward.widens) == len(backward.narrows)
    assert len(forward.narrows) == len(backward.widens)


@settings(max_examples=200, deadline=None)
@given(CONTRACTS, CONTRACTS, st.sampled_from(INSTANTS + LATER[:-1]))
def test_effective_terms_are_valid_only_when_both_are(a: Contract, b: Contract, when: str) -> None:
    instant = datetime.fromisoformat(when)
    if effective_terms(a, b).is_valid_at(instant):
        assert a.is_valid_at(instant)
        assert b.is_valid_at(instant)
