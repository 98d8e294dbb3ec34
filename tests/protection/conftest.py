"""Fixtures for the protection tests: contracts built from small documents, and keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from broker.domain.contracts import Contract
from broker.protection import ProtectionContext, Pseudonymiser

#: A fixed master key (hex of 32 bytes) for deterministic tests.
MASTER_KEY = bytes(range(32))

ContractFactory = Callable[..., Contract]
ContextFactory = Callable[..., ProtectionContext]

POSITION_FIELDS = ["latitude", "longitude", "speed_kmh", "heading_deg", "altitude_m", "trip_id"]


def contract_document(
    *,
    contract_id: str = "test-contract",
    version: int = 1,
    recipient: str = "rcp-test",
    level: str = "pseudonymised",
    categories: dict[str, list[str]] | None = None,
    transforms: dict[str, dict[str, Any]] | None = None,
    anonymisation: dict[str, Any] | None = None,
    vehicle_identifier: str | None = None,
    precisions: list[str] | None = None,
    coarse_grid_m: int | None = 1000,
) -> dict[str, Any]:
    """A contract document with the keys ``Contract.from_document`` reads."""
    categories = categories if categories is not None else {"vehicle.position": POSITION_FIELDS}
    if vehicle_identifier is None:
        vehicle_identifier = {"identified": "vin", "pseudonymised": "pseudonym"}.get(level, "none")
    protection: dict[str, Any] = {"level": level, "transforms": transforms or {}}
    if level == "anonymised":
        protection["anonymisation"] = anonymisation or {
            "grid_m": 1000,
            "time_bucket": "PT15M",
            "trip_trim_m": 500,
            "k": 3,
        }
    doc: dict[str, Any] = {
        "id": contract_id,
        "version": version,
        "title": {"en": "Test contract", "nl": "Testcontract"},
        "recipient": recipient,
        "purpose": {"code": "testing", "description": {"en": "Testing", "nl": "Testen"}},
        "legal_basis": "6(1)(f)",
        "activation": "legitimate_interest",
        "categories": {
            name: {"fields": fields, "optional": False} for name, fields in categories.items()
        },
        "protection": protection,
        "channels": ["pull"],
        "vehicle_identifier": vehicle_identifier,
        "retention_at_recipient": "P28D",
        "rate_limit": {"requests": 60, "per": "PT1M"},
        "validity": {"from": "2026-01-01T00:00:00Z"},
        "processing_countries": ["NL"],
    }
    if "vehicle.position" in categories:
        location: dict[str, Any] = {"precisions": precisions or ["precise", "coarse"]}
        if coarse_grid_m is not None:
            location["coarse_grid_m"] = coarse_grid_m
        doc["location"] = location
    return doc


@pytest.fixture(scope="session")
def make_contract() -> ContractFactory:
    def build(**overrides: Any) -> Contract:
        return Contract.from_document(contract_document(**overrides))

    return build


@pytest.fixture(scope="session")
def make_context() -> ContextFactory:
    """A protection context for a contract, its pseudonymiser derived from MASTER_KEY."""

    def build(
        contract: Contract, *, location_precision: str | None = None, master_key: bytes = MASTER_KEY
    ) -> ProtectionContext:
        pseudonymiser = Pseudonymiser.for_contract(master_key, contract.recipient, contract.id)
        return ProtectionContext(
            contract=contract,
            recipient_id=contract.recipient,
            pseudonymiser=pseudonymiser,
            location_precision=location_precision,
        )

    return build
