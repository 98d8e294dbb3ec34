"""The gate's path, decision by decision, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import select
from worlds import COOPER, COOPER_C, NOW, World

from broker.audit.entry import AuditEntry
from broker.domain.contracts import Channel
from broker.domain.grants import GrantAction
from broker.gate.release import (
    Denial,
    ForgedRelease,
    PopulationTarget,
    Release,
    ReleaseRequest,
    VehicleTarget,
    verify_release,
)
from broker.store import audit as audit_store
from broker.store.tables import NoticeRow, SccAgreementRow, VehicleRow

HOUR = timedelta(hours=1)


def insurer(
    categories: set[str],
    *,
    vin: str = COOPER,
    since: datetime = NOW - 2 * HOUR,
    until: datetime = NOW,
    channel: Channel = Channel.PULL,
) -> ReleaseRequest:
    return ReleaseRequest(
        recipient_id="rcp-insurer",
        contract_id="insurer-ubi",
        channel=channel,
        purpose="usage-based-insurance",
        target=VehicleTarget(vin),
        categories=frozenset(categories),
        since=since,
        until=until,
    )


def audit_entry(world: World, seq: int) -> AuditEntry:
    [entry] = world.db.run_sync(lambda s: audit_store.read(s, start=seq, limit=1))
    return entry


async def test_a_covered_request_is_released_minimised_and_audited(world: World) -> None:
    world.drive(COOPER, NOW - HOUR, 30)
    outcome = await world.gate.release(insurer({"vehicle.status"}))
    assert isinstance(outcome, Release)
    assert outcome.decision == "released"
    assert len(outcome.payload.records) == 30
    for record in outcome.payload.records:
        assert set(record["data"]) == {"mileage_km", "battery_voltage_v"}  # no doors_locked
        assert record["vehicle"] == COOPER  # identified contract, VIN identifier
    entry = audit_entry(world, outcome.audit_seq)
    assert entry.kind == "release"
    assert entry.decision == "released"
    assert entry.record_count == 30
    assert entry.payload_digest == outcome.payload.digest()
    assert entry.grant_ids == ("gr-677f38bc93017473",)
    assert entry.destination_countries == ("NL",)
    assert entry.transfer_mechanisms == ("eea",)
    assert entry.legal_basis == "6(1)(a)"
    assert COOPER not in json.dumps(entry.to_json())
    assert verify_release(outcome) is outcome


async def test_a_partly_covered_request_releases_exactly_the_covered_part(world: World) -> None:
    world.drive(COOPER, NOW - HOUR, 10)
    world.store(COOPER, "vehicle.maintenance", NOW - HOUR, {"oil_level_pct": 80.0})
    request = insurer({"vehicle.status", "vehicle.position", "vehicle.maintenance"})
    outcome = await world.gate.release(request)
    assert isinstance(outcome, Release)
    assert outcome.decision == "partial"
    categories = {r["category"] for r in outcome.payload.records}
    assert categories == {"vehicle.status", "vehicle.position"}
    assert len(outcome.payload.records) == 20
    assert [w.reason.code for w in outcome.withheld] == ["category_not_in_contract"]
    assert outcome.withheld[0].reason.category == "vehicle.maintenance"
    # The grant says coarse: no exact position leaves.
    positions = [r["data"] for r in outcome.payload.records if r["category"] == "vehicle.position"]
    assert all(p["latitude"] != pytest.approx(52.370216, abs=1e-4) for p in positions[:1])
    assert "52.370216" not in json.dumps(outcome.payload.document())
    entry = audit_entry(world, outcome.audit_seq)
    assert entry.decision == "partial"
    assert entry.record_count == 20
    assert any("vehicle.maintenance" in r for r in entry.reasons)


async def test_a_revoked_grant_releases_nothing_and_says_why(world: World) -> None:
    world.drive(COOPER, NOW - HOUR, 5)
    world.ended.clear()  # what ended while the seed loaded
    world.db.run_sync(
        lambda s: world.grants.transition(
            s, "gr-677f38bc93017473", GrantAction.WITHDRAW, at=NOW, reason="customer withdrew"
        ),
        write=True,
    )
    outcome = await world.gate.release(insurer({"vehicle.status"}))
    assert isinstance(outcome, Denial)
    assert outcome.codes == ("grant_revoked",)
    entry = audit_entry(world, outcome.audit_seq)
    assert (entry.kind, entry.decision) == ("denial", "denied")
    assert entry.record_count == 0
    assert entry.payload_digest == ""
    # The listeners ran with the revocation, and the recipient got its notice.
    assert [e.grant.id for e in world.ended] == ["gr-677f38bc93017473"]
    notices = world.db.run_sync(
        lambda s: s.exec(select(NoticeRow).where(NoticeRow.recipient_id == "rcp-insurer")).all()
    )
    assert [(n.recipient_id, n.grant_id, n.vehicle_ref) for n in notices] == [
        ("rcp-insurer", "gr-677f38bc93017473", COOPER)
    ]
    notice_entry = audit_entry(world, notices[0].audit_seq)
    assert notice_entry.kind == "notice"


async def test_an_expired_grant_releases_nothing(world: World) -> None:
    world.drive(COOPER, NOW - HOUR, 5)
    world.clock.advance(timedelta(days=700))  # past the contract's (and grant's) validity
    outcome = await world.gate.release(
        insurer({"vehicle.status"}, since=NOW - HOUR, until=world.clock.now())
    )
    assert isinstance(outcome, Denial)
    assert outcome.codes in {("contract_not_in_force",), ("grant_expired",)}
    assert audit_entry(world, outcome.audit_seq).decision == "denied"


async def test_an_out_of_scope_request_releases_nothing(world: World) -> None:
    world.store(COOPER, "vehicle.sensor", NOW - HOUR, {"camera_blocked": False})
    outcome = await world.gate.release(insurer({"vehicle.sensor"}))
    assert isinstance(outcome, Denial)
    assert outcome.codes == ("category_not_in_contract",)


async def test_data_from_before_the_grant_is_never_released(world: World) -> None:
    before = datetime.fromisoformat("2026-01-10T08:00:00+00:00")  # grant active from 01-15
    world.drive(COOPER, before, 5)
    outcome = await world.gate.release(
        insurer({"vehicle.status"}, since=before, until=before + HOUR)
    )
    assert isinstance(outcome, Denial)
    assert outcome.codes == ("recorded_outside_grant",)
    assert outcome.reasons[0].count == 5
    # A range straddling the grant's start releases only what the grant covers.
    start = datetime.fromisoformat("2026-01-15T08:30:00+00:00")
    world.drive(COOPER, start, 60)
    outcome = await world.gate.release(
        insurer({"vehicle.status"}, since=start, until=start + 2 * HOUR)
    )
    assert isinstance(outcome, Release)
    assert len(outcome.payload.records) == 30  # 09:00-09:30 only
    assert outcome.decision == "partial"
    assert outcome.withheld[0].reason.count == 30


async def test_location_off_stops_every_position(world: World) -> None:
    world.drive(COOPER, NOW - HOUR, 5)

    def switch_off(session: object) -> None:
        from sqlmodel import Session

        assert isinstance(session, Session)
        vehicle = session.get(VehicleRow, COOPER)
        assert vehicle is not None
        vehicle.location_sharing = False
        session.add(vehicle)

    world.db.run_sync(switch_off, write=True)
    only_position = await world.gate.release(insurer({"vehicle.position"}))
    assert isinstance(only_position, Denial)
    assert only_position.codes == ("location_off",)
    both = await world.gate.release(insurer({"vehicle.position", "vehicle.status"}))
    assert isinstance(both, Release)
    assert {r["category"] for r in both.payload.records} == {"vehicle.status"}
    assert [w.reason.code for w in both.withheld] == ["location_off"]


async def test_a_channel_or_purpose_the_contract_does_not_allow_is_denied(world: World) -> None:
    outcome = await world.gate.release(insurer({"vehicle.status"}, channel=Channel.WEBHOOK))
    assert isinstance(outcome, Denial)
    assert outcome.codes == ("channel_not_allowed",)
    wrong_purpose = dataclasses.replace(insurer({"vehicle.status"}), purpose="marketing")
    outcome = await world.gate.release(wrong_purpose)
    assert isinstance(outcome, Denial)
    assert outcome.codes == ("purpose_mismatch",)


async def test_another_recipients_contract_is_unknown(world: World) -> None:
    stolen = dataclasses.replace(insurer({"vehicle.status"}), contract_id="fleet-operator")
    outcome = await world.gate.release(stolen)
    assert isinstance(outcome, Denial)
    assert outcome.codes == ("unknown_contract",)


async def test_an_unknown_vehicle_and_a_vehicle_without_grant_look_the_same(world: World) -> None:
    unknown = await world.gate.release(insurer({"vehicle.status"}, vin="WMW00000000000000"))
    someone_elses = await world.gate.release(insurer({"vehicle.status"}, vin=COOPER_C))
    assert isinstance(unknown, Denial) and isinstance(someone_elses, Denial)
    assert unknown.reasons == someone_elses.reasons


async def test_a_customer_bound_request_sees_only_that_customers_grants(world: World) -> None:
    world.drive(COOPER, NOW - HOUR, 3)
    mine = dataclasses.replace(insurer({"vehicle.status"}), customer_id="cus-anna")
    theirs = dataclasses.replace(insurer({"vehicle.status"}), customer_id="cus-carla")
    assert isinstance(await world.gate.release(mine), Release)
    denied = await world.gate.release(theirs)
    assert isinstance(denied, Denial)
    assert denied.codes == ("no_grant",)


async def test_a_transfer_without_a_valid_mechanism_does_not_happen(world: World) -> None:
    world.store(COOPER, "vehicle.status", NOW - HOUR, {"mileage_km": 5.0})
    request = ReleaseRequest(
        recipient_id="rcp-devpartner",
        contract_id="development-partner",
        channel=Channel.DATASPACE,
        purpose="product-quality",
        target=VehicleTarget(COOPER),
        categories=frozenset({"vehicle.status"}),
        since=NOW - 2 * HOUR,
        until=NOW,
    )
    allowed = await world.gate.release(request)
    assert isinstance(allowed, Release)
    entry = audit_entry(world, allowed.audit_seq)
    assert set(entry.destination_countries) == {"DE", "IN"}
    assert "scc:SCC-DEMO-2025-017" in entry.transfer_mechanisms
    # Pseudonymised: the dataspace partner never sees the VIN.
    assert COOPER not in json.dumps(allowed.payload.document())
    assert all(ref.startswith("psn_") for ref in allowed.vehicle_refs)

    eligible = await world.gate.eligibility(
        "rcp-devpartner", "development-partner", COOPER, models=world.library.vehicle_models
    )
    assert not isinstance(eligible, Denial) and "vehicle.status" in eligible.categories

    no_scc = sa.delete(SccAgreementRow).where(sa.column("recipient_id") == "rcp-devpartner")
    world.db.run_sync(lambda s: s.execute(no_scc), write=True)
    denied = await world.gate.release(request)
    assert isinstance(denied, Denial)
    assert denied.codes == ("transfer_not_allowed",)
    assert any("IN" in r.message for r in denied.reasons)
    assert audit_entry(world, denied.audit_seq).decision == "denied"
    # Not even which data the vehicle can provide goes there without a safeguard.
    refused = await world.gate.eligibility(
        "rcp-devpartner", "development-partner", COOPER, models=world.library.vehicle_models
    )
    assert isinstance(refused, Denial) and refused.codes == ("transfer_not_allowed",)
    assert audit_entry(world, refused.audit_seq).kind == "eligibility"


async def test_a_population_release_is_anonymised(world: World) -> None:
    world.drive(COOPER, NOW - HOUR, 20)
    request = ReleaseRequest(
        recipient_id="rcp-maps",
        contract_id="map-provider-anonymised",
        channel=Channel.EXPORT,
        purpose="maps-and-traffic",
        target=PopulationTarget(),
        categories=frozenset({"vehicle.position"}),
        since=NOW - 2 * HOUR,
        until=NOW,
    )
    outcome = await world.gate.release(request)
    assert isinstance(outcome, Release)
    text = json.dumps(outcome.payload.document())
    assert COOPER not in text
    assert "52.370216" not in text
    # One vehicle is fewer than k: every group is suppressed.
    assert outcome.payload.records == ()
    assert outcome.payload.suppressed_groups > 0
    assert audit_entry(world, outcome.audit_seq).subject_ref == "population"


async def test_a_forged_or_altered_release_is_refused_by_channels(world: World) -> None:
    world.drive(COOPER, NOW - HOUR, 3)
    outcome = await world.gate.release(insurer({"vehicle.status"}))
    assert isinstance(outcome, Release)
    altered = dataclasses.replace(
        outcome,
        payload=dataclasses.replace(outcome.payload, records=(*outcome.payload.records, {"x": 1})),
    )
    with pytest.raises(ForgedRelease):
        verify_release(altered)
    with pytest.raises(ForgedRelease):
        verify_release({"payload": outcome.payload.document()})


async def test_a_narrowing_amendment_applies_at_once(world: World) -> None:
    world.drive(COOPER, NOW - HOUR, 3)
    document = json.loads(
        (world.library.samples_dir / "insurer-ubi.json").read_text(encoding="utf-8")
    )
    document["version"] = 2
    del document["categories"]["vehicle.position"]
    del document["location"]
    for key in [k for k in document["protection"].get("transforms", {}) if "position" in k]:
        del document["protection"]["transforms"][key]
    narrowed = world.library.contract_from_document(document)
    from broker.store import contracts as contract_store

    world.db.run_sync(lambda s: contract_store.add(s, narrowed, at=NOW), write=True)
    outcome = await world.gate.release(insurer({"vehicle.status", "vehicle.position"}))
    assert isinstance(outcome, Release)
    assert {r["category"] for r in outcome.payload.records} == {"vehicle.status"}
    assert [w.reason.code for w in outcome.withheld] == ["category_not_in_contract"]


async def test_a_widening_amendment_needs_new_consent(world: World) -> None:
    world.store(COOPER, "vehicle.maintenance", NOW - HOUR, {"oil_level_pct": 80.0})
    document = json.loads(
        (world.library.samples_dir / "insurer-ubi.json").read_text(encoding="utf-8")
    )
    document["version"] = 2
    document["categories"]["vehicle.maintenance"] = {"fields": ["oil_level_pct"], "optional": True}
    widened = world.library.contract_from_document(document)
    from broker.store import contracts as contract_store

    world.db.run_sync(lambda s: contract_store.add(s, widened, at=NOW), write=True)
    # The grant was given under v1: the new category is not covered until the customer
    # consents again.
    outcome = await world.gate.release(insurer({"vehicle.maintenance"}))
    assert isinstance(outcome, Denial)
    assert outcome.codes == ("category_not_in_contract",)
