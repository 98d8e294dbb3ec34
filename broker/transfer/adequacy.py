"""The adequacy table: EEA countries and the Commission's adequacy decisions, as values.

GDPR Article 45 (https://eur-lex.europa.eu/eli/reg/2016/679/oj, Chapter V) lets
personal data go to a third country, territory or international organisation
the Commission has found adequate, within the scope of that decision. The table
is a lawyer-readable data file (``contracts/adequacy.json``), validated against
``contracts/schemas/adequacy.schema.json`` once, when it is loaded; the country
codes are those of ``contracts/schemas/country.schema.json`` (ISO 3166-1
alpha-2), resolved locally, never over the network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]
from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped, unused-ignore]
from referencing import Registry, Resource

from broker.errors import ConfigurationError, InvalidDocument

ADEQUACY_SCHEMA = "adequacy.schema.json"
COUNTRY_SCHEMA = "country.schema.json"


class Scope(StrEnum):
    """Which recipients in the country an adequacy decision covers."""

    FULL = "full"
    PRIVATE_SECTOR = "private_sector"
    COMMERCIAL_ORGANISATIONS_SUBJECT_TO_PIPEDA = "commercial_organisations_subject_to_pipeda"
    DPF_CERTIFIED_ORGANISATIONS = "dpf_certified_organisations"
    AUTOMATED_TRANSFERS = "automated_transfers"
    PIPA_EXCEPT_FSC_CREDIT_INFORMATION = "pipa_except_fsc_credit_information"


@dataclass(frozen=True)
class AdequacyDecision:
    """One adequacy decision for one country (or one international organisation)."""

    id: str
    name: str
    scope: Scope
    valid_from: date
    valid_until: date | None = None  # the last day it applies; None: no end date
    country: str | None = None
    organisation: str | None = None
    note: str | None = None

    def in_force_on(self, on: date) -> bool:
        return self.valid_from <= on and (self.valid_until is None or on <= self.valid_until)


@dataclass(frozen=True)
class AdequacyTable:
    """The EEA and the adequacy decisions, with the set of assigned country codes."""

    version: int
    updated: date
    eea: frozenset[str]
    decisions: tuple[AdequacyDecision, ...]
    known_countries: frozenset[str]

    def is_known_country(self, country: object) -> bool:
        """True for an assigned ISO 3166-1 alpha-2 code, exactly as written (``NL``, not ``nl``)."""
        return isinstance(country, str) and country in self.known_countries

    def is_eea(self, country: object) -> bool:
        return isinstance(country, str) and country in self.eea

    def decisions_for(self, country: str) -> tuple[AdequacyDecision, ...]:
        return tuple(d for d in self.decisions if d.country is not None and d.country == country)

    def decisions_for_organisation(self, organisation: str) -> tuple[AdequacyDecision, ...]:
        return tuple(d for d in self.decisions if d.organisation == organisation)

    @classmethod
    def load(cls, path: Path, schemas_dir: Path | None = None) -> AdequacyTable:
        """Read, validate and convert the table at ``path``.

        The schemas are read from ``schemas_dir`` (default: ``schemas/`` next to
        the file). A document that breaks the schema or a rule across rows
        raises :class:`InvalidDocument` listing each problem with its JSON path.
        """
        schemas = schemas_dir if schemas_dir is not None else path.parent / "schemas"
        validator, known = _validator(schemas)
        document = _read(path)
        errors = _schema_errors(validator, document)
        if not errors:
            errors = _cross_row_errors(document)
        if errors:
            errors.sort(key=lambda e: e["path"])
            raise InvalidDocument(f"{path.name}: the adequacy table is invalid", errors)
        return cls._from_document(document, known)

    @classmethod
    def _from_document(cls, document: dict[str, Any], known: frozenset[str]) -> AdequacyTable:
        return cls(
            version=document["version"],
            updated=date.fromisoformat(document["updated"]),
            eea=frozenset(document["eea"]),
            decisions=tuple(_decision(row) for row in document["decisions"]),
            known_countries=known,
        )


def _schema_errors(validator: Draft202012Validator, document: Any) -> list[dict[str, str]]:
    found: list[tuple[str, str, str]] = []
    for error in validator.iter_errors(document):
        message = error.message
        if error.validator == "not" and isinstance(error.schema.get("description"), str):
            message = error.schema["description"]  # says what is wrong, not the whole row
        found.append((error.json_path, str(error.validator), message))
    # A value failing its pattern also fails its format: one message is enough.
    patterned = {path for path, kind, _ in found if kind == "pattern"}
    return [
        {"path": path, "message": message}
        for path, kind, message in found
        if kind != "format" or path not in patterned
    ]


def _decision(row: dict[str, Any]) -> AdequacyDecision:
    until = row.get("valid_until")
    return AdequacyDecision(
        id=row["id"],
        name=row["name"],
        scope=Scope(row["scope"]),
        valid_from=date.fromisoformat(row["valid_from"]),
        valid_until=date.fromisoformat(until) if until is not None else None,
        country=row.get("country"),
        organisation=row.get("organisation"),
        note=row.get("note"),
    )


def _validator(schemas: Path) -> tuple[Draft202012Validator, frozenset[str]]:
    adequacy = _read_schema(schemas / ADEQUACY_SCHEMA)
    country = _read_schema(schemas / COUNTRY_SCHEMA)
    codes = country.get("enum")
    if not isinstance(codes, list) or not codes or not all(isinstance(c, str) for c in codes):
        raise ConfigurationError(f"{COUNTRY_SCHEMA} does not list the country codes as an enum")
    registry: Registry[Any] = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in (adequacy, country)
    )
    try:
        Draft202012Validator.check_schema(adequacy)
    except SchemaError as exc:
        message = f"{ADEQUACY_SCHEMA} is not a valid JSON Schema: {exc.message}"
        raise ConfigurationError(message) from exc
    validator = Draft202012Validator(
        adequacy, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    return validator, frozenset(codes)


def _read_schema(path: Path) -> dict[str, Any]:
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the schema {path.name}: {exc}") from exc
    if not isinstance(schema, dict) or not isinstance(schema.get("$id"), str):
        raise ConfigurationError(f"the schema {path.name} has no $id")
    return schema


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read the adequacy table {path.name}: {exc}") from exc
    try:
        return json.loads(
            text, object_pairs_hook=_refuse_duplicate_keys, parse_constant=_refuse_constant
        )
    except ValueError as exc:
        raise InvalidDocument(
            f"{path.name}: not valid JSON", [{"path": "$", "message": str(exc)}]
        ) from exc


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _cross_row_errors(document: dict[str, Any]) -> list[dict[str, str]]:
    """The rules one JSON Schema cannot state: dates in order, unique ids, EEA apart."""
    errors: list[dict[str, str]] = []
    eea = set(document["eea"])
    seen: set[str] = set()
    for index, row in enumerate(document["decisions"]):
        at = f"$.decisions[{index}]"
        if row["id"] in seen:
            errors.append({"path": f"{at}.id", "message": f"decision {row['id']} appears twice"})
        seen.add(row["id"])
        until = row.get("valid_until")
        if until is not None and date.fromisoformat(until) < date.fromisoformat(row["valid_from"]):
            errors.append({"path": f"{at}.valid_until", "message": "ends before valid_from"})
        if row.get("country") in eea:
            errors.append(
                {"path": f"{at}.country", "message": f"{row['country']} is in the EEA already"}
            )
    return errors
