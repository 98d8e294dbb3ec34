"""Free text at every protection level: no customer's identifier and nothing shaped like one
survives, unless the contract releases that kind (issue 13)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.domain.contracts import Contract
from broker.protection import ProtectionContext, SourceRecord, Subject, protect
from broker.protection.identifiers import (
    IdentifierHasher,
    IdentifierIndex,
    IdentifierKind,
    derive_index_key,
)
from broker.protection.protect import released_kinds

ContractFactory = Callable[..., Contract]
ContextFactory = Callable[..., ProtectionContext]
MASTER_KEY = bytes(range(32))
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
VIN = "WBA12345678901234"
OTHER_VIN = "VF1AB000012345678"
FREE_TEXT = frozenset({"vehicle.general.model", "vehicle.general.colour"})
GENERAL = {"vehicle.general": ["model", "colour", "build_year"]}
ANONYMISATION = {"grid_m": 1000, "time_bucket": "PT15M", "trip_trim_m": 0, "k": 1}

HOLDER = {
    IdentifierKind.NAME: "Anna de Vries",
    IdentifierKind.EMAIL: "anna.devries@example.nl",
    IdentifierKind.PHONE: "+31201234567",
    IdentifierKind.ADDRESS: "Prinsengracht 263",
    IdentifierKind.LOGIN: "annadv",
}
OTHER = {
    IdentifierKind.NAME: "Bram Jansen",
    IdentifierKind.EMAIL: "bram.jansen@example.nl",
    IdentifierKind.PHONE: "+31301234567",
    IdentifierKind.ADDRESS: "Oudegracht 158",
    IdentifierKind.LOGIN: "bramj",
}
SUBJECT = Subject(VIN, labelled=frozenset(HOLDER.items()))
HASHER = IdentifierHasher(derive_index_key(MASTER_KEY))
_ENTRIES = HASHER.entries([*HOLDER.values(), *OTHER.values()])
INDEX = IdentifierIndex(
    HASHER, frozenset(e.digest for e in _ENTRIES), max(e.words for e in _ENTRIES)
)
COORDINATE = "52.370216"
#: (canary, the kind whose release may let it through; None: never released).
CANARIES: list[tuple[str, IdentifierKind | None]] = [
    *((value, kind) for kind, value in HOLDER.items()),
    *((value, None) for value in OTHER.values()),  # another customer's: never released
    (OTHER_VIN, None),  # another vehicle's VIN
    (VIN, IdentifierKind.VIN),
    (COORDINATE, IdentifierKind.COORDINATE),
]
LEVELS = ["identified", "pseudonymised", "anonymised"]


def context(
    make_contract: ContractFactory,
    make_context: ContextFactory,
    level: str,
    *,
    categories: dict[str, list[str]] | None = None,
    vehicle_identifier: str | None = None,
    location_precision: str | None = None,
) -> ProtectionContext:
    contract: Contract = make_contract(
        level=level,
        categories=categories or GENERAL,
        vehicle_identifier=vehicle_identifier,
        anonymisation=ANONYMISATION,
    )
    ctx = make_context(contract, location_precision=location_precision)
    return ProtectionContext(
        contract=ctx.contract,
        recipient_id=ctx.recipient_id,
        pseudonymiser=ctx.pseudonymiser,
        location_precision=location_precision,
        free_text=FREE_TEXT,
        index=INDEX,
    )


def general(model: str, colour: str = "blue", **extra: Any) -> SourceRecord:
    data = {"model": model, "colour": colour, "build_year": 2024, **extra}
    return SourceRecord("r1", VIN, "vehicle.general", T0, data)


def released_text(ctx: ProtectionContext, record: SourceRecord) -> str:
    payload = protect([record], ctx, {VIN: SUBJECT})
    assert payload.records, "something is released, so the test can see what survives"
    return payload.canonical_bytes().decode()


def survivors(text: str) -> set[str]:
    return {canary for canary, _ in CANARIES if canary.casefold() in text.casefold()}


@pytest.mark.parametrize("level", LEVELS)
def test_no_identifier_survives_free_text_when_nothing_is_released(
    make_contract: ContractFactory, make_context: ContextFactory, level: str
) -> None:
    ctx = context(make_contract, make_context, level, vehicle_identifier="none")
    model = " / ".join(canary for canary, _ in CANARIES[:7])
    colour = " / ".join(canary for canary, _ in CANARIES[7:])
    assert released_kinds(ctx) == frozenset()
    assert survivors(released_text(ctx, general(model, colour))) == set()


def test_a_free_text_field_at_the_identified_level_keeps_what_names_no_one(
    make_contract: ContractFactory, make_context: ContextFactory
) -> None:
    ctx = context(make_contract, make_context, "identified")
    record = general("Mini Cooper SE for Bram Jansen", "British racing green")
    [out] = protect([record], ctx, {VIN: SUBJECT}).records
    assert out["data"] == {
        "model": "Mini Cooper SE for [redacted]",
        "colour": "British racing green",
        "build_year": 2024,
    }


def test_a_contract_releasing_contact_data_lets_the_holders_own_through_only(
    make_contract: ContractFactory, make_context: ContextFactory
) -> None:
    contact = ["name", "email", "phone", "street"]
    ctx = context(
        make_contract, make_context, "identified",
        categories={**GENERAL, "customer.contact": contact}, vehicle_identifier="vin",
    )  # fmt: skip
    assert released_kinds(ctx) == {
        IdentifierKind.NAME, IdentifierKind.EMAIL, IdentifierKind.PHONE,
        IdentifierKind.ADDRESS, IdentifierKind.VIN,
    }  # fmt: skip
    model = " / ".join(canary for canary, _ in CANARIES[:7])
    colour = " / ".join(canary for canary, _ in CANARIES[7:])
    left = survivors(released_text(ctx, general(model, colour)))
    holder_released = {HOLDER[k] for k in released_kinds(ctx) if k in HOLDER}
    assert left == holder_released | {VIN}


def test_the_vehicles_own_vin_passes_only_under_a_vin_identifier(
    make_contract: ContractFactory, make_context: ContextFactory
) -> None:
    text = f"vin {VIN} and {OTHER_VIN}"
    with_vin = context(make_contract, make_context, "identified", vehicle_identifier="vin")
    assert f"vin {VIN} and [vin]" in released_text(with_vin, general(text))
    pseudonym = context(make_contract, make_context, "identified", vehicle_identifier="pseudonym")
    assert VIN not in released_text(pseudonym, general(text))


def test_precise_location_lets_coordinates_through_and_coarse_does_not(
    make_contract: ContractFactory, make_context: ContextFactory
) -> None:
    categories = {**GENERAL, "vehicle.position": ["latitude", "longitude"]}
    text = f"parked at {COORDINATE},4.895167"
    precise = context(
        make_contract, make_context, "identified", categories=categories,
        location_precision="precise",
    )  # fmt: skip
    assert IdentifierKind.COORDINATE in released_kinds(precise)
    assert COORDINATE in released_text(precise, general(text))
    coarse = context(
        make_contract, make_context, "identified", categories=categories,
        location_precision="coarse",
    )  # fmt: skip
    assert IdentifierKind.COORDINATE not in released_kinds(coarse)
    assert COORDINATE not in released_text(coarse, general(text))


def test_a_field_that_is_not_free_text_is_left_alone_at_the_identified_level(
    make_contract: ContractFactory, make_context: ContextFactory
) -> None:
    ctx = context(make_contract, make_context, "identified")
    record = general("Mini", build_year=2024)
    # Only strings of free-text fields are scrubbed when identified; records without
    # free text do not even need the index.
    from broker.protection.protect import scrubs_text_of

    assert scrubs_text_of([record], ctx)
    numbers = SourceRecord("r2", VIN, "vehicle.general", T0, {"build_year": 2024})
    assert not scrubs_text_of([numbers], ctx)


_WORDS = st.text(alphabet=st.sampled_from("abcdefgh XYZ0123,.;:!?()-'"), max_size=30)


@settings(max_examples=150, deadline=None)
@given(
    level=st.sampled_from(LEVELS),
    identifier=st.sampled_from(["none", "pseudonym", "vin"]),
    contact=st.lists(st.sampled_from(["name", "email", "phone", "street"]), unique=True),
    precise=st.booleans(),
    canary=st.sampled_from(CANARIES),
    before=_WORDS,
    after=_WORDS,
)
def test_a_canary_in_random_text_never_survives_unless_its_kind_is_released(
    make_contract: ContractFactory,
    make_context: ContextFactory,
    level: str,
    identifier: str,
    contact: list[str],
    precise: bool,
    canary: tuple[str, IdentifierKind | None],
    before: str,
    after: str,
) -> None:
    if level == "anonymised":
        identifier = "none"
    elif level == "pseudonymised" and identifier == "vin":
        identifier = "pseudonym"
    categories = {**GENERAL, "vehicle.position": ["latitude", "longitude"]}
    if contact:
        categories["customer.contact"] = contact
    ctx = context(
        make_contract, make_context, level, categories=categories, vehicle_identifier=identifier,
        location_precision="precise" if precise else "coarse",
    )  # fmt: skip
    value, kind = canary
    text = released_text(ctx, general(f"{before} {value} {after}"))
    if kind is None or kind not in released_kinds(ctx):
        assert value.casefold() not in text.casefold()
