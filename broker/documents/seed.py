"""Validate seed files (``contracts/schemas/seed.schema.json``) and read them into values.

After the schema: ids are unique, every reference (customer, vehicle, recipient,
contract version) resolves, contracts referenced by path are valid, plain
passwords and client secrets appear only in a seed marked ``demo_only``, and
every grant fits its contract (categories, location precision, activation).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broker.clock import parse_instant
from broker.documents.contracts import library_or_default, validate_contract
from broker.documents.schemas import SEED_SCHEMA, DocumentError, json_path, read_document
from broker.domain.contracts import Contract
from broker.domain.legal import Activation
from broker.domain.parties import (
    Customer,
    FleetMembership,
    Language,
    Ownership,
    Period,
    Recipient,
    RecipientKind,
    RecipientRole,
    RecipientStatus,
    SccAgreement,
    Vehicle,
)
from broker.errors import InvalidDocument

if TYPE_CHECKING:
    from broker.documents.library import DocumentLibrary

_PLAIN_SECRETS = (("customers", "password"), ("clients", "client_secret"))


@dataclass(frozen=True)
class Seed:
    """A valid seed: its document, its contracts, and its parties as domain values.

    Clients and grants stay in ``document`` (their values belong to the store).
    """

    document: Mapping[str, Any] = field(repr=False)
    contracts: tuple[Contract, ...]
    customers: tuple[Customer, ...]
    vehicles: tuple[Vehicle, ...]
    recipients: tuple[Recipient, ...]
    fleets: tuple[FleetMembership, ...]

    @property
    def demo_only(self) -> bool:
        return bool(self.document.get("demo_only", False))


def validate_seed(
    doc: Any, base_dir: Path, library: DocumentLibrary | None = None
) -> list[DocumentError]:
    """Every error of a seed document; contract paths are relative to ``base_dir``."""
    library = library_or_default(library)
    errors = library.schemas.errors(SEED_SCHEMA, doc, echo_values=False)
    if isinstance(doc, Mapping):
        contracts, contract_errors = _contracts(doc, base_dir, library)
        errors += contract_errors + list(_references(doc, contracts))
    return sorted(set(errors), key=lambda e: (e.path, e.message))


def validate_seed_file(path: Path, library: DocumentLibrary | None = None) -> list[DocumentError]:
    doc, errors = read_document(path)
    return errors or validate_seed(doc, path.parent, library)


def load_seed(path: Path, library: DocumentLibrary | None = None) -> Seed:
    """Read and validate a seed file; InvalidDocument listing every error otherwise."""
    library = library_or_default(library)
    doc, errors = read_document(path)
    errors = errors or validate_seed(doc, path.parent, library)
    if errors:
        count = f"{len(errors)} error{'s' if len(errors) != 1 else ''}"
        raise InvalidDocument(
            f"invalid seed file {path.name}: {count}", [e.as_dict() for e in errors]
        )
    contracts, _ = _contracts(doc, path.parent, library)
    return Seed(
        document=doc,
        contracts=tuple(contracts.values()),
        customers=tuple(_customer(c) for c in doc.get("customers", [])),
        vehicles=tuple(_vehicle(v) for v in doc.get("vehicles", [])),
        recipients=tuple(_recipient(r) for r in doc.get("recipients", [])),
        fleets=tuple(_fleet(f) for f in doc.get("fleets", [])),
    )


# --- contracts ------------------------------------------------------------------------------


def _contracts(
    doc: Mapping[str, Any], base_dir: Path, library: DocumentLibrary
) -> tuple[dict[int, Contract], list[DocumentError]]:
    """The seed's valid contracts by their index in the list, and the others' errors."""
    contracts: dict[int, Contract] = {}
    errors: list[DocumentError] = []
    seen: set[tuple[str, int]] = set()
    for index, entry in _items(doc, "contracts"):
        where = f"$.contracts[{index}]"
        if isinstance(entry, str):
            contract_doc, problems = read_document(base_dir / entry)
            problems = problems or validate_contract(contract_doc, library)
            errors += [DocumentError(where, f"{entry}: {p.path}: {p.message}") for p in problems]
        elif isinstance(entry, Mapping):
            contract_doc = entry
            problems = validate_contract(contract_doc, library)
            errors += [DocumentError(where + p.path[1:], p.message) for p in problems]
        else:
            continue  # reported by the schema
        if problems:
            continue
        contract = Contract.from_document(contract_doc)
        key = (contract.id, contract.version)
        if key in seen:
            errors.append(DocumentError(where, f"repeats contract {key[0]} version {key[1]}"))
        seen.add(key)
        contracts[index] = contract
    return contracts, errors


# --- references -----------------------------------------------------------------------------


def _items(doc: Mapping[str, Any], key: str) -> Iterator[tuple[int, Any]]:
    value = doc.get(key)
    return enumerate(value) if isinstance(value, list) else iter(())


def _objects(doc: Mapping[str, Any], key: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    return ((i, item) for i, item in _items(doc, key) if isinstance(item, Mapping))


def _ids(doc: Mapping[str, Any], key: str, id_key: str) -> set[Any]:
    return {item.get(id_key) for _, item in _objects(doc, key)}


def _unknown(path: list[str | int], what: str) -> DocumentError:
    return DocumentError(json_path(path), f"names no {what} of this seed")


def _references(
    doc: Mapping[str, Any], contracts: Mapping[int, Contract]
) -> Iterator[DocumentError]:
    customers = _ids(doc, "customers", "id")
    recipients = _ids(doc, "recipients", "id")
    vins = _ids(doc, "vehicles", "vin")
    yield from _duplicates(doc)
    yield from _plain_secrets(doc)
    for index, vehicle in _objects(doc, "vehicles"):
        for role in ("owners", "secondary_drivers"):
            for j, holding in _objects(vehicle, role):
                if holding.get("customer") not in customers:
                    yield _unknown(["vehicles", index, role, j, "customer"], "customer")
                yield from _period_errors(holding, ["vehicles", index, role, j], "since", "until")
    for index, client in _objects(doc, "clients"):
        if "recipient" in client and client["recipient"] not in recipients:
            yield _unknown(["clients", index, "recipient"], "recipient")
    for index, membership in _objects(doc, "fleets"):
        if membership.get("operator") not in recipients:
            yield _unknown(["fleets", index, "operator"], "recipient")
        if membership.get("vin") not in vins:
            yield _unknown(["fleets", index, "vin"], "vehicle")
        yield from _period_errors(membership, ["fleets", index], "since", "until")
    entries = dict(_items(doc, "contracts"))
    for index, contract in contracts.items():
        if contract.recipient not in recipients:
            inline = isinstance(entries.get(index), Mapping)
            path: list[str | int] = ["contracts", index, *(["recipient"] if inline else [])]
            yield DocumentError(
                json_path(path), f"contract {contract.id} names no recipient of this seed"
            )
    by_version = {(c.id, c.version): c for c in contracts.values()}
    for index, grant in _objects(doc, "grants"):
        yield from _grant_errors(doc, ["grants", index], grant, by_version, customers, vins)


def _duplicates(doc: Mapping[str, Any]) -> Iterator[DocumentError]:
    for key, id_key in (
        ("customers", "id"),
        ("customers", "login"),
        ("vehicles", "vin"),
        ("recipients", "id"),
        ("clients", "client_id"),
        ("grants", "id"),
    ):
        seen: set[Any] = set()
        for index, item in _objects(doc, key):
            value = item.get(id_key)
            if value in seen:
                yield DocumentError(json_path([key, index, id_key]), f"repeats an earlier {id_key}")
            seen.add(value)


def _plain_secrets(doc: Mapping[str, Any]) -> Iterator[DocumentError]:
    if doc.get("demo_only") is True:
        return
    for key, secret in _PLAIN_SECRETS:
        for index, item in _objects(doc, key):
            if secret in item:
                yield DocumentError(
                    json_path([key, index, secret]),
                    f"a plain {secret.replace('_', ' ')} is allowed only in a demo_only seed",
                )


def _instant(value: Any) -> datetime | None:
    try:
        return parse_instant(value)
    except (TypeError, ValueError, AttributeError):
        return None


def _period_errors(
    item: Mapping[str, Any], path: list[str | int], start_key: str, end_key: str
) -> Iterator[DocumentError]:
    start, end = _instant(item.get(start_key)), _instant(item.get(end_key))
    if start is not None and end is not None and end <= start:
        yield DocumentError(json_path([*path, end_key]), f"must be later than {start_key}")


def _grant_errors(
    doc: Mapping[str, Any],
    path: list[str | int],
    grant: Mapping[str, Any],
    contracts: Mapping[tuple[Any, Any], Contract],
    customers: set[Any],
    vins: set[Any],
) -> Iterator[DocumentError]:
    yield from _period_errors(grant, path, "valid_from", "valid_until")
    yield from _telling_id(doc, path, grant)
    if grant.get("vin") not in vins:
        yield _unknown([*path, "vin"], "vehicle")
    customer = grant.get("customer")
    if customer is not None and customer not in customers:
        yield _unknown([*path, "customer"], "customer")
    contract = contracts.get((grant.get("contract"), grant.get("contract_version")))
    if contract is None:
        yield DocumentError(
            json_path([*path, "contract"]), "names no contract version of this seed"
        )
        return
    yield from _grant_fits_contract(path, grant, contract)
    when = _instant(grant.get("valid_from"))
    if when is None:
        return
    if contract.activation is Activation.CONSENT and customer is None:
        yield DocumentError(json_path(path), "'customer' is required: the contract needs consent")
    known = customer in customers and grant.get("vin") in vins
    if known and not _holds(doc, grant.get("vin"), customer, when):
        yield DocumentError(
            json_path([*path, "customer"]),
            "is neither owner nor driver of the vehicle at valid_from",
        )
    if contract.activation is Activation.FLEET_CLEARANCE and not _in_fleet(
        doc, grant.get("vin"), contract.recipient, when
    ):
        yield DocumentError(
            json_path([*path, "vin"]), f"is not in a fleet of {contract.recipient} at valid_from"
        )


def _telling_id(
    doc: Mapping[str, Any], path: list[str | int], grant: Mapping[str, Any]
) -> Iterator[DocumentError]:
    """A grant id goes to recipients (listings, events, notices): it must name no customer
    and no vehicle, whoever's grant it is."""
    grant_id = str(grant.get("id", "")).lower()
    names = {str(v.get("vin", "")).lower() for _, v in _objects(doc, "vehicles")}
    for _, customer in _objects(doc, "customers"):
        names |= {str(customer.get("login", "")).lower(),
                  str(customer.get("id", "")).lower().removeprefix("cus-")}  # fmt: skip
    told = sorted(n for n in names if len(n) >= 3 and n in grant_id)
    if told:
        yield DocumentError(
            json_path([*path, "id"]),
            f"names {told[0]!r}: a grant id reaches recipients, so it must be opaque "
            "(for example gr- and 16 hex digits)",
        )


def _grant_fits_contract(
    path: list[str | int], grant: Mapping[str, Any], contract: Contract
) -> Iterator[DocumentError]:

    granted = [c for _, c in _items(grant, "categories")]
    for j, category in enumerate(granted):
        if category not in contract.category_ids:
            yield DocumentError(
                json_path([*path, "categories", j]),
                f"{category!r} is not a category of contract {contract.id}"
                f" version {contract.version}",
            )
    missing = sorted(
        t.category for t in contract.categories if not t.optional and t.category not in granted
    )
    if missing:
        yield DocumentError(
            json_path([*path, "categories"]), f"misses required categories: {', '.join(missing)}"
        )
    precision = grant.get("location_precision")
    if precision is not None:
        allowed = contract.location.precisions if contract.location else frozenset()
        if precision not in allowed:
            yield DocumentError(
                json_path([*path, "location_precision"]), "is not a precision the contract allows"
            )


def _holds(doc: Mapping[str, Any], vin: Any, customer: Any, when: datetime) -> bool:
    for _, vehicle in _objects(doc, "vehicles"):
        if vehicle.get("vin") != vin:
            continue
        for role in ("owners", "secondary_drivers"):
            for _, holding in _objects(vehicle, role):
                period = _period(holding, "since", "until")
                if holding.get("customer") == customer and period and period.contains(when):
                    return True
    return False


def _in_fleet(doc: Mapping[str, Any], vin: Any, operator: str, when: datetime) -> bool:
    for _, membership in _objects(doc, "fleets"):
        period = _period(membership, "since", "until")
        member = membership.get("vin") == vin and membership.get("operator") == operator
        if member and period is not None and period.contains(when):
            return True
    return False


def _period(item: Mapping[str, Any], start_key: str, end_key: str) -> Period | None:
    start = _instant(item.get(start_key))
    return Period(start, _instant(item.get(end_key))) if start is not None else None


# --- domain values --------------------------------------------------------------------------


def _customer(doc: Mapping[str, Any]) -> Customer:
    return Customer(id=doc["id"], login=doc["login"], language=Language(doc["language"]))


def _holdings(items: list[Mapping[str, Any]]) -> tuple[Ownership, ...]:
    return tuple(
        Ownership(
            customer_id=h["customer"],
            period=Period(parse_instant(h["since"]), _instant(h.get("until"))),
        )
        for h in items
    )


def _vehicle(doc: Mapping[str, Any]) -> Vehicle:
    return Vehicle(
        vin=doc["vin"],
        owners=_holdings(doc["owners"]),
        secondary_drivers=_holdings(doc.get("secondary_drivers", [])),
    )


def _date(text: str | None) -> date | None:
    return date.fromisoformat(text) if text is not None else None


def _recipient(doc: Mapping[str, Any]) -> Recipient:
    return Recipient(
        id=doc["id"],
        name=doc["name"],
        kind=RecipientKind(doc["kind"]),
        legal_entity=doc["legal_entity"],
        role=RecipientRole(doc["role"]),
        headquarters_country=doc["headquarters_country"],
        processing_countries=tuple(doc["processing_countries"]),
        storage_countries=tuple(doc["storage_countries"]),
        status=RecipientStatus(doc.get("status", "active")),
        dpf_certified_until=_date(doc.get("dpf_certified_until")),
        scc_agreements=tuple(
            SccAgreement(
                reference=scc["reference"],
                module=scc["module"],
                signed_on=date.fromisoformat(scc["signed_on"]),
                expires_on=_date(scc.get("expires_on")),
                tia_reference=scc.get("tia_reference"),
                tia_review_due=_date(scc.get("tia_review_due")),
            )
            for scc in doc.get("scc", [])
        ),
    )


def _fleet(doc: Mapping[str, Any]) -> FleetMembership:
    return FleetMembership(
        fleet_operator_id=doc["operator"],
        vin=doc["vin"],
        period=Period(parse_instant(doc["since"]), _instant(doc.get("until"))),
    )
