"""Validate data-sharing contract documents and turn valid ones into ``Contract`` values.

First the JSON Schema (``contracts/schemas/contract.schema.json``), then the
rules that span fields or need the category catalogue: known categories and
fields, transforms on shared fields only, an activation the legal basis admits
(GDPR Art. 6(1)), a purpose description for consent (Art. 7), a vehicle
identifier that fits the protection level, location terms exactly when
location data is shared, and a validity that ends after it starts. Every error
is reported, never only the first.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broker.clock import parse_instant
from broker.documents.catalogue import Catalogue, Category
from broker.documents.schemas import CONTRACT_SCHEMA, DocumentError, json_path, read_document
from broker.domain.contracts import Contract
from broker.domain.legal import ACTIVATIONS_BY_BASIS, Activation, LegalBasis
from broker.errors import InvalidDocument

if TYPE_CHECKING:
    from broker.documents.library import DocumentLibrary


def library_or_default(library: DocumentLibrary | None) -> DocumentLibrary:
    """The given library, or the packaged one (imported here: it imports this module)."""
    if library is not None:
        return library
    from broker.documents.library import default_library

    return default_library()


def validate_contract(doc: Any, library: DocumentLibrary | None = None) -> list[DocumentError]:
    """Every error in a contract document; an empty list means it is valid."""
    library = library_or_default(library)
    errors = library.schemas.errors(CONTRACT_SCHEMA, doc)
    if isinstance(doc, Mapping):
        errors += _semantic_errors(doc, library.catalogue)
    return sorted(set(errors), key=lambda e: (e.path, e.message))


def contract_from_document(doc: Any, library: DocumentLibrary | None = None) -> Contract:
    """The contract of a document, or InvalidDocument listing every error."""
    errors = validate_contract(doc, library)
    if errors:
        raise _invalid("contract document", errors)
    return Contract.from_document(doc)


def validate_contract_file(
    path: Path, library: DocumentLibrary | None = None
) -> list[DocumentError]:
    doc, errors = read_document(path)
    return errors or validate_contract(doc, library)


def load_contract(path: Path, library: DocumentLibrary | None = None) -> Contract:
    """Read, validate and build a contract; InvalidDocument with every error otherwise."""
    doc, errors = read_document(path)
    errors = errors or validate_contract(doc, library)
    if errors:
        raise _invalid(f"contract file {path.name}", errors)
    return Contract.from_document(doc)


def _invalid(what: str, errors: list[DocumentError]) -> InvalidDocument:
    count = f"{len(errors)} error{'s' if len(errors) != 1 else ''}"
    return InvalidDocument(f"invalid {what}: {count}", [e.as_dict() for e in errors])


# --- rules beyond the schema ----------------------------------------------------------------
# The document may also have failed the schema: every rule checks the shapes it reads.


def _semantic_errors(doc: Mapping[str, Any], catalogue: Catalogue) -> list[DocumentError]:
    shared = dict(_shared_fields(doc, catalogue))
    return [
        *_category_errors(doc, catalogue),
        *_transform_errors(doc, catalogue, shared),
        *_legal_errors(doc),
        *_identifier_errors(doc),
        *_location_errors(doc, catalogue),
        *_validity_errors(doc),
    ]


def _mapping(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, Mapping) else {}


def _fields(terms: Any) -> list[Any]:
    fields = terms.get("fields") if isinstance(terms, Mapping) else None
    return fields if isinstance(fields, list) else []


def _shared_fields(doc: Mapping[str, Any], catalogue: Catalogue) -> Iterator[tuple[str, Category]]:
    """``<category>.<field>`` -> category, for every known field the contract shares."""
    for category_id, terms in _mapping(doc, "categories").items():
        category = catalogue.get(category_id)
        if category is None:
            continue
        for name in _fields(terms):
            if isinstance(name, str) and name in category.field_names:
                yield f"{category_id}.{name}", category


def _category_errors(doc: Mapping[str, Any], catalogue: Catalogue) -> Iterator[DocumentError]:
    for category_id, terms in _mapping(doc, "categories").items():
        category = catalogue.get(category_id)
        if category is None:
            yield DocumentError(
                json_path(["categories", category_id]), "is not a category of the catalogue"
            )
            continue
        for index, name in enumerate(_fields(terms)):
            if isinstance(name, str) and name not in category.field_names:
                yield DocumentError(
                    json_path(["categories", category_id, "fields", index]),
                    f"{name!r} is not a field of category {category_id}",
                )


def _transform_errors(
    doc: Mapping[str, Any], catalogue: Catalogue, shared: Mapping[str, Category]
) -> Iterator[DocumentError]:

    transforms = _mapping(_mapping(doc, "protection"), "transforms")
    for target, spec in transforms.items():
        path = ["protection", "transforms", target]
        category = shared.get(target)
        if category is None:
            yield DocumentError(json_path(path), "does not name a field shared by this contract")
            continue
        if not isinstance(spec, Mapping):
            continue
        problem = _transform_misfit(spec, category, target.removeprefix(f"{category.id}."))
        if problem:
            yield DocumentError(json_path([*path, "op"]), problem)


def _transform_misfit(spec: Mapping[str, Any], category: Category, name: str) -> str | None:
    """Why this transform cannot apply to this field, or None."""
    field = category.field(name)
    if field is None:
        return None
    op, size = spec.get("op"), spec.get("size")
    if op == "round" and not field.numeric:
        return f"round needs a number field; {name} is not one"
    if op == "bucket" and isinstance(size, str) and not field.temporal:
        return f"a bucket of time needs a date or time field; {name} is not one"
    if op == "bucket" and isinstance(size, int | float) and not field.numeric:
        return f"a numeric bucket needs a number field; {name} is not one"
    if op == "generalise" and not (category.location and field.numeric):
        return "generalise applies to the coordinates of a location category only"
    return None


def _legal_errors(doc: Mapping[str, Any]) -> Iterator[DocumentError]:
    try:
        basis = LegalBasis(str(doc.get("legal_basis")))
        activation = Activation(str(doc.get("activation")))
    except ValueError:
        return  # reported by the schema
    admitted = ACTIVATIONS_BY_BASIS[basis]
    if activation not in admitted:
        allowed = ", ".join(sorted(a.value for a in admitted))
        yield DocumentError(
            "$.activation",
            f"{activation.value!r} is not admitted by legal basis {basis.value}"
            f" (admitted: {allowed})",
        )
    purpose = doc.get("purpose")
    consent = basis is LegalBasis.CONSENT
    if consent and isinstance(purpose, Mapping) and "description" not in purpose:
        yield DocumentError(
            "$.purpose",
            "'description' is required when the legal basis is consent"
            " (informed consent, GDPR Art. 7)",
        )


def _identifier_errors(doc: Mapping[str, Any]) -> Iterator[DocumentError]:
    level = _mapping(doc, "protection").get("level")
    identifier = doc.get("vehicle_identifier")
    if level == "anonymised" and identifier in {"vin", "pseudonym"}:
        yield DocumentError(
            "$.vehicle_identifier", "must be 'none' when the protection level is anonymised"
        )
    elif level == "pseudonymised" and identifier == "vin":
        yield DocumentError(
            "$.vehicle_identifier", "'vin' is allowed only with the identified protection level"
        )


def _location_errors(doc: Mapping[str, Any], catalogue: Catalogue) -> Iterator[DocumentError]:
    located = sorted(
        c for c in _mapping(doc, "categories") if (cat := catalogue.get(c)) and cat.location
    )
    if located and "location" not in doc:
        yield DocumentError(
            "$",
            f"'location' is required: the contract shares location data ({', '.join(located)})",
        )
    elif not located and "location" in doc:
        yield DocumentError("$.location", "is allowed only when location data is shared")


def _validity_errors(doc: Mapping[str, Any]) -> Iterator[DocumentError]:
    validity = _mapping(doc, "validity")
    try:
        start = parse_instant(validity["from"])
        end = parse_instant(validity["until"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return  # no end, or reported by the schema
    if end <= start:
        yield DocumentError("$.validity.until", "must be later than validity.from")
