"""Grant and fleet events leave through the gate: checked like a release, one audit entry.

Each case is one in which the webhook worker used to send a vehicle reference (the VIN
under an identified contract) with no grant, country or audit check (issue 13), or one
of the written exception: the notice of a grant's end reaches its recipient regardless.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa
from worlds import CLUBMAN, COOPER, NOW, World

from broker.audit.entry import AuditEntry
from broker.domain.grants import GrantAction
from broker.gate.announce import (
    FLEET_JOINED,
    FLEET_LEFT,
    GRANT_CREATED,
    GRANT_ENDED,
    Announcement,
    EventRequest,
    verify_announcement,
)
from broker.gate.release import Denial, ForgedRelease, document_digest
from broker.store import audit as audit_store
from broker.store import contracts as contract_store
from broker.store.tables import RecipientRow

FLEET = "rcp-fleet"


def entries(world: World) -> list[AuditEntry]:
    return world.db.run_sync(lambda s: audit_store.read(s, start=0, limit=10**6))


def entry(world: World, seq: int) -> AuditEntry:
    [found] = [e for e in entries(world) if e.seq == seq]
    return found


def set_recipient(world: World, **values: Any) -> None:
    update = sa.update(RecipientRow).where(sa.column("id") == FLEET).values(**values)
    world.db.run_sync(lambda s: s.execute(update), write=True)


def amend_fleet_contract(world: World, change: Any) -> None:
    path = world.library.samples_dir / "fleet-operator.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    latest = world.db.run_sync(lambda s: contract_store.latest(s, "fleet-operator"))
    assert latest is not None
    document["version"] = latest.version + 1
    change(document)
    contract = world.library.contract_from_document(document)
    world.db.run_sync(lambda s: contract_store.add(s, contract, at=NOW), write=True)


def created(vin: str = CLUBMAN, grant: str = "gr-81ac3a06b35dc15c") -> EventRequest:
    return EventRequest(FLEET, GRANT_CREATED, vin=vin, grant_id=grant, contract_id="fleet-operator")


async def test_a_vehicle_without_a_grant_joining_a_fleet_names_nothing(world: World) -> None:
    before = len(entries(world))
    refused = await world.gate.announce(EventRequest(FLEET, FLEET_JOINED, vin=COOPER))
    assert isinstance(refused, Denial) and refused.codes == ("no_grant",)
    denial = entry(world, refused.audit_seq)
    assert (denial.kind, denial.decision, denial.channel) == ("event", "denied", "webhook")
    assert denial.subject_ref == world.gate.keyring.vehicle_ref(COOPER)  # whose data it was
    assert COOPER.encode() not in denial.canonical_bytes()
    assert len(entries(world)) == before + 1


async def test_an_event_is_one_entry_with_the_digest_of_exactly_its_data(world: World) -> None:
    for request in (created(), EventRequest(FLEET, FLEET_JOINED, vin=CLUBMAN)):
        announced = await world.gate.announce(request)
        assert isinstance(announced, Announcement), announced
        assert announced.data == {
            "event": request.event,
            "grant": "gr-81ac3a06b35dc15c",
            "contract": "fleet-operator",
            "vehicle": CLUBMAN,  # the fleet contract identifies vehicles by VIN
        }
        found = entry(world, announced.audit_seq)
        assert (found.kind, found.decision, found.subject_ref) == (
            "event", "released", "gr-81ac3a06b35dc15c",
        )  # fmt: skip
        assert found.payload_digest == document_digest(announced.data)
        assert found.grant_ids == ("gr-81ac3a06b35dc15c",) and found.legal_basis == "6(1)(f)"
        assert found.destination_countries == ("CH", "NL") and found.transfer_mechanisms
        assert verify_announcement(announced) is announced
    with pytest.raises(ForgedRelease):
        verify_announcement(replace(announced, data={"grant": "gr-81ac3a06b35dc15c"}))
    announced.data["vehicle"] = COOPER
    with pytest.raises(ForgedRelease):
        verify_announcement(announced)


async def test_a_suspended_recipient_hears_of_no_new_grant(world: World) -> None:
    set_recipient(world, status="suspended")
    refused = await world.gate.announce(created())
    assert isinstance(refused, Denial) and refused.codes == ("recipient_suspended",)
    denial = entry(world, refused.audit_seq)
    assert denial.subject_ref == "gr-81ac3a06b35dc15c" and denial.grant_ids == (
        "gr-81ac3a06b35dc15c",
    )


async def test_a_refused_destination_country_hears_of_no_new_grant(world: World) -> None:
    set_recipient(world, processing_countries=["NL", "US"])  # no DPF, no SCC
    refused = await world.gate.announce(EventRequest(FLEET, FLEET_JOINED, vin=CLUBMAN))
    assert isinstance(refused, Denial) and refused.codes == ("transfer_not_allowed",)
    assert "US" in entry(world, refused.audit_seq).destination_countries


async def test_an_ended_contract_announces_nothing(world: World) -> None:
    amend_fleet_contract(world, lambda d: d["validity"].update(until="2026-03-01T00:00:00Z"))
    refused = await world.gate.announce(created())
    assert isinstance(refused, Denial) and "contract_not_in_force" in refused.codes


async def test_a_pseudonymised_contract_never_names_the_vin(world: World) -> None:
    def pseudonymise(document: dict[str, Any]) -> None:
        document["protection"] = {"level": "pseudonymised"}
        document["vehicle_identifier"] = "pseudonym"

    amend_fleet_contract(world, pseudonymise)
    announced = await world.gate.announce(created())
    assert isinstance(announced, Announcement)
    assert str(announced.data["vehicle"]).startswith("psn_")
    assert CLUBMAN not in json.dumps(announced.data)

    def anonymise(document: dict[str, Any]) -> None:
        document["protection"] = {
            "level": "anonymised",
            "anonymisation": {"grid_m": 1000, "time_bucket": "PT15M", "trip_trim_m": 500, "k": 5},
        }
        document["vehicle_identifier"] = "none"

    amend_fleet_contract(world, anonymise)
    refused = await world.gate.announce(created())
    assert isinstance(refused, Denial) and refused.codes == ("anonymised_contract",)


async def test_the_end_of_a_grant_reaches_a_suspended_recipient_and_records_the_mechanism(
    world: World,
) -> None:
    world.db.run_sync(
        lambda s: world.grants.transition(
            s, "gr-81ac3a06b35dc15c", GrantAction.TERMINATE, at=NOW, reason="test"
        ),
        write=True,
    )
    [issued] = [
        e for e in entries(world) if e.kind == "notice" and e.subject_ref == "gr-81ac3a06b35dc15c"
    ]
    assert issued.destination_countries == ("CH", "NL") and issued.transfer_mechanisms
    assert issued.details["transfer"] == "allowed" and issued.legal_basis == "6(1)(f)"

    set_recipient(world, status="suspended", processing_countries=["NL", "US"])
    request = EventRequest(FLEET, GRANT_ENDED, vin=CLUBMAN, grant_id="gr-81ac3a06b35dc15c")
    announced = await world.gate.announce(request)
    assert isinstance(announced, Announcement), announced
    assert announced.data["vehicle"] == CLUBMAN and announced.data["erase"] is True
    assert announced.data["grant"] == "gr-81ac3a06b35dc15c"
    found = entry(world, announced.audit_seq)
    assert found.decision == "released" and found.payload_digest == document_digest(announced.data)
    assert found.destination_countries == ("CH", "NL", "US")
    assert found.details["transfer"] == "not_allowed" and found.details["recipient"] == "suspended"
    assert any("US" in r for r in found.details["transfer_reasons"])

    left = await world.gate.announce(EventRequest(FLEET, FLEET_LEFT, vin=CLUBMAN))
    assert isinstance(left, Announcement)  # names the clearance that ended, as the notice did
    assert left.data["grant"] == "gr-81ac3a06b35dc15c" and left.data["vehicle"] == CLUBMAN


async def test_leaving_a_fleet_without_ever_a_grant_is_not_announced(world: World) -> None:
    refused = await world.gate.announce(EventRequest(FLEET, FLEET_LEFT, vin=COOPER))
    assert isinstance(refused, Denial) and refused.codes == ("no_notice",)
    assert entry(world, refused.audit_seq).subject_ref == world.gate.keyring.vehicle_ref(COOPER)
