"""Time precision: contract defaults, bucket arithmetic, record times and record ids."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from broker.domain.contracts import Contract, IsoDuration, classify_amendment, effective_terms
from broker.protection import ProtectionContext, protect
from broker.protection.protect import RECORD_ID_PREFIX, SourceRecord
from broker.protection.transforms import ceil_instant, coarse_range, floor_instant

T = datetime(2026, 3, 10, 12, 7, 31, 123456, tzinfo=UTC)
PT15M = IsoDuration(minutes=15)
MakeContract = Callable[..., Contract]
MakeContext = Callable[..., ProtectionContext]


def test_a_contract_says_how_precisely_times_go_out(make_contract: MakeContract) -> None:
    assert make_contract(level="identified").time_precision is None  # exact
    assert make_contract(level="pseudonymised").time_precision == PT15M
    anonymised = make_contract(
        level="anonymised",
        anonymisation={"grid_m": 1000, "time_bucket": "PT1H", "trip_trim_m": 0, "k": 2},
    )
    assert anonymised.time_precision == IsoDuration(hours=1)
    named = make_contract(level="identified")
    document = named.to_document()
    document["protection"]["time_precision"] = "PT1M"
    minute = Contract.from_document(document)
    assert minute.time_precision == IsoDuration(minutes=1)
    assert Contract.from_document(minute.to_document()) == minute
    # Finer is a widening (new consent), coarser applies at once; effective terms: coarser.
    assert any("time precision finer" in r for r in classify_amendment(minute, named).widens)
    assert any("time precision coarser" in r for r in classify_amendment(named, minute).narrows)
    assert effective_terms(minute, named).time_precision == IsoDuration(minutes=1)
    pseudonymised = make_contract(level="pseudonymised")
    assert effective_terms(named, pseudonymised).time_precision == PT15M


def test_ranges_widen_to_whole_buckets() -> None:
    assert floor_instant(T, PT15M) == datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    assert ceil_instant(T, PT15M) == datetime(2026, 3, 10, 12, 15, tzinfo=UTC)
    boundary = datetime(2026, 3, 10, 12, 15, tzinfo=UTC)
    assert ceil_instant(boundary, PT15M) == boundary
    assert ceil_instant(T, IsoDuration(months=1)) == datetime(2026, 4, 1, tzinfo=UTC)
    assert coarse_range(T, T + timedelta(seconds=1), None) == (T, T + timedelta(seconds=1))
    since, until = coarse_range(T, T + timedelta(minutes=1), PT15M)
    assert (since, until) == (floor_instant(T, PT15M), ceil_instant(T, PT15M))


def test_pseudonymised_times_are_floored_and_ids_are_per_recipient(
    make_contract: MakeContract, make_context: MakeContext
) -> None:
    categories = {"vehicle.status": ["mileage_km"]}
    records = [
        SourceRecord(
            f"maker-{i}",
            "WBA12345678901234",
            "vehicle.status",
            T + timedelta(minutes=i),
            {"mileage_km": 1000.0 + i},
        )
        for i in range(3)
    ]
    identified = make_contract(level="identified", categories=categories, contract_id="ident")
    mine = make_contract(level="pseudonymised", categories=categories)
    theirs = make_contract(level="pseudonymised", categories=categories, recipient="rcp-other")
    exact = protect(records, make_context(identified), {}).records
    coarse = protect(records, make_context(mine), {}).records
    other = protect(records, make_context(theirs), {}).records
    assert next(r["recorded_at"] for r in exact) == "2026-03-10T12:07:31.123456Z"
    assert {r["recorded_at"] for r in coarse} == {"2026-03-10T12:00:00Z"}
    ids = [{r["id"] for r in copy} for copy in (exact, coarse, other)]
    assert all(len(s) == 3 and all(i.startswith(RECORD_ID_PREFIX) for i in s) for s in ids)
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2]) and not (ids[0] & ids[2])
    assert not any(i.endswith(f"maker-{n}") for s in ids for i in s for n in range(3))
    again = protect(list(reversed(records)), make_context(mine), {}).records
    assert {r["id"] for r in again} == ids[1]  # stable: the recipient de-duplicates by it
