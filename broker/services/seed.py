"""Load a seed file: customers, vehicles, recipients, clients, fleets, contracts, grants.

The format is documented by ``contracts/schemas/seed.schema.json``. Loading is
idempotent: everything is keyed by its id, so loading the same file twice
changes nothing. The whole file loads in one transaction, or not at all.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from broker.clock import parse_instant
from broker.credentials import (
    digest_client_secret,
    hash_password,
    verify_client_secret,
    verify_password,
)
from broker.documents import DocumentLibrary
from broker.domain.contracts import Contract
from broker.domain.grants import GrantAction, GrantState
from broker.errors import Conflict, InvalidDocument
from broker.services.grants import GrantService
from broker.store import contracts as contract_store
from broker.store import grants as grant_store
from broker.store import parties as party_store
from broker.store.tables import (
    CustomerRow,
    FleetMembershipRow,
    OAuthClientRow,
    RecipientRow,
    SccAgreementRow,
    VehiclePartyRow,
    VehicleRow,
)
from broker.vault.contacts import load_contact, save_contact
from broker.vault.vault import Vault

#: How a seed's grant state is reached from a new grant.
_STATE_ACTIONS: dict[GrantState, tuple[GrantAction, ...]] = {
    GrantState.PENDING: (),
    GrantState.ACTIVE: (GrantAction.ACTIVATE,),
    GrantState.SUSPENDED: (GrantAction.ACTIVATE, GrantAction.SUSPEND),
    GrantState.REVOKED: (GrantAction.TERMINATE,),
    GrantState.OBJECTED: (GrantAction.ACTIVATE, GrantAction.OBJECT),
    GrantState.EXPIRED: (GrantAction.EXPIRE,),
}


@dataclass
class SeedReport:
    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            "created": dict(sorted(self.created.items())),
            "updated": dict(sorted(self.updated.items())),
            "unchanged": dict(sorted(self.unchanged.items())),
        }

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)


@dataclass(frozen=True)
class SeedFile:
    path: Path
    document: dict[str, Any]
    contracts: tuple[Contract, ...]


def read_seed(library: DocumentLibrary, path: Path) -> SeedFile:
    """Read and validate a seed file and the contracts it names; every error at once."""
    if not path.is_file():
        raise InvalidDocument(f"{path}: no such seed file")
    try:
        seed = library.load_seed(path)
    except InvalidDocument as exc:
        raise InvalidDocument(f"{exc.detail}; nothing was loaded", exc.errors) from exc
    return SeedFile(path=path, document=dict(seed.document), contracts=seed.contracts)


def apply_seed(
    session: Session, seed: SeedFile, grants: GrantService, *, vault: Vault, now: datetime
) -> SeedReport:
    report = SeedReport()
    doc = seed.document
    demo = bool(doc.get("demo_only", False))
    for item in doc.get("customers", []):
        _customer(session, item, report, demo=demo, now=now)
        if "contact" in item:
            _contact(session, vault, item, report, now=now)
    for item in doc.get("recipients", []):
        _recipient(session, item, report, now=now)
    for item in doc.get("vehicles", []):
        _vehicle(session, item, report, now=now)
    for item in doc.get("clients", []):
        _client(session, item, report, now=now)
    for item in doc.get("fleets", []):
        _fleet(session, item, report)
    contracts: dict[tuple[str, int], Contract] = {}
    for contract in seed.contracts:
        _contract(session, contract, report, now=now)
        contracts[(contract.id, contract.version)] = contract
    for item in doc.get("grants", []):
        _grant(session, item, contracts, grants, report, now=now)
    session.flush()
    return report


def _count(report: SeedReport, kind: str, created: bool, changed: bool) -> None:
    if created:
        report.created[kind] += 1
    elif changed:
        report.updated[kind] += 1
    else:
        report.unchanged[kind] += 1


def _set(row: Any, values: dict[str, Any]) -> bool:
    changed = False
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return changed


def _customer(
    session: Session, item: dict[str, Any], report: SeedReport, *, demo: bool, now: datetime
) -> None:
    row = session.get(CustomerRow, item["id"])
    password = item.get("password") if demo else None
    values: dict[str, Any] = {"login": item["login"], "language": item.get("language", "en")}
    if row is None:
        password_hash = item.get("password_hash") or hash_password(str(password))
        session.add(
            CustomerRow(id=item["id"], password_hash=password_hash, created_at=now, **values)
        )
        _count(report, "customers", True, False)
        return
    changed = _set(row, values)
    if "password_hash" in item:
        changed |= _set(row, {"password_hash": item["password_hash"]})
    elif password is not None and not verify_password(row.password_hash, password):
        row.password_hash = hash_password(password)
        changed = True
    session.add(row)
    _count(report, "customers", False, changed)


def _contact(
    session: Session, vault: Vault, item: dict[str, Any], report: SeedReport, *, now: datetime
) -> None:
    """Contact data, encrypted under the customer's key; rewritten only when it changed."""
    stored = load_contact(session, vault, item["id"])
    if stored == item["contact"]:
        _count(report, "contacts", False, False)
        return
    save_contact(session, vault, item["id"], item["contact"], now)
    _count(report, "contacts", stored is None, stored is not None)


def _recipient(
    session: Session, item: dict[str, Any], report: SeedReport, *, now: datetime
) -> None:
    values: dict[str, Any] = {
        "name": item["name"],
        "kind": item["kind"],
        "legal_entity": item["legal_entity"],
        "role": item["role"],
        "headquarters_country": item["headquarters_country"],
        "processing_countries": list(item["processing_countries"]),
        "storage_countries": list(item["storage_countries"]),
        "status": item.get("status", "active"),
        "dpf_certified_until": _date(item.get("dpf_certified_until")),
    }
    row = session.get(RecipientRow, item["id"])
    if row is None:
        session.add(RecipientRow(id=item["id"], created_at=now, updated_at=now, **values))
        session.flush()
        changed, created = False, True
    else:
        changed, created = _set(row, values), False
        if changed:
            row.updated_at = now
            session.add(row)
    for scc in item.get("scc", []):
        scc_values: dict[str, Any] = {
            "recipient_id": item["id"],
            "module": scc["module"],
            "signed_on": _date(scc["signed_on"]),
            "expires_on": _date(scc.get("expires_on")),
            "tia_reference": scc.get("tia_reference"),
            "tia_review_due": _date(scc.get("tia_review_due")),
        }
        scc_row = session.get(SccAgreementRow, scc["reference"])
        if scc_row is None:
            session.add(SccAgreementRow(reference=scc["reference"], **scc_values))
            changed = changed or not created
        else:
            changed |= _set(scc_row, scc_values)
            session.add(scc_row)
    _count(report, "recipients", created, changed)


def _vehicle(session: Session, item: dict[str, Any], report: SeedReport, *, now: datetime) -> None:
    location = item.get("location", {})
    values: dict[str, Any] = {
        "model": item.get("model"),
        "location_collection": location.get("collection", True),
        "location_sharing": location.get("sharing", True),
    }
    row = session.get(VehicleRow, item["vin"])
    created = row is None
    if row is None:
        session.add(VehicleRow(vin=item["vin"], created_at=now, **values))
        session.flush()
        changed = False
    else:
        changed = _set(row, values)
        session.add(row)
    for role, key in (
        (party_store.OWNER, "owners"),
        (party_store.SECONDARY_DRIVER, "secondary_drivers"),
    ):
        for party in item.get(key, []):
            since = parse_instant(party["since"])
            until = parse_instant(party["until"]) if party.get("until") else None
            existing = session.exec(
                select(VehiclePartyRow).where(
                    VehiclePartyRow.vin == item["vin"],
                    VehiclePartyRow.customer_id == party["customer"],
                    VehiclePartyRow.role == role,
                    VehiclePartyRow.since == since,
                )
            ).first()
            if existing is None:
                party_store.add_party(
                    session,
                    vin=item["vin"],
                    customer_id=party["customer"],
                    role=role,
                    since=since,
                    until=until,
                )
                changed = changed or not created
            else:
                changed |= _set(existing, {"until": until})
                session.add(existing)
    _count(report, "vehicles", created, changed)


def _client(session: Session, item: dict[str, Any], report: SeedReport, *, now: datetime) -> None:
    values: dict[str, Any] = {
        "kind": item["kind"],
        "recipient_id": item.get("recipient"),
        "auth_method": item["auth_method"],
        "jwks": item.get("jwks"),
        "redirect_uris": list(item.get("redirect_uris", [])),
        "grant_types": list(item.get("grant_types", [])),
        "scopes": list(item.get("scopes", [])),
    }
    if "client_secret_digest" in item:
        values["secret_digest"] = item["client_secret_digest"]
    row = session.get(OAuthClientRow, item["client_id"])
    secret = item.get("client_secret")
    if row is None:
        if secret is not None:
            values["secret_digest"] = digest_client_secret(secret)
        session.add(OAuthClientRow(client_id=item["client_id"], created_at=now, **values))
        _count(report, "clients", True, False)
        return
    if secret is not None and not (
        row.secret_digest and verify_client_secret(row.secret_digest, secret)
    ):
        values["secret_digest"] = digest_client_secret(secret)
    changed = _set(row, values)
    session.add(row)
    _count(report, "clients", False, changed)


def _fleet(session: Session, item: dict[str, Any], report: SeedReport) -> None:
    since = parse_instant(item["since"])
    until = parse_instant(item["until"]) if item.get("until") else None
    row = session.exec(
        select(FleetMembershipRow).where(
            FleetMembershipRow.operator_id == item["operator"],
            FleetMembershipRow.vin == item["vin"],
            FleetMembershipRow.since == since,
        )
    ).first()
    if row is None:
        session.add(
            FleetMembershipRow(
                operator_id=item["operator"], vin=item["vin"], since=since, until=until
            )
        )
        session.flush()
        _count(report, "fleet_memberships", True, False)
        return
    changed = _set(row, {"until": until})
    session.add(row)
    _count(report, "fleet_memberships", False, changed)


def _contract(session: Session, contract: Contract, report: SeedReport, *, now: datetime) -> None:
    stored = contract_store.stored_digest(session, contract.id, contract.version)
    if stored is None:
        contract_store.add(session, contract, at=now)
        _count(report, "contracts", True, False)
        return
    if stored != contract_store.digest(dict(contract.document)):
        raise Conflict(
            f"contract {contract.id} v{contract.version} is already loaded with other content; "
            "an amendment needs a new version number"
        )
    _count(report, "contracts", False, False)


def _grant(
    session: Session,
    item: dict[str, Any],
    contracts: dict[tuple[str, int], Contract],
    grants: GrantService,
    report: SeedReport,
    *,
    now: datetime,
) -> None:
    if grant_store.get(session, item["id"]) is not None:
        _count(report, "grants", False, False)  # a grant's state is its own history now
        return
    version = item.get("contract_version")
    contract = (
        contracts.get((item["contract"], version))
        if version is not None
        else contract_store.latest(session, item["contract"])
    )
    if contract is None:
        contract = contract_store.get(session, item["contract"], version or 0)
    if contract is None:
        raise Conflict(f"grant {item['id']}: contract {item['contract']} is not loaded")
    valid_from = parse_instant(item["valid_from"])
    grant = grants.create(
        session,
        contract=contract,
        vin=item["vin"],
        at=valid_from,
        categories=item.get("categories"),
        customer_id=item.get("customer"),
        valid_from=valid_from,
        valid_until=parse_instant(item["valid_until"]) if item.get("valid_until") else None,
        location_precision=item.get("location_precision"),
        grant_id=item["id"],
    )
    target = GrantState(item.get("state", "active"))
    for action in _STATE_ACTIONS[target]:
        if grant.state is target:
            break
        if action is GrantAction.ACTIVATE and grant.state is GrantState.ACTIVE:
            continue  # active on creation (no customer approval needed)
        grant = grants.apply(session, grant, action, at=valid_from, reason="recorded in the seed")
    if grant.state is not target:
        raise Conflict(f"grant {item['id']}: cannot be {target.value} under its contract")
    _count(report, "grants", True, False)


def _date(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None
