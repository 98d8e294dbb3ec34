"""The catalogue of data categories (``contracts/categories.json``) as frozen values.

A category is the unit of a grant. Its fields, their JSON types and units come
from the category's own field schema (``contracts/categories/<id>.schema.json``),
which also validates the ``data`` object of every record of that category.
A field marked ``"x-free-text": true`` there holds free text: whatever is
released of it is scrubbed of identifiers at every protection level.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from broker.documents.schemas import (
    CATEGORIES_SCHEMA,
    CATEGORY_SCHEMA_PREFIX,
    DocumentError,
    SchemaSet,
)
from broker.domain.contracts import IsoDuration, LocalizedText
from broker.errors import ConfigurationError, InvalidDocument, NotFound

CATALOGUE_FILE = "categories.json"


class DataSubject(StrEnum):
    """Whom a category's data describes first."""

    VEHICLE = "vehicle"
    CUSTOMER = "customer"


@dataclass(frozen=True)
class FieldSpec:
    """One field of a category: its name, JSON types and format, from the field schema.

    ``free_text``: the field (or each item of it) is text the customer or the
    vehicle wrote freely, so it may name anyone (``x-free-text`` in the schema).
    """

    name: str
    types: frozenset[str]
    format: str | None = None
    description: str = ""
    free_text: bool = False

    @property
    def numeric(self) -> bool:
        return bool(self.types & {"number", "integer"})

    @property
    def temporal(self) -> bool:
        return self.format in {"date", "date-time"}


@dataclass(frozen=True)
class Category:
    id: str
    name: LocalizedText
    description: LocalizedText
    subject: DataSubject
    location: bool
    encrypted_at_rest: bool
    retention: IsoDuration
    scope: str
    schema_id: str
    fields: tuple[FieldSpec, ...]

    @property
    def field_names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields)

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)


class Catalogue:
    """The categories the broker knows, looked up by id or OAuth scope."""

    def __init__(self, categories: tuple[Category, ...], schemas: SchemaSet) -> None:
        self._by_id = {c.id: c for c in categories}
        self._schemas = schemas

    @classmethod
    def load(cls, schemas: SchemaSet) -> Catalogue:
        """Read and check ``categories.json`` in the schemas' contracts folder."""
        path = schemas.contracts_dir / CATALOGUE_FILE
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read the category catalogue: {exc}") from exc
        errors = schemas.errors(CATEGORIES_SCHEMA, doc) or _catalogue_errors(doc, schemas)
        if errors:
            raise ConfigurationError(
                f"invalid category catalogue {path.name}: " + "; ".join(str(e) for e in errors[:5])
            )
        return cls(tuple(_category(entry, schemas) for entry in doc["categories"]), schemas)

    def __iter__(self) -> Iterator[Category]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, category_id: object) -> bool:
        return category_id in self._by_id

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self._by_id)

    def get(self, category_id: str) -> Category | None:
        return self._by_id.get(category_id)

    def category(self, category_id: str) -> Category:
        """The category, or :class:`~broker.errors.NotFound`."""
        try:
            return self._by_id[category_id]
        except KeyError:
            raise NotFound(f"unknown data category {category_id!r}") from None

    def by_scope(self, scope: str) -> Category | None:
        return next((c for c in self if c.scope == scope), None)

    def field_names(self, category_id: str) -> frozenset[str]:
        return self.category(category_id).field_names

    @property
    def free_text_targets(self) -> frozenset[str]:
        """``<category>.<field>`` of every free-text field."""
        return frozenset(f"{c.id}.{f.name}" for c in self for f in c.fields if f.free_text)

    def validate_record_data(self, category_id: str, data: Any) -> list[DocumentError]:
        """Check a record's ``data`` object against its category's field schema.

        Paths are relative to the data object (``$.mileage_km``); messages never
        repeat the values, which are personal data.
        """
        category = self.get(category_id)
        if category is None:
            return [DocumentError("$", f"unknown data category {category_id!r}")]
        return self._schemas.errors(category.schema_id, data, echo_values=False)

    def check_record_data(self, category_id: str, data: Any) -> None:
        """Like :meth:`validate_record_data`, raising InvalidDocument with every error."""
        errors = self.validate_record_data(category_id, data)
        if errors:
            raise InvalidDocument(
                f"record data does not match category {category_id}",
                [e.as_dict() for e in errors],
            )


def _catalogue_errors(doc: Mapping[str, Any], schemas: SchemaSet) -> list[DocumentError]:
    """Rules beyond the schema: unique ids and scopes, a field schema per category."""
    errors = []
    seen_ids: set[str] = set()
    seen_scopes: set[str] = set()
    for index, entry in enumerate(doc["categories"]):
        category_id, scope = entry["id"], entry["scope"]
        if category_id in seen_ids:
            errors.append(DocumentError(f"$.categories[{index}].id", "repeated category id"))
        if scope in seen_scopes:
            errors.append(DocumentError(f"$.categories[{index}].scope", "repeated scope"))
        seen_ids.add(category_id)
        seen_scopes.add(scope)
        if CATEGORY_SCHEMA_PREFIX + category_id not in schemas.ids:
            errors.append(
                DocumentError(f"$.categories[{index}].schema", "no field schema with this id")
            )
        elif not (schemas.contracts_dir / entry["schema"]).is_file():
            errors.append(DocumentError(f"$.categories[{index}].schema", "file not found"))
    return errors


def _category(entry: Mapping[str, Any], schemas: SchemaSet) -> Category:
    schema_id = CATEGORY_SCHEMA_PREFIX + entry["id"]
    properties: Mapping[str, Any] = schemas.schema(schema_id).get("properties", {})
    return Category(
        id=entry["id"],
        name=LocalizedText.from_document(entry["name"]),
        description=LocalizedText.from_document(entry["description"]),
        subject=DataSubject(entry["subject"]),
        location=entry["location"],
        encrypted_at_rest=entry["encrypted_at_rest"],
        retention=IsoDuration.parse(entry["retention"]),
        scope=entry["scope"],
        schema_id=schema_id,
        fields=tuple(_field(name, spec, schemas) for name, spec in properties.items()),
    )


def _field(name: str, spec: Mapping[str, Any], schemas: SchemaSet) -> FieldSpec:
    """Read the JSON type of a field, following one local ``$ref`` if it has one."""
    resolved: Mapping[str, Any] = spec
    if "$ref" in spec:
        resolved = {**schemas.registry.resolver().lookup(spec["$ref"]).contents, **spec}
    if "type" in resolved:
        raw = resolved["type"]
        types = frozenset(raw if isinstance(raw, list) else [raw])
    elif "enum" in resolved:
        types = frozenset(_json_type(v) for v in resolved["enum"])
    else:
        types = frozenset()
    return FieldSpec(
        name=name,
        types=types,
        format=resolved.get("format"),
        description=str(spec.get("description", "")),
        free_text=resolved.get("x-free-text") is True,
    )


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if value is None:
        return "null"
    return "string"
