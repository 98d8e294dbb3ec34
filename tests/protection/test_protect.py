"""The protection step: minimise, transform and protect at each level."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from broker.domain.contracts import Contract, Protection, ProtectionLevel
from broker.protection import (
    ProtectedPayload,
    ProtectionContext,
    Pseudonymiser,
    SourceRecord,
    Subject,
    protect,
    scrub_text,
    vehicle_reference,
)
from broker.protection.geo import snap

MakeContract = Callable[..., Contract]
MakeContext = Callable[..., ProtectionContext]

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
VIN = "WBA12345678901234"
VIN2 = "VF1AB000012345678"
LAT, LON = 52.370216, 4.895167
SUBJECT = Subject(VIN, frozenset({"Jan de Vries", "jan@example.nl", "12-ABC-3"}))


def position(
    vin: str = VIN, *, at: datetime = T0, lat: float = LAT, lon: float = LON, **extra: Any
) -> SourceRecord:
    data = {"latitude": lat, "longitude": lon, "speed_kmh": 81.5, "trip_id": "t1", **extra}
    return SourceRecord(f"r-{vin}-{at.isoformat()}-{lat}", vin, "vehicle.position", at, data)


def data_of(payload: ProtectedPayload) -> list[dict[str, Any]]:
    return [r["data"] for r in payload.records]


# --- identified ------------------------------------------------------------------------------


def test_identified_is_minimisation_and_transforms_only(
    make_contract: MakeContract, make_context: MakeContext
) -> None:
    contract = make_contract(
        level="identified",
        categories={"vehicle.position": ["latitude", "longitude", "speed_kmh", "heading_deg"]},
        transforms={"vehicle.position.speed_kmh": {"op": "bucket", "size": 5}},
    )
    # The context does not say which fields are free text, so every string is: the holder's
    # name in it is scrubbed even at the identified level (issue 13: it reached the dealer).
    record = position(heading_deg="Jan de Vries", unknown="x", nested={"a": 1})
    payload = protect([record], make_context(contract), {VIN: SUBJECT})
    assert payload.level is ProtectionLevel.IDENTIFIED
    assert payload.records == (
        {
            "id": payload.records[0]["id"],  # the recipient's own record id (tested elsewhere)
            "vehicle": VIN,
            "category": "vehicle.position",
            "recorded_at": "2026-03-02T08:00:00Z",
            "data": {
                "latitude": LAT,
                "longitude": LON,
                "speed_kmh": 80,
                "heading_deg": "[redacted]",
            },
        },
    )
    assert payload.fields == (
        "vehicle.position.heading_deg",
        "vehicle.position.latitude",
        "vehicle.position.longitude",
        "vehicle.position.speed_kmh",
    )


def test_identified_with_a_round_transform_on_coordinates(
    make_contract: MakeContract, make_context: MakeContext
) -> None:
    contract = make_contract(
        level="identified",
        transforms={
            "vehicle.position.latitude": {"op": "round", "decimals": 2},
            "vehicle.position.longitude": {"op": "round", "decimals": 2},
        },
    )
    (data,) = data_of(protect([position()], make_context(contract), {}))
    assert (data["latitude"], data["longitude"]) == (52.37, 4.9)


def test_coarse_precision_snaps_to_the_coarse_grid_even_when_identified(
    make_contract: MakeContract, make_context: MakeContext
) -> None:
    contract = make_contract(level="identified", coarse_grid_m=5000)
    precise = data_of(
        protect([position()], make_context(contract, location_precision="precise"), {})
    )
    coarse = data_of(protect([position()], make_context(contract, location_precision="coarse"), {}))
    assert (precise[0]["latitude"], precise[0]["longitude"]) == (LAT, LON)
    assert (coarse[0]["latitude"], coarse[0]["longitude"]) == snap(LAT, LON, 5000)


def test_coarse_applies_when_the_terms_offer_nothing_finer_or_the_precision_is_unknown(
    make_contract: MakeContract, make_context: MakeContext
) -> None:
    only_coarse = make_contract(level="identified", precisions=["coarse"], coarse_grid_m=2000)
    (data,) = data_of(protect([position()], make_context(only_coarse), {}))
    assert (data["latitude"], data["longitude"]) == snap(LAT, LON, 2000)
    contract = make_contract(level="identified", coarse_grid_m=2000)
    (data,) = data_of(protect([position()], make_context(contract, location_precision="fuzzy"), {}))
    assert (data["latitude"], data["longitude"]) == snap(LAT, LON, 2000)


def test_generalising_one_coordinate_snaps_the_point(
    make_contract: MakeContract, make_context: MakeContext
) -> None:
    contract = make_contract(
        level="identified",
        transforms={"vehicle.position.latitude": {"op": "generalise", "grid_m": 2500}},
    )
    (data,) = data_of(protect([position()], make_context(contract), {}))
    assert (data["latitude"], data["longitude"]) == snap(LAT, LON, 2500)


def test_a_longitude_without_a_latitude_cannot_be_snapped_and_is_dropped(
    make_contract: MakeContract, make_context: MakeContext
) -> None:
    contract = make_contract(level="identified", precisions=["coarse"])
    record = SourceRecord("r1", VIN, "vehicle.position", T0, {"longitude": LON, "speed_kmh": 3})
    assert data_of(protect([record], make_context(contract), {})) == [{"speed_kmh": 3}]


def test_records_outside_the_contract_or_left_empty_are_not_released(
    make_contract: MakeContract, make_context: MakeContext
) -> None:
    contract = make_contract(level="identified")
    records = [
        SourceRecord("r1", VIN, "customer.contact", T0, {"name": "Jan de Vries"}),
        SourceRecord("r2", VIN, "vehicle.position", T0, {"unknown": 1}),
    ]
    payload = protect(records, make_context(contract), {})
    assert payload.records == ()
    assert payload.fields == ()


# --- pseudonymised ---------------------------------------------------------------------------


def test_pseudonymised_replaces_the_vin_and_generalises_positions(
    make_contract: MakeContract, make_context: MakeContext
) -> None:
    contract = make_contract(level="pseudonymised", coarse_grid_m=None)
    ctx = make_context(contract, location_precision="precise")
    (record,) = protect([position()], ctx, {VIN: SUBJECT}).records
    assert record["vehicle"] == ctx.pseudonymiser.vehicle(VIN)
    assert (record["data"]["latitude"], record["data"]["longitude"]) == snap(LAT, LON, 1000)


def test_pseudonymised_positions_use_the_contracts_coarse_grid(
    make_contract: MakeContract, make_context: MakeContext
) -> None:
    contract = make_contract(level="pseudonymised", coarse_grid_m=3000)
    (data,) = data_of(protect([position()], make_context(contract), {}))
    assert (data["latitude"], data["longitude"]) == snap(LAT, LON, 3000)


def test_pseudonymised_free_text_and_identifier_fields(
    make_contract: MakeContract, make_context: MakeContext
) -> None:
    contract = make_contract(
        level="pseudonymised",
        categories={"customer.contact": ["name", "email", "city"], "vehicle.general": ["model"]},
        transforms={"customer.contact.city": {"op": "pseudonymise"}},
    )
    ctx = make_context(contract)
    records = [
        SourceRecord(
            "r1",
            VIN,
            "customer.contact",
            T0,
            {"name": "Jan de Vries", "email": "JAN@example.nl", "city": "Utrecht"},
        ),
        SourceRecord(
            "r2",
            VIN,
            "vehicle.general",
            T0,
            {"model": f"jan de vries' car {VIN}, plate 12-abc-3, at 52.370216 {VIN2}"},
        ),
    ]
    payload = protect(records, ctx, {VIN: SUBJECT})
    p = ctx.pseudonymiser
    contact, general = (r["data"] for r in payload.records)
    assert contact == {
        "name": p.identifier("jan de vries"),
        "email": p.identifier("jan@example.nl"),
        "city": p.identifier("utrecht"),
    }
    assert general["model"] == (
        f"{p.identifier('jan de vries')}' car {p.vehicle(VIN)}, plate {p.identifier('12-abc-3')},"
        f" at [position] {p.vehicle(VIN2)}"
    )


def test_pseudonymised_without_a_vehicle_identifier_hides_vins_entirely(
    make_contract: MakeContract, make_context: MakeContext
) -> None:
    contract = make_contract(
        level="pseudonymised",
        vehicle_identifier="none",
        categories={"vehicle.general": ["model"]},
    )
    record = SourceRecord("r1", VIN, "vehicle.general", T0, {"model": f"car {VIN}"})
    (out,) = protect([record], make_context(contract), {}).records
    assert out == {
        "id": out["id"],  # the recipient's own record id, naming no vehicle
        "category": "vehicle.general",
        "recorded_at": "2026-03-02T08:00:00Z",
        "data": {"model": "car [vin]"},
    }


def test_pseudonyms_are_stable_across_versions_and_differ_across_recipients_and_contracts(
    make_contract: MakeContract, make_context: MakeContext
) -> None:
    def reference(**terms: Any) -> str | None:
        ctx = make_context(make_contract(level="pseudonymised", **terms))
        (record,) = protect([position()], ctx, {}).records
        assert record["vehicle"] == vehicle_reference(VIN, ctx)
        return record["vehicle"]  # type: ignore[no-any-return]

    v1 = reference(version=1)
    assert v1 == reference(version=2) == reference(version=9, coarse_grid_m=5000)
    assert v1 != reference(recipient="rcp-other")
    assert v1 != reference(contract_id="another-contract")
    assert len({reference(), reference(recipient="rcp-b"), reference(recipient="rcp-c")}) == 3


# --- anonymised ------------------------------------------------------------------------------


def drive(vin: str, trip: str, *, start: datetime = T0, points: int = 30) -> list[SourceRecord]:
    """A trip north, 0.001 degree (111 m) and 20 seconds per point."""
    return [
        SourceRecord(
            f"{vin}-{trip}-{i}",
            vin,
            "vehicle.position",
            start + timedelta(seconds=20 * i),
            {
                "latitude": 52.0 + i * 0.001,
                "longitude": 4.0,
                "speed_kmh": 50 + i,
                "trip_id": trip,
                "heading_deg": f"driver {vin}",
            },
        )
        for i in range(points)
    ]


def test_anonymised_releases_only_k_anonymous_aggregates(
    make_contract: MakeContract, make_context: MakeContext
) -> None:
    contract = make_contract(
        level="anonymised",
        anonymisation={"grid_m": 1000, "time_bucket": "PT15M", "trip_trim_m": 500, "k": 3},
    )
    vins = [f"WBA0000000000000{i}" for i in range(4)]
    records = [r for vin in vins[:3] for r in drive(vin, "t1")] + drive(vins[3], "t9", points=12)
    lonely = drive(vins[3], "t2", start=T0 + timedelta(hours=2))
    payload = protect([*records, *lonely], make_context(contract), {})
    assert payload.level is ProtectionLevel.ANONYMISED
    # 5 + 5 of every trip of 30; the 12-point trip (1.2 km) keeps only 2.
    assert payload.trimmed_records == 4 * 10 + 10
    assert payload.suppressed_groups > 0
    assert payload.records
    for group in payload.records:
        assert group["vehicles"] >= 3
        assert set(group) == {
            "category",
            "period",
            "cell",
            "records",
            "vehicles",
            "numbers",
            "values",
        }
        assert group["cell"]["grid_m"] == 1000
        assert group["period"]["duration"] == "PT15M"
        assert "trip_id" not in group["values"]
    text = json.dumps(payload.records)
    assert not any(vin in text for vin in vins)
    assert "t1" not in text
    # The text field, scrubbed, is the same for every vehicle: shared, so released.
    assert {"driver [vin]"} == {v for g in payload.records for v in g["values"]["heading_deg"]}
    assert payload.fields == (
        "vehicle.position.heading_deg",
        "vehicle.position.latitude",
        "vehicle.position.longitude",
        "vehicle.position.speed_kmh",
    )


def test_anonymised_shares_text_values_only_after_scrubbing(
    make_contract: MakeContract, make_context: MakeContext
) -> None:
    contract = make_contract(
        level="anonymised",
        categories={"vehicle.general": ["model"]},
        anonymisation={"grid_m": 1000, "time_bucket": "PT1H", "trip_trim_m": 0, "k": 2},
    )
    records = [
        SourceRecord(f"r{i}", vin, "vehicle.general", T0, {"model": f"Jan de Vries' car {vin}"})
        for i, vin in enumerate((VIN, VIN2))
    ]
    subjects = {VIN: SUBJECT, VIN2: Subject(VIN2, frozenset({"Jan de Vries"}))}
    (group,) = protect(records, make_context(contract), subjects).records
    assert group["values"] == {"model": {"[redacted]' car [vin]": 2}}
    assert "cell" not in group


def test_an_anonymised_contract_needs_anonymisation_parameters(
    make_contract: MakeContract, make_context: MakeContext
) -> None:
    contract = make_contract(level="anonymised")
    broken = replace(contract, protection=Protection(level=ProtectionLevel.ANONYMISED))
    with pytest.raises(ValueError, match="anonymisation parameters"):
        protect([position()], make_context(broken), {})


# --- determinism and the digest --------------------------------------------------------------


@pytest.mark.parametrize("level", ["identified", "pseudonymised", "anonymised"])
def test_output_and_digest_do_not_depend_on_input_order(
    level: str, make_contract: MakeContract, make_context: MakeContext
) -> None:
    contract = make_contract(
        level=level,
        anonymisation={"grid_m": 1000, "time_bucket": "PT15M", "trip_trim_m": 200, "k": 2},
    )
    records = [r for vin in (VIN, VIN2) for r in drive(vin, "t1")]
    ctx = make_context(contract)
    forward = protect(records, ctx, {VIN: SUBJECT})
    backward = protect(list(reversed(records)), ctx, {VIN: SUBJECT})
    assert forward == backward
    assert forward.canonical_bytes() == backward.canonical_bytes()
    assert len(forward.digest()) == 64
    changed = protect(records[1:], ctx, {VIN: SUBJECT})
    assert changed.digest() != forward.digest()


def test_canonical_bytes_are_sorted_compact_json(
    make_contract: MakeContract, make_context: MakeContext
) -> None:
    payload = protect([position()], make_context(make_contract(level="identified")), {})
    raw = payload.canonical_bytes()
    assert json.loads(raw) == payload.document()
    assert raw == json.dumps(payload.document(), sort_keys=True, separators=(",", ":")).encode()


# --- vehicle references, free text, the context ----------------------------------------------


@pytest.mark.parametrize(
    ("level", "identifier", "expected"),
    [
        ("identified", "vin", VIN),
        ("identified", "pseudonym", "pseudonym"),
        ("identified", "none", None),
        ("pseudonymised", "pseudonym", "pseudonym"),
        ("pseudonymised", "vin", "pseudonym"),  # never the VIN below the identified level
        ("pseudonymised", "none", None),
        ("anonymised", "none", None),
        ("anonymised", "pseudonym", None),
    ],
)
def test_vehicle_reference(
    level: str,
    identifier: str,
    expected: str | None,
    make_contract: MakeContract,
    make_context: MakeContext,
) -> None:
    ctx = make_context(make_contract(level=level, vehicle_identifier=identifier))
    reference = vehicle_reference(VIN.lower(), ctx)
    if expected == "pseudonym":
        assert reference == ctx.pseudonymiser.vehicle(VIN)
    else:
        assert reference == expected


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("identified", f"/vehicles/{VIN}/data?owner=[redacted] (mail [email])"),
        ("pseudonymised", "/vehicles/{vehicle}/data?owner={name} (mail {mail})"),
        ("anonymised", "/vehicles/[vin]/data?owner=[redacted] (mail [email])"),
    ],
)
def test_scrub_text_for_links_and_errors(
    level: str, expected: str, make_contract: MakeContract, make_context: MakeContext
) -> None:
    ctx = make_context(make_contract(level=level))
    p = ctx.pseudonymiser
    text = f"/vehicles/{VIN}/data?owner=Jan de Vries (mail piet@example.nl)"
    expected = expected.format(
        vehicle=p.vehicle(VIN),
        name=p.identifier("jan de vries"),
        mail=p.identifier("piet@example.nl"),
    )
    assert scrub_text(text, ctx, [SUBJECT]) == expected


def test_the_context_refuses_a_pseudonymiser_of_someone_else(
    make_contract: MakeContract,
) -> None:
    contract = make_contract(recipient="rcp-a", contract_id="c-1")
    key = bytes(range(32))
    with pytest.raises(ValueError, match="another recipient"):
        ProtectionContext(contract, "rcp-a", Pseudonymiser.for_contract(key, "rcp-b", "c-1"))
    with pytest.raises(ValueError, match="another contract"):
        ProtectionContext(contract, "rcp-a", Pseudonymiser.for_contract(key, "rcp-a", "c-2"))
    with pytest.raises(ValueError, match="recipient is not the contract's"):
        ProtectionContext(contract, "rcp-b", Pseudonymiser.for_contract(key, "rcp-b", "c-1"))
    assert (
        ProtectionContext(contract, "rcp-a", Pseudonymiser(key)).level
        is ProtectionLevel.PSEUDONYMISED
    )


def test_direct_identifier_fields_are_pseudonymised_or_dropped_even_when_unknown(
    make_contract: MakeContract, make_context: MakeContext
) -> None:
    categories = {"customer.contact": ["name", "street", "city"]}
    record = SourceRecord(
        "r1",
        VIN,
        "customer.contact",
        T0,
        {"name": "Piet Stranger", "street": "Dorpsstraat", "city": "Ede"},
    )
    ctx = make_context(make_contract(level="pseudonymised", categories=categories))
    (data,) = data_of(protect([record], ctx, {}))
    p = ctx.pseudonymiser
    assert data == {
        "name": p.identifier("Piet Stranger"),
        "street": p.identifier("Dorpsstraat"),
        "city": "Ede",
    }
    anonymised = make_contract(
        level="anonymised",
        categories=categories,
        anonymisation={"grid_m": 1000, "time_bucket": "PT1H", "trip_trim_m": 0, "k": 1},
    )
    (group,) = protect([record], make_context(anonymised), {}).records
    assert group["values"] == {"city": {"Ede": 1}}
