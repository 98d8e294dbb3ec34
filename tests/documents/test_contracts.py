"""Contract documents: the samples validate, and each kind of mistake is caught where it is."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from broker.documents import (
    DocumentLibrary,
    contract_from_document,
    library_for,
    load_contract,
    validate_contract,
    validate_contract_file,
)
from broker.domain.contracts import Channel, ProtectionLevel, VehicleIdentifier
from broker.domain.legal import Activation, LegalBasis
from broker.errors import InvalidDocument
from broker.settings import Settings

CONTRACTS_DIR = Settings().contracts_dir
SAMPLES = {
    "insurer-ubi",
    "fleet-operator",
    "development-partner",
    "map-provider-anonymised",
    "dealer-service",
    "eu-obfcm",
}

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def library() -> DocumentLibrary:
    return library_for(CONTRACTS_DIR)


def sample(name: str) -> Doc:
    doc: Doc = json.loads((CONTRACTS_DIR / "samples" / f"{name}.json").read_text("utf-8"))
    return doc


def test_the_six_samples_are_there(library: DocumentLibrary) -> None:
    assert {p.stem for p in library.samples_dir.glob("*.json")} == SAMPLES


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_sample_contract_validates(library: DocumentLibrary, name: str) -> None:
    path = library.samples_dir / f"{name}.json"
    assert validate_contract_file(path, library) == []
    contract = load_contract(path, library)
    assert contract.id == name
    assert contract.document == sample(name)


def test_samples_say_what_the_privacy_notice_says(library: DocumentLibrary) -> None:
    def load(name: str) -> Any:
        return load_contract(library.samples_dir / f"{name}.json", library)

    insurer = load("insurer-ubi")
    assert (insurer.legal_basis, insurer.activation) == (LegalBasis.CONSENT, Activation.CONSENT)
    assert insurer.channels == {Channel.PULL}
    assert insurer.vehicle_identifier is VehicleIdentifier.VIN
    fleet = load("fleet-operator")
    assert fleet.activation is Activation.FLEET_CLEARANCE
    assert fleet.channels == {Channel.WEBHOOK}
    partner = load("development-partner")
    assert partner.protection.level is ProtectionLevel.PSEUDONYMISED
    assert partner.channels == {Channel.DATASPACE}
    maps = load("map-provider-anonymised")
    assert maps.protection.level is ProtectionLevel.ANONYMISED
    assert maps.vehicle_identifier is VehicleIdentifier.NONE
    dealer = load("dealer-service")
    assert not any(c.startswith("customer.") for c in dealer.category_ids)
    obfcm = load("eu-obfcm")
    assert obfcm.legal_basis is LegalBasis.LEGAL_OBLIGATION
    assert obfcm.category_ids == {"vehicle.consumption"}
    assert obfcm.channels == {Channel.EXPORT}


# --- broken contracts, each made from a sample ------------------------------------------------


def _transform(target: str, spec: Doc) -> Callable[[Doc], object]:
    return lambda d: d["protection"].setdefault("transforms", {}).__setitem__(target, spec)


BROKEN: list[tuple[str, str, Callable[[Doc], object], str, str]] = [
    ("missing legal basis", "insurer-ubi", lambda d: d.pop("legal_basis"), "$", "legal_basis"),
    (
        "unknown category",
        "insurer-ubi",
        lambda d: d["categories"].update(
            {"vehicle.telepathy": {"fields": ["x"], "optional": True}}
        ),
        "$.categories['vehicle.telepathy']",
        "not a category",
    ),
    (
        "unknown field",
        "insurer-ubi",
        lambda d: d["categories"]["vehicle.status"]["fields"].append("shoe_size"),
        "$.categories['vehicle.status'].fields[2]",
        "'shoe_size' is not a field of category vehicle.status",
    ),
    (
        "consent without purpose",
        "insurer-ubi",
        lambda d: d["purpose"].pop("description"),
        "$.purpose",
        "'description' is required",
    ),
    *(
        (
            f"country {code}",
            "insurer-ubi",
            (lambda c: lambda d: d.update(processing_countries=["NL", c]))(code),
            "$.processing_countries[1]",
            "Country code",
        )
        for code in ("XX", "nl", "NLD")
    ),
    (
        "activation not admitted",
        "eu-obfcm",
        lambda d: d.update(activation="consent"),
        "$.activation",
        "not admitted by legal basis 6(1)(c)",
    ),
    (
        "anonymised with vin",
        "map-provider-anonymised",
        lambda d: d.update(vehicle_identifier="vin"),
        "$.vehicle_identifier",
        "must be 'none'",
    ),
    (
        "pseudonymised with vin",
        "development-partner",
        lambda d: d.update(vehicle_identifier="vin"),
        "$.vehicle_identifier",
        "only with the identified",
    ),
    (
        "unknown transform op",
        "insurer-ubi",
        _transform("vehicle.position.latitude", {"op": "blur"}),
        "$.protection.transforms['vehicle.position.latitude'].op",
        "is not one of",
    ),
    (
        "transform on a field not in the contract",
        "insurer-ubi",
        _transform("vehicle.status.fuel_level_pct", {"op": "drop"}),
        "$.protection.transforms['vehicle.status.fuel_level_pct']",
        "does not name a field shared",
    ),
    (
        "transform misses its parameter",
        "insurer-ubi",
        _transform("vehicle.position.latitude", {"op": "round"}),
        "$.protection.transforms['vehicle.position.latitude']",
        "'decimals' is a required property",
    ),
    (
        "round on a text field",
        "dealer-service",
        _transform("vehicle.general.model", {"op": "round", "decimals": 1}),
        "$.protection.transforms['vehicle.general.model'].op",
        "round needs a number field",
    ),
    (
        "wrong type for version",
        "insurer-ubi",
        lambda d: d.update(version="1"),
        "$.version",
        "is not of type integer",
    ),
    (
        "version zero",
        "insurer-ubi",
        lambda d: d.update(version=0),
        "$.version",
        "is less than 1",
    ),
    (
        "validity reversed",
        "insurer-ubi",
        lambda d: d.update(
            validity={"from": "2028-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
        ),
        "$.validity.until",
        "must be later than validity.from",
    ),
    (
        "instant without a zone",
        "insurer-ubi",
        lambda d: d["validity"].update({"from": "2026-01-01T00:00:00"}),
        "$.validity.from",
        "Instant",
    ),
    (
        "impossible date",
        "insurer-ubi",
        lambda d: d["validity"].update({"from": "2026-02-30T00:00:00Z"}),
        "$.validity.from",
        "date-time",
    ),
    (
        "position without location terms",
        "insurer-ubi",
        lambda d: d.pop("location"),
        "$",
        "'location' is required",
    ),
    (
        "location terms without position",
        "dealer-service",
        lambda d: d.update(location={"precisions": ["precise"]}),
        "$.location",
        "only when location data is shared",
    ),
    (
        "coarse without a grid",
        "insurer-ubi",
        lambda d: d["location"].pop("coarse_grid_m"),
        "$.location",
        "'coarse_grid_m' is a required property",
    ),
    (
        "anonymised without parameters",
        "map-provider-anonymised",
        lambda d: d["protection"].pop("anonymisation"),
        "$.protection",
        "'anonymisation' is a required property",
    ),
    (
        "no channel",
        "insurer-ubi",
        lambda d: d.update(channels=[]),
        "$.channels",
        "fewer than 1",
    ),
    (
        "unknown channel",
        "insurer-ubi",
        lambda d: d.update(channels=["carrier-pigeon"]),
        "$.channels[0]",
        "is not one of",
    ),
    (
        "bad retention",
        "insurer-ubi",
        lambda d: d.update(retention_at_recipient="1 year"),
        "$.retention_at_recipient",
        "ISO 8601 duration",
    ),
    (
        "bad slug",
        "insurer-ubi",
        lambda d: d.update(id="Insurer UBI"),
        "$.id",
        "Identifier",
    ),
    (
        "unexpected property",
        "insurer-ubi",
        lambda d: d.update(price_eur=12),
        "$",
        "'price_eur' was unexpected",
    ),
]


@pytest.mark.parametrize(
    ("base", "mutate", "path", "message"),
    [case[1:] for case in BROKEN],
    ids=[case[0] for case in BROKEN],
)
def test_broken_contracts_are_rejected_at_their_path(
    library: DocumentLibrary,
    base: str,
    mutate: Callable[[Doc], object],
    path: str,
    message: str,
) -> None:
    doc = sample(base)
    mutate(doc)
    errors = validate_contract(doc, library)
    matching = [e for e in errors if e.path == path and message in e.message]
    assert matching, errors


@pytest.mark.parametrize("case", BROKEN, ids=[case[0] for case in BROKEN])
def test_load_contract_refuses_broken_files(
    library: DocumentLibrary, tmp_path: Path, case: tuple[str, str, Any, str, str]
) -> None:
    _, base, mutate, path, _ = case
    doc = sample(base)
    mutate(doc)
    file = tmp_path / "contract.json"
    file.write_text(json.dumps(doc), encoding="utf-8")
    result = None
    with pytest.raises(InvalidDocument) as raised:
        result = load_contract(file, library)
    assert result is None
    assert path in {e["path"] for e in raised.value.errors}
    assert raised.value.status == 422


def test_every_error_is_reported_not_only_the_first(library: DocumentLibrary) -> None:
    doc = sample("insurer-ubi")
    doc.pop("legal_basis")
    doc["version"] = "2"
    doc["processing_countries"] = ["XX"]
    doc["categories"]["vehicle.status"]["fields"].append("shoe_size")
    with pytest.raises(InvalidDocument) as raised:
        contract_from_document(doc, library)
    paths = [e["path"] for e in raised.value.errors]
    assert paths == [
        "$",
        "$.categories['vehicle.status'].fields[2]",
        "$.processing_countries[0]",
        "$.version",
    ]
    assert "4 errors" in raised.value.detail


def test_the_library_offers_the_same_checks_as_methods(library: DocumentLibrary) -> None:
    path = library.samples_dir / "insurer-ubi.json"
    assert library.validate_contract_file(path) == []
    assert library.load_contract(path) == load_contract(path, library)
    doc = sample("insurer-ubi")
    assert library.contract_from_document(doc).id == "insurer-ubi"
    doc["version"] = 0
    assert [e.path for e in library.validate_contract(doc)] == ["$.version"]


def test_the_default_library_is_the_packaged_one(library: DocumentLibrary) -> None:
    path = library.samples_dir / "eu-obfcm.json"
    assert validate_contract_file(path) == []
    assert load_contract(path).id == "eu-obfcm"


def test_a_document_that_is_not_an_object_is_refused(library: DocumentLibrary) -> None:
    assert [e.path for e in validate_contract([], library)] == ["$"]


def test_unreadable_and_non_json_files_are_errors(library: DocumentLibrary, tmp_path: Path) -> None:
    missing = validate_contract_file(tmp_path / "missing.json", library)
    assert [e.path for e in missing] == ["$"]
    broken = tmp_path / "broken.json"
    broken.write_text('{"id": "x", "id": "y"}', encoding="utf-8")
    (error,) = validate_contract_file(broken, library)
    assert "twice" in error.message
