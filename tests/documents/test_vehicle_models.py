"""The vehicle-model catalogue: VIN decoding (WMI and model code), what each model can
provide, and the rules that refuse a catalogue before the broker uses it."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from worlds import CLUBMAN, COOPER, COOPER_C, COUNTRYMAN, ROOT

from broker.documents import DocumentLibrary, library_for
from broker.documents.vehicle_models import (
    VEHICLE_MODELS_FILE,
    validate_vehicle_models,
    vehicle_models_from_document,
)
from broker.domain.vehicle_models import Powertrain, VehicleModels
from broker.errors import ConfigurationError
from broker.settings import Settings

CONTRACTS_DIR = Settings().contracts_dir


@pytest.fixture(scope="module")
def library() -> DocumentLibrary:
    return library_for(CONTRACTS_DIR)


@pytest.fixture(scope="module")
def models(library: DocumentLibrary) -> VehicleModels:
    return library.vehicle_models


def document() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((CONTRACTS_DIR / VEHICLE_MODELS_FILE).read_text())
    return doc


def test_every_demo_vehicle_decodes_to_its_model(models: VehicleModels) -> None:
    seed = json.loads((ROOT / "examples" / "demo-seed.json").read_text(encoding="utf-8"))
    for vehicle in seed["vehicles"]:
        model = models.decode(vehicle["vin"])
        assert model is not None and model.name == vehicle["model"], vehicle["vin"]
    named = {COOPER: "Mini Cooper SE", COUNTRYMAN: "Mini Countryman", CLUBMAN: "Mini Clubman",
             COOPER_C: "Mini Cooper C"}  # fmt: skip
    assert {vin: getattr(models.decode(vin), "name", None) for vin in named} == named


def test_the_model_comes_from_the_wmi_and_the_model_code_only(models: VehicleModels) -> None:
    # Same WMI and model code (positions 4-7), any serial number: the same model.
    assert models.decode("WMWXR31002TA19999") == models.decode(COOPER)
    assert models.decode("WMWXR319ZZAB00000") == models.decode(COOPER)
    # Another model code, another maker's WMI, or not a VIN at all: no model.
    for vin in ("WMW00000000000000", "WMWXR32002TA10001", "WBAXR31002TA10001",
                "WMWXR31002TA1000", "WMWXR31002TA100011", "wmwxr31002ta10001",
                "WMWXR31002TA1000O", ""):  # fmt: skip
        assert models.decode(vin) is None, vin
        assert models.provides(vin) == frozenset()


def test_what_a_model_can_provide_follows_its_equipment(models: VehicleModels) -> None:
    electric, petrol = models.decode(COOPER), models.decode(COOPER_C)
    assert electric is not None and electric.powertrain is Powertrain.BATTERY_ELECTRIC
    assert petrol is not None and petrol.powertrain is Powertrain.COMBUSTION
    assert "vehicle.consumption" not in electric.provides  # no fuel-consumption monitor
    assert "vehicle.consumption" in petrol.provides
    unconnected = next(m for m in models if "telematics-unit" not in {e.id for e in m.equipment})
    assert "vehicle.position" not in unconnected.provides  # position needs a telematics unit
    assert "vehicle.status" in unconnected.provides
    # A vehicle never provides customer data.
    assert all(not c.startswith("customer.") for m in models for c in m.provides)


def test_the_catalogue_is_versioned_and_valid(library: DocumentLibrary) -> None:
    doc = document()
    assert doc["version"] >= 1 and library.vehicle_models.version == doc["version"]
    assert validate_vehicle_models(doc, library.schemas, library.catalogue) == []


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (lambda d: d["models"][1]["codes"].append("XR31"), "$.models[1].codes[1]",
         "already names another model"),
        (lambda d: d["models"][0]["equipment"].append("obfcm-device"), "$.models[0].equipment[4]",
         "does not fit a battery-electric model"),
        (lambda d: d["models"][0]["equipment"].append("jetpack"), "$.models[0].equipment[4]",
         "unknown equipment"),
        (lambda d: d["models"][0]["codes"].append("XR3"), "$.models[0].codes[1]",
         "4 characters"),
        (lambda d: d["models"][0].update(wmi="WBA"), "$.models[0].wmi", "unknown make"),
        (lambda d: d["equipment"][0]["provides"].append("customer.contact"),
         "$.equipment[0].provides[3]", "only vehicle data"),
        (lambda d: d["equipment"][0]["provides"].append("vehicle.smell"),
         "$.equipment[0].provides[3]", "unknown data category"),
        (lambda d: d["makes"][0]["model_code"].update(position=8), "$.makes[0].model_code",
         "positions 4-9"),
        (lambda d: d["models"][0]["codes"].append("XO31"), "$.models[0].codes[1]", "match"),
        (lambda d: d.pop("version"), "$", "version"),
    ],
)  # fmt: skip
def test_a_wrong_catalogue_is_refused_with_the_place(
    library: DocumentLibrary, change: Any, path: str, message: str
) -> None:
    doc = copy.deepcopy(document())
    change(doc)
    errors = validate_vehicle_models(doc, library.schemas, library.catalogue)
    assert any(e.path == path and message in e.message for e in errors), errors


def test_a_broken_catalogue_fails_at_load(tmp_path: Path) -> None:
    contracts_dir = tmp_path / "contracts"
    shutil.copytree(CONTRACTS_DIR, contracts_dir)
    doc = document()
    doc["models"].append(doc["models"][0])
    (contracts_dir / VEHICLE_MODELS_FILE).write_text(json.dumps(doc))
    with pytest.raises(ConfigurationError, match="repeated id"):
        DocumentLibrary(contracts_dir)
    (contracts_dir / VEHICLE_MODELS_FILE).unlink()
    with pytest.raises(ConfigurationError, match="vehicle-model catalogue"):
        DocumentLibrary(contracts_dir)


def test_a_catalogue_built_from_a_document_decodes_by_it() -> None:
    doc = copy.deepcopy(document())
    doc["makes"][0]["model_code"] = {"position": 5, "length": 2}
    doc["models"] = [{"id": "test", "name": "Test", "wmi": "WMW", "codes": ["R3"],
                      "powertrain": "hybrid", "equipment": ["obfcm-device"]}]  # fmt: skip
    models = vehicle_models_from_document(doc)
    model = models.decode(COOPER)  # WMW X[R3]1...
    assert model is not None and model.provides == frozenset({"vehicle.consumption"})
