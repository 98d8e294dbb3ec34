"""The category catalogue, its field schemas, and the schema set they load into."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from broker.documents import DataSubject, DocumentLibrary, library_for
from broker.documents.schemas import COUNTRY_SCHEMA, parse_document
from broker.errors import ConfigurationError, InvalidDocument, NotFound
from broker.settings import Settings

CONTRACTS_DIR = Settings().contracts_dir
CATEGORY_IDS = {
    "customer.contact",
    "customer.account",
    "vehicle.status",
    "vehicle.position",
    "vehicle.maintenance",
    "vehicle.traffic",
    "vehicle.environment",
    "customer.profile",
    "vehicle.sensor",
    "vehicle.general",
    "vehicle.consumption",
}


@pytest.fixture(scope="module")
def library() -> DocumentLibrary:
    return library_for(CONTRACTS_DIR)


def test_the_catalogue_has_exactly_the_categories_of_the_privacy_notice(
    library: DocumentLibrary,
) -> None:
    assert library.catalogue.ids == CATEGORY_IDS
    assert len(library.catalogue) == len(CATEGORY_IDS)


def test_only_position_data_is_location_data(library: DocumentLibrary) -> None:
    located = {c.id for c in library.catalogue if c.location}
    assert located == {"vehicle.position"}


def test_sensitive_categories_are_encrypted_at_rest(library: DocumentLibrary) -> None:
    encrypted = {c.id for c in library.catalogue if c.encrypted_at_rest}
    assert encrypted == {"vehicle.position", "customer.contact"}


def test_retention_follows_the_privacy_notice(library: DocumentLibrary) -> None:
    catalogue = library.catalogue
    assert str(catalogue.category("customer.account").retention) == "P10Y"
    assert str(catalogue.category("customer.contact").retention) == "P1Y"
    for category in catalogue:
        if category.subject is DataSubject.VEHICLE:
            assert str(category.retention) == "P28D", category.id


def test_every_category_has_a_scope_names_and_a_field_schema(library: DocumentLibrary) -> None:
    raw = json.loads((CONTRACTS_DIR / "categories.json").read_text(encoding="utf-8"))
    for entry, category in zip(raw["categories"], library.catalogue, strict=True):
        assert category.scope == f"{category.id}:read"
        assert category.name.en
        assert category.name.nl
        schema = json.loads((CONTRACTS_DIR / entry["schema"]).read_text(encoding="utf-8"))
        assert schema["$id"] == f"urn:vehicle-data-broker:category:{category.id}"
        assert schema["additionalProperties"] is False
        assert set(schema["properties"]) == category.field_names
        assert category.fields, category.id


def test_field_names_and_types_come_from_the_field_schema(library: DocumentLibrary) -> None:
    catalogue = library.catalogue
    status = catalogue.field_names("vehicle.status")
    assert {"mileage_km", "battery_voltage_v", "doors_locked", "boot_open"} <= status
    assert {"door_open_fl", "door_open_fr", "door_open_rl", "door_open_rr"} <= status
    position = catalogue.category("vehicle.position")
    latitude = position.field("latitude")
    assert latitude is not None
    assert latitude.numeric
    service_date = catalogue.category("vehicle.maintenance").field("next_service_date")
    assert service_date is not None
    assert service_date.temporal
    market = catalogue.category("vehicle.general").field("market")
    assert market is not None
    assert market.types == {"string"}


def test_lookups_fail_loudly(library: DocumentLibrary) -> None:
    with pytest.raises(NotFound):
        library.catalogue.category("vehicle.unknown")
    assert library.catalogue.get("vehicle.unknown") is None
    found = library.catalogue.by_scope("vehicle.status:read")
    assert found is not None
    assert found.id == "vehicle.status"


def test_valid_record_data_passes(library: DocumentLibrary) -> None:
    data = {"latitude": 52.37, "longitude": 4.89, "speed_kmh": 48.5, "trip_id": "t-1"}
    assert library.catalogue.validate_record_data("vehicle.position", data) == []


def test_record_data_errors_have_paths_and_never_repeat_values(library: DocumentLibrary) -> None:
    data = {"latitude": 91.123456, "longitude": "4.89", "altitude_m": 1, "colour": "red"}
    errors = library.catalogue.validate_record_data("vehicle.position", data)
    paths = {e.path for e in errors}
    assert paths == {"$", "$.latitude", "$.longitude"}
    for error in errors:
        assert "91.123456" not in error.message
        assert "4.89" not in error.message
    assert any("colour" in e.message for e in errors)  # a field name is not a value


def test_record_data_of_an_unknown_category_is_refused(library: DocumentLibrary) -> None:
    errors = library.catalogue.validate_record_data("vehicle.unknown", {"x": 1})
    assert [e.path for e in errors] == ["$"]
    with pytest.raises(InvalidDocument) as raised:
        library.catalogue.check_record_data("vehicle.status", {"mileage_km": -1})
    assert raised.value.errors == [{"path": "$.mileage_km", "message": "is less than 0"}]


def test_the_country_schema_is_the_full_iso_list(library: DocumentLibrary) -> None:
    codes = library.schemas.schema(COUNTRY_SCHEMA)["enum"]
    assert len(codes) == 249
    assert {"NL", "DE", "US", "IN", "CH", "CA"} <= set(codes)
    for bad in ("XX", "nl", "NLD", "UK", "EU"):
        assert library.schemas.errors(COUNTRY_SCHEMA, bad), bad


def test_strict_json_refuses_repeated_keys_and_nan() -> None:
    _, errors = parse_document('{"a": 1, "a": 2}')
    assert [e.path for e in errors] == ["$"]
    assert "twice" in errors[0].message
    _, errors = parse_document('{"a": NaN}')
    assert errors
    _, errors = parse_document('{"a": ')
    assert "line 1" in errors[0].message


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "contracts"
    shutil.copytree(CONTRACTS_DIR, target)
    return target


def test_a_reference_outside_the_folder_fails_at_load_not_over_the_network(
    tmp_path: Path,
) -> None:
    contracts_dir = _copy(tmp_path)
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:test:remote",
        "$ref": "https://example.invalid/schema.json",
    }
    (contracts_dir / "schemas" / "remote.schema.json").write_text(json.dumps(schema))
    with pytest.raises(ConfigurationError, match="unresolvable"):
        DocumentLibrary(contracts_dir)


def test_a_broken_catalogue_fails_at_load(tmp_path: Path) -> None:
    contracts_dir = _copy(tmp_path)
    path = contracts_dir / "categories.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["categories"].append(doc["categories"][0])
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigurationError, match="repeated category id"):
        DocumentLibrary(contracts_dir)


def test_the_library_is_built_once_per_folder() -> None:
    assert library_for(CONTRACTS_DIR) is library_for(CONTRACTS_DIR)


def test_free_text_fields_are_marked_in_the_field_schemas() -> None:
    catalogue = DocumentLibrary(Settings().contracts_dir).catalogue
    assert catalogue.free_text_targets == {
        "vehicle.general.model",
        "vehicle.general.colour",
        "customer.profile.news_providers",
        "customer.profile.email_provider",
        "customer.profile.music_providers",
    }
    general = catalogue.category("vehicle.general")
    assert general.field("model").free_text  # type: ignore[union-attr]
    assert not general.field("model_code").free_text  # type: ignore[union-attr]
