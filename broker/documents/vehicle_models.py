"""The vehicle-model catalogue (``contracts/vehicle-models.json``), checked and loaded.

First JSON Schema (``schemas/vehicle-models.schema.json``), then the rules that
span entries: unique ids, makes and model codes; a model's WMI is a known make
and its codes have that make's code length; every equipment a model names
exists and fits the model's powertrain (no fuel-consumption monitor in an
electric car); equipment provides only vehicle categories of the category
catalogue. The result is a :class:`~broker.domain.vehicle_models.VehicleModels`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from broker.documents.catalogue import Catalogue, DataSubject
from broker.documents.schemas import DocumentError, SchemaSet, json_path, read_document
from broker.domain.contracts import LocalizedText
from broker.domain.vehicle_models import (
    Equipment,
    Make,
    Powertrain,
    VehicleModel,
    VehicleModels,
)
from broker.errors import ConfigurationError

VEHICLE_MODELS_FILE = "vehicle-models.json"
VEHICLE_MODELS_SCHEMA = "urn:vehicle-data-broker:schema:vehicle-models"


def validate_vehicle_models(
    doc: Any, schemas: SchemaSet, catalogue: Catalogue
) -> list[DocumentError]:
    """Every problem of a model catalogue document; empty when it may be used."""
    return schemas.errors(VEHICLE_MODELS_SCHEMA, doc) or _rule_errors(doc, catalogue)


def vehicle_models_from_document(doc: Mapping[str, Any]) -> VehicleModels:
    """The catalogue of a document :func:`validate_vehicle_models` accepted."""
    equipment = {
        e["id"]: Equipment(
            id=e["id"],
            name=LocalizedText.from_document(e["name"]),
            provides=frozenset(e["provides"]),
            powertrains=frozenset(Powertrain(p) for p in e.get("powertrains", ())),
        )
        for e in doc["equipment"]
    }
    makes = [
        Make(m["wmi"], m["name"], m["model_code"]["position"], m["model_code"]["length"])
        for m in doc["makes"]
    ]
    models = [
        VehicleModel(
            id=m["id"],
            name=m["name"],
            wmi=m["wmi"],
            codes=frozenset(m["codes"]),
            powertrain=Powertrain(m["powertrain"]),
            equipment=tuple(equipment[e] for e in m["equipment"]),
        )
        for m in doc["models"]
    ]
    return VehicleModels(doc["version"], makes, models)


def load_vehicle_models(schemas: SchemaSet, catalogue: Catalogue) -> VehicleModels:
    """Read and check the contracts folder's model catalogue (a start-up error if invalid)."""
    path: Path = schemas.contracts_dir / VEHICLE_MODELS_FILE
    doc, errors = read_document(path)
    errors = errors or validate_vehicle_models(doc, schemas, catalogue)
    if errors:
        raise ConfigurationError(
            f"invalid vehicle-model catalogue {path.name}: " + "; ".join(str(e) for e in errors[:5])
        )
    return vehicle_models_from_document(doc)


def _rule_errors(doc: Mapping[str, Any], catalogue: Catalogue) -> list[DocumentError]:
    errors: list[DocumentError] = []
    makes: dict[str, int] = {}
    for index, make in enumerate(doc["makes"]):
        if make["wmi"] in makes:
            errors.append(DocumentError(json_path(["makes", index, "wmi"]), "repeated WMI"))
        makes[make["wmi"]] = index
        code = make["model_code"]
        if code["position"] + code["length"] - 1 > 9:
            path = json_path(["makes", index, "model_code"])
            errors.append(DocumentError(path, "the model code must lie within VIN positions 4-9"))
    equipment: dict[str, frozenset[str]] = {}
    for index, item in enumerate(doc["equipment"]):
        if item["id"] in equipment:
            errors.append(DocumentError(json_path(["equipment", index, "id"]), "repeated id"))
        equipment[item["id"]] = frozenset(item.get("powertrains", ()))
        for position, category_id in enumerate(item["provides"]):
            category = catalogue.get(category_id)
            path = json_path(["equipment", index, "provides", position])
            if category is None:
                errors.append(DocumentError(path, "unknown data category"))
            elif category.subject is not DataSubject.VEHICLE:
                errors.append(DocumentError(path, "a vehicle provides only vehicle data"))
    ids: set[str] = set()
    codes: set[tuple[str, str]] = set()
    for index, model in enumerate(doc["models"]):
        if model["id"] in ids:
            errors.append(DocumentError(json_path(["models", index, "id"]), "repeated id"))
        ids.add(model["id"])
        make_index = makes.get(model["wmi"])
        if make_index is None:
            errors.append(DocumentError(json_path(["models", index, "wmi"]), "unknown make"))
        length = doc["makes"][make_index]["model_code"]["length"] if make_index is not None else 0
        for position, code in enumerate(model["codes"]):
            path = json_path(["models", index, "codes", position])
            if length and len(code) != length:
                message = f"the make's model codes have {length} characters"
                errors.append(DocumentError(path, message))
            if (model["wmi"], code) in codes:
                errors.append(DocumentError(path, "the code already names another model"))
            codes.add((model["wmi"], code))
        for position, equipment_id in enumerate(model["equipment"]):
            path = json_path(["models", index, "equipment", position])
            if equipment_id not in equipment:
                errors.append(DocumentError(path, "unknown equipment"))
            elif equipment[equipment_id] and model["powertrain"] not in equipment[equipment_id]:
                errors.append(DocumentError(path, f"does not fit a {model['powertrain']} model"))
    return errors
