"""Load the JSON Schemas under ``contracts/`` once and validate documents against them.

JSON Schema draft 2020-12 (https://json-schema.org/draft/2020-12/json-schema-core).
Every schema is registered under its ``$id`` in one :class:`referencing.Registry`
and every ``$ref`` resolves from it: nothing is ever fetched over the network.
Each validator is built once, with a format checker that knows ``date-time``,
``duration`` and ``uri`` without optional packages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import (  # type: ignore[import-untyped, unused-ignore]
    Draft202012Validator,
    FormatChecker,
)
from jsonschema.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    SchemaError,
    ValidationError,
)
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from broker.clock import parse_instant
from broker.domain.contracts import IsoDuration
from broker.errors import ConfigurationError

SCHEMA_FILES = ("schemas/*.schema.json", "categories/*.schema.json")

CATEGORIES_SCHEMA = "urn:vehicle-data-broker:schema:categories"
CONTRACT_SCHEMA = "urn:vehicle-data-broker:schema:contract"
SEED_SCHEMA = "urn:vehicle-data-broker:schema:seed"
COUNTRY_SCHEMA = "urn:vehicle-data-broker:schema:country"
CATEGORY_SCHEMA_PREFIX = "urn:vehicle-data-broker:category:"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class DocumentError:
    """One problem in a document: where (a JSON path such as ``$.categories['x']``) and what."""

    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def json_path(parts: Iterable[str | int]) -> str:
    """A JSON path: ``("categories", "vehicle.status", "fields", 2)`` becomes
    ``$.categories['vehicle.status'].fields[2]``."""
    path = "$"
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            path += f".{part}"
        else:
            escaped = part.replace("\\", "\\\\").replace("'", "\\'")
            path += f"['{escaped}']"
    return path


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(f"key {key!r} appears twice in one object")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_document(text: str) -> tuple[Any, list[DocumentError]]:
    """Strict JSON: a repeated key or NaN/Infinity is an error, not a silent choice."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant), []
    except json.JSONDecodeError as exc:
        return None, [DocumentError("$", f"not valid JSON: line {exc.lineno} column {exc.colno}")]
    except ValueError as exc:
        return None, [DocumentError("$", f"not valid JSON: {exc}")]


def read_document(path: Path) -> tuple[Any, list[DocumentError]]:
    """Read a JSON document file; errors (unreadable, not JSON) come back as values."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [DocumentError("$", f"cannot read {path.name}: {exc.__class__.__name__}")]
    return parse_document(text)


class SchemaSet:
    """Every schema of a contracts folder, registered and compiled once."""

    def __init__(self, contracts_dir: Path) -> None:
        self.contracts_dir = contracts_dir
        schemas = _read_schemas(contracts_dir)
        self.registry: Registry[Any] = (
            Registry()
            .with_resources(
                (schema_id, Resource.from_contents(schema, default_specification=DRAFT202012))
                for schema_id, schema in schemas.items()
            )
            .crawl()
        )
        _check_references(self.registry, schemas)
        checker = _format_checker()
        # Validators run on copies with every $ref inlined once here: resolving
        # references on every validation dominated the cost of ingesting a record.
        self._validators = {
            schema_id: Draft202012Validator(
                _inline_refs(schema, self.registry.resolver(base_uri=schema_id)),
                registry=self.registry,
                format_checker=checker,
            )
            for schema_id, schema in schemas.items()
        }
        self._originals = schemas

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self._validators)

    def schema(self, schema_id: str) -> Mapping[str, Any]:
        """The schema as written (with its references)."""
        self.validator(schema_id)  # a clear error for an unknown id
        return self._originals[schema_id]

    def validator(self, schema_id: str) -> Draft202012Validator:
        try:
            return self._validators[schema_id]
        except KeyError:
            raise ConfigurationError(f"no schema {schema_id} in {self.contracts_dir}") from None

    def errors(
        self,
        schema_id: str,
        instance: Any,
        *,
        prefix: tuple[str | int, ...] = (),
        echo_values: bool = True,
    ) -> list[DocumentError]:
        """Every schema violation of ``instance``, sorted by path.

        ``echo_values`` False keeps values out of the messages (for documents that
        hold personal data or secrets); keys and field names are always named.
        """
        found: dict[DocumentError, str | None] = {}
        for error in self.validator(schema_id).iter_errors(instance):
            found.setdefault(_to_error(error, prefix, echo_values), error.validator)
        # A value failing its pattern also fails its format: one message is enough.
        patterned = {e.path for e, kind in found.items() if kind == "pattern"}
        kept = (e for e, kind in found.items() if kind != "format" or e.path not in patterned)
        return sorted(kept, key=lambda e: (e.path, e.message))


_MAX_INLINE_DEPTH = 16


def _inline_refs(node: Any, resolver: Any, depth: int = 0) -> Any:
    """``node`` with each ``$ref`` replaced by what it points to (recursively).

    A reference nested deeper than ``_MAX_INLINE_DEPTH`` (a recursive schema)
    is left as it is, for the validator to resolve at run time.
    """
    if isinstance(node, list):
        return [_inline_refs(item, resolver, depth) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and depth < _MAX_INLINE_DEPTH:
        resolved = resolver.lookup(ref)
        target = _inline_refs(resolved.contents, resolved.resolver, depth + 1)
        siblings = {k: _inline_refs(v, resolver, depth) for k, v in node.items() if k != "$ref"}
        if not siblings:
            return target
        return {**siblings, "allOf": [*siblings.get("allOf", []), target]}
    return {key: _inline_refs(value, resolver, depth) for key, value in node.items()}


def _read_schemas(contracts_dir: Path) -> dict[str, dict[str, Any]]:
    schemas: dict[str, dict[str, Any]] = {}
    files = sorted(f for pattern in SCHEMA_FILES for f in contracts_dir.glob(pattern))
    if not files:
        raise ConfigurationError(f"no JSON schemas found under {contracts_dir}")
    for file in files:
        try:
            schema = json.loads(file.read_text(encoding="utf-8"))
            Draft202012Validator.check_schema(schema)
        except (OSError, ValueError, SchemaError) as exc:
            raise ConfigurationError(f"invalid schema {file.name}: {exc}") from exc
        schema_id = schema.get("$id") if isinstance(schema, dict) else None
        if not isinstance(schema_id, str) or schema_id in schemas:
            raise ConfigurationError(f"schema {file.name} has a missing or repeated $id")
        schemas[schema_id] = schema
    return schemas


def _check_references(registry: Registry[Any], schemas: Mapping[str, Any]) -> None:
    """Fail at start-up, not mid-request, if a ``$ref`` points nowhere."""
    for schema_id, schema in schemas.items():
        resolver = registry.resolver(base_uri=schema_id)
        for ref in _references(schema):
            try:
                resolver.lookup(ref)
            except Unresolvable as exc:
                raise ConfigurationError(f"schema {schema_id}: unresolvable $ref {ref}") from exc


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def _format_checker() -> FormatChecker:
    """The built-in formats that need no optional package, plus the three we rely on."""
    checker = FormatChecker()
    checker.checks("date-time", raises=ValueError)(_is_instant)
    checker.checks("duration", raises=ValueError)(_is_duration)
    checker.checks("uri", raises=ValueError)(_is_uri)
    return checker


def _is_instant(value: object) -> bool:
    if isinstance(value, str):
        parse_instant(value)
    return True


def _is_duration(value: object) -> bool:
    if isinstance(value, str):
        IsoDuration.parse(value)
    return True


def _is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme and parts.netloc) and value.isprintable() and " " not in value


def _to_error(error: ValidationError, prefix: tuple[str | int, ...], echo: bool) -> DocumentError:
    parts = [*prefix, *error.absolute_path]
    if "propertyNames" in error.absolute_schema_path and isinstance(error.instance, str):
        parts.append(error.instance)  # the offending key is the place
        return DocumentError(json_path(parts), f"is not a valid name here ({_describe(error)})")
    message = _describe(error)
    if echo and isinstance(error.instance, _SCALARS) and error.validator not in _NO_ECHO:
        message = f"{json.dumps(error.instance)} {message}"
    return DocumentError(json_path(parts), message)


_NO_ECHO = frozenset({"required", "additionalProperties", "dependentRequired", "not", None})


def _describe(error: ValidationError) -> str:
    """A message without the offending value (it may be personal data or a secret)."""
    kind, rule = error.validator, error.validator_value
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    title = schema.get("title")
    match kind:
        case "required" | "additionalProperties" | "dependentRequired":
            return str(error.message)
        case "type":
            types = rule if isinstance(rule, list) else [rule]
            return f"is not of type {' or '.join(types)}"
        case "enum":
            if len(rule) <= 8:
                return f"is not one of {', '.join(json.dumps(v) for v in rule)}"
            return f"is not a valid {title}" if title else "is not an allowed value"
        case "const":
            return f"is not {json.dumps(rule)}"
        case "pattern":
            return f"is not a valid {title}" if title else f"does not match {rule}"
        case "format":
            return f"is not a valid {rule}"
        case "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum":
            return _BOUNDS[kind].format(rule)
        case "minLength" | "maxLength" | "minItems" | "maxItems" | "minProperties":
            return _SIZES[kind].format(rule)
        case "uniqueItems":
            return "has repeated items"
        case "oneOf" | "anyOf":
            names = _required_names(rule)
            if names:
                how_many = "exactly" if kind == "oneOf" else "at least"
                return f"needs {how_many} one of {', '.join(names)}"
            return "does not match the allowed forms"
        case "not":
            names = _required_names([rule])
            return f"'{names[0]}' is not allowed here" if names else "is not allowed here"
        case "contains":
            return "does not contain a required item"
        case None:
            return "is not allowed here"
        case _:
            return f"breaks the '{kind}' rule"


def _required_names(subschemas: Any) -> list[str]:
    """Property names of subschemas of the form ``{"required": [name]}``, else []."""
    names = []
    for sub in subschemas if isinstance(subschemas, list) else []:
        if not (isinstance(sub, dict) and list(sub) == ["required"] and len(sub["required"]) == 1):
            return []
        names.append(sub["required"][0])
    return names


_BOUNDS = {
    "minimum": "is less than {}",
    "maximum": "is more than {}",
    "exclusiveMinimum": "must be more than {}",
    "exclusiveMaximum": "must be less than {}",
}
_SIZES = {
    "minLength": "is shorter than {} characters",
    "maxLength": "is longer than {} characters",
    "minItems": "has fewer than {} items",
    "maxItems": "has more than {} items",
    "minProperties": "has fewer than {} entries",
}
