"""Seed files: the demo seed validates, and broken references are caught where they are."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from broker.documents import DocumentLibrary, library_for, load_seed, validate_seed
from broker.domain.parties import Language, RecipientKind
from broker.errors import InvalidDocument
from broker.settings import Settings

CONTRACTS_DIR = Settings().contracts_dir
DEMO_SEED = Path(__file__).resolve().parents[2] / "examples" / "demo-seed.json"

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def library() -> DocumentLibrary:
    return library_for(CONTRACTS_DIR)


@pytest.fixture
def demo() -> Doc:
    doc: Doc = json.loads(DEMO_SEED.read_text(encoding="utf-8"))
    return doc


def errors_of(doc: Doc, library: DocumentLibrary) -> list[tuple[str, str]]:
    return [(e.path, e.message) for e in validate_seed(doc, DEMO_SEED.parent, library)]


def test_the_demo_seed_validates(demo: Doc, library: DocumentLibrary) -> None:
    assert errors_of(demo, library) == []


def test_the_demo_seed_validates_through_the_library(demo: Doc, library: DocumentLibrary) -> None:
    assert library.validate_seed(demo, base_dir=DEMO_SEED.parent) == []
    assert library.validate_seed_file(DEMO_SEED) == []
    assert library.load_seed(DEMO_SEED).document == demo


def test_the_demo_seed_loads_into_domain_values(library: DocumentLibrary) -> None:
    seed = load_seed(DEMO_SEED, library)
    assert seed.demo_only
    assert len(seed.customers) == 3
    assert Language.NL in {c.language for c in seed.customers}
    assert 4 <= len(seed.vehicles) <= 5
    assert any(len(v.owners) > 1 for v in seed.vehicles), "one vehicle changed owner"
    assert {c.id for c in seed.contracts} == {
        "insurer-ubi",
        "fleet-operator",
        "development-partner",
        "map-provider-anonymised",
        "dealer-service",
        "eu-obfcm",
    }
    recipients = {r.id: r for r in seed.recipients}
    assert set(recipients) == {c.recipient for c in seed.contracts}
    maps = recipients["rcp-maps"]
    assert maps.headquarters_country == "US"
    assert maps.dpf_certified_until == date(2027, 6, 30)
    partner = recipients["rcp-devpartner"]
    assert "IN" in partner.processing_countries
    (scc,) = partner.scc_agreements
    assert scc.module == 1
    assert scc.tia_reference
    assert recipients["rcp-eu-commission"].kind is RecipientKind.AUTHORITY
    assert len(seed.fleets) >= 1


def test_the_demo_seed_has_the_clients_it_promises(demo: Doc) -> None:
    clients = demo["clients"]
    app = next(c for c in clients if c["kind"] == "customer_app")
    assert app["auth_method"] == "none"
    assert all(
        uri.startswith("http://localhost") or "127.0.0.1" in uri for uri in app["redirect_uris"]
    )
    assert any(
        c["kind"] == "backend" and c["auth_method"] == "client_secret_basic" for c in clients
    )
    with_client = {c["recipient"] for c in clients if c["kind"] == "recipient"}
    assert with_client == {r["id"] for r in demo["recipients"]}
    assert {g["contract"] for g in demo["grants"]} == {Path(p).stem for p in demo["contracts"]}


def test_a_production_seed_holds_only_hashes_and_digests(
    demo: Doc, library: DocumentLibrary
) -> None:
    demo["demo_only"] = False
    for customer in demo["customers"]:
        customer.pop("password")
        customer["password_hash"] = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
    for client in demo["clients"]:
        if client.pop("client_secret", None) is not None:
            client["client_secret_digest"] = "sha256:" + "ab" * 32
    assert errors_of(demo, library) == []


# --- broken seeds ---------------------------------------------------------------------------


def _grant(index: int, **changes: Any) -> Callable[[Doc], object]:
    return lambda d: d["grants"][index].update(changes)


BROKEN: list[tuple[str, Callable[[Doc], object], str, str]] = [
    (
        "grant names an unknown customer",
        _grant(0, customer="cus-nobody"),
        "$.grants[0].customer",
        "names no customer",
    ),
    (
        "grant names an unknown vehicle",
        _grant(0, vin="WMWXR31002TA19999"),
        "$.grants[0].vin",
        "names no vehicle",
    ),
    (
        "grant names an unknown contract version",
        _grant(0, contract_version=7),
        "$.grants[0].contract",
        "names no contract version",
    ),
    (
        "owner is an unknown customer",
        lambda d: d["vehicles"][0]["owners"][0].update(customer="cus-ghost"),
        "$.vehicles[0].owners[0].customer",
        "names no customer",
    ),
    (
        "fleet of an unknown operator",
        lambda d: d["fleets"][0].update(operator="rcp-ghost"),
        "$.fleets[0].operator",
        "names no recipient",
    ),
    (
        "client of an unknown recipient",
        lambda d: next(c for c in d["clients"] if c["kind"] == "recipient").update(
            recipient="rcp-ghost"
        ),
        "$.clients[2].recipient",
        "names no recipient",
    ),
    (
        "contract of an unknown recipient",
        lambda d: d["recipients"].pop(0),
        "$.contracts[0]",
        "names no recipient",
    ),
    (
        "plain password without demo_only",
        lambda d: d.pop("demo_only"),
        "$.customers[0].password",
        "only in a demo_only seed",
    ),
    (
        "plain client secret with demo_only false",
        lambda d: d.update(demo_only=False),
        "$.clients[1].client_secret",
        "only in a demo_only seed",
    ),
    (
        "grant category outside its contract",
        lambda d: d["grants"][0]["categories"].append("customer.contact"),
        "$.grants[0].categories[3]",
        "'customer.contact' is not a category of contract insurer-ubi",
    ),
    (
        "grant misses a required category",
        _grant(0, categories=["vehicle.position"]),
        "$.grants[0].categories",
        "misses required categories: vehicle.general, vehicle.status",
    ),
    (
        "grant precision the contract does not offer",
        _grant(3, location_precision="coarse"),
        "$.grants[3].location_precision",
        "not a precision the contract allows",
    ),
    (
        "consent grant without a customer",
        lambda d: d["grants"][0].pop("customer"),
        "$.grants[0]",
        "'customer' is required",
    ),
    (
        "customer who never held the vehicle",
        _grant(0, customer="cus-carla"),
        "$.grants[0].customer",
        "neither owner nor driver",
    ),
    (
        "fleet grant for a vehicle outside the fleet",
        _grant(3, vin="WMWXR31002TA10001"),
        "$.grants[3].vin",
        "not in a fleet of rcp-fleet",
    ),
    (
        "repeated customer id",
        lambda d: d["customers"][1].update(id="cus-anna"),
        "$.customers[1].id",
        "repeats",
    ),
    (
        "period ends before it starts",
        lambda d: d["fleets"][0].update(until="2020-01-01T00:00:00Z"),
        "$.fleets[0].until",
        "must be later than since",
    ),
    (
        "both password and hash",
        lambda d: d["customers"][0].update(
            password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
        ),
        "$.customers[0]",
        "needs exactly one of password, password_hash",
    ),
    (
        "recipient client without a recipient",
        lambda d: d["clients"][2].pop("recipient"),
        "$.clients[2]",
        "'recipient' is a required property",
    ),
    (
        "public client with a secret",
        lambda d: d["clients"][0].update(client_secret="demo-secret-should-not-be-here"),
        "$.clients[0]",
        "'client_secret' is not allowed here",
    ),
    (
        "bad vin",
        lambda d: d["vehicles"][0].update(vin="WMWXR31002TA1000O"),
        "$.vehicles[0].vin",
        "Vehicle identification number",
    ),
    (
        "contract file missing",
        lambda d: d["contracts"].__setitem__(0, "../contracts/samples/missing.json"),
        "$.contracts[0]",
        "cannot read missing.json",
    ),
    (
        "inline contract errors are placed inside it",
        lambda d: d["contracts"].append(
            {
                **json.loads((CONTRACTS_DIR / "samples" / "eu-obfcm.json").read_text()),
                "version": 2,
                "processing_countries": ["XX"],
            }
        ),
        "$.contracts[6].processing_countries[0]",
        "Country code",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "path", "message"),
    [case[1:] for case in BROKEN],
    ids=[case[0] for case in BROKEN],
)
def test_broken_seeds_are_rejected_at_their_path(
    demo: Doc,
    library: DocumentLibrary,
    mutate: Callable[[Doc], object],
    path: str,
    message: str,
) -> None:
    doc = copy.deepcopy(demo)
    mutate(doc)
    errors = errors_of(doc, library)
    assert [e for e in errors if e[0] == path and message in e[1]], errors


def test_an_inline_contract_version_may_amend_a_file(demo: Doc, library: DocumentLibrary) -> None:
    amendment = json.loads((CONTRACTS_DIR / "samples" / "eu-obfcm.json").read_text("utf-8"))
    amendment["version"] = 2
    demo["contracts"].append(amendment)
    demo["grants"][-1]["contract_version"] = 2
    assert errors_of(demo, library) == []
    demo["contracts"].append(copy.deepcopy(amendment))
    assert ("$.contracts[7]", "repeats contract eu-obfcm version 2") in errors_of(demo, library)


def test_seed_errors_never_repeat_passwords_or_secrets(demo: Doc, library: DocumentLibrary) -> None:
    demo.pop("demo_only")
    demo["customers"][0]["password"] = "short"
    demo["clients"][1]["client_secret"] = 42
    text = json.dumps(errors_of(demo, library))
    assert "short" not in text.replace("shorter", "")
    assert "42" not in text


def test_load_seed_raises_with_every_error(
    demo: Doc, library: DocumentLibrary, tmp_path: Path
) -> None:
    demo.pop("demo_only")
    demo["grants"][0]["customer"] = "cus-nobody"
    contracts = DEMO_SEED.parent.resolve()
    demo["contracts"] = [str(contracts / p) for p in demo["contracts"]]
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(demo), encoding="utf-8")
    with pytest.raises(InvalidDocument) as raised:
        load_seed(path, library)
    paths = {e["path"] for e in raised.value.errors}
    assert "$.grants[0].customer" in paths
    assert "$.customers[0].password" in paths
    assert len(raised.value.errors) > 3


@pytest.mark.parametrize(
    "telling", ["gr-anna-insurer", "gr-insurer-cus-bram", "gr-wmwxr31002ta10001"]
)
def test_a_grant_id_that_names_a_customer_or_vehicle_is_refused(
    demo: Doc, library: DocumentLibrary, telling: str
) -> None:
    demo["grants"][0]["id"] = telling
    [(path, message)] = errors_of(demo, library)
    assert path == "$.grants[0].id" and "must be opaque" in message
