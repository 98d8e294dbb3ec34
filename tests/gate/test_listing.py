"""Listings leave through the gate: checked like a release, one audit entry, or nothing named.

Each state below is one in which `GET /v1/recipient/vehicles` used to answer VINs or
pseudonyms with no check and no audit entry (issue 13).
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from worlds import CLUBMAN, COOPER, COUNTRYMAN, NOW, World

from broker.audit.entry import AuditEntry, canonical_json
from broker.domain.contracts import Channel
from broker.gate.listing import Listing, ListingRequest, ListingView, verify_listing
from broker.gate.release import Denial, ForgedRelease
from broker.store import audit as audit_store
from broker.store import contracts as contract_store
from broker.store.tables import RecipientRow, SccAgreementRow


def request(recipient: str, **changes: Any) -> ListingRequest:
    values: dict[str, Any] = {"recipient_id": recipient, "view": ListingView.VEHICLES}
    return ListingRequest(**(values | changes))


def entries(world: World) -> list[AuditEntry]:
    return world.db.run_sync(lambda s: audit_store.read(s, start=0, limit=10**6))


def entry(world: World, seq: int) -> AuditEntry:
    [found] = [e for e in entries(world) if e.seq == seq]
    return found


def amend(world: World, sample: str, change: Any) -> None:
    document = json.loads((world.library.samples_dir / sample).read_text(encoding="utf-8"))
    document["version"] += 1
    change(document)
    contract = world.library.contract_from_document(document)
    world.db.run_sync(lambda s: contract_store.add(s, contract, at=NOW), write=True)


async def test_a_listing_is_one_audit_entry_with_the_digest_of_what_is_sent(world: World) -> None:
    listing = await world.gate.listing(request("rcp-dealer"))
    assert isinstance(listing, Listing)
    assert [v["vehicle"] for v in listing.document["vehicles"]] == [COUNTRYMAN]
    assert listing.audit_seq is not None
    found = entry(world, listing.audit_seq)
    assert found.kind == "listing" and found.decision == "released"
    assert found.payload_digest == hashlib.sha256(canonical_json(listing.document)).hexdigest()
    assert found.grant_ids == tuple(v["grant"] for v in listing.document["vehicles"])
    assert found.subject_ref == found.grant_ids[0]
    assert found.legal_basis == "6(1)(f)" and found.destination_countries
    assert verify_listing(listing) is listing


async def test_a_bearer_token_under_a_dpop_contract_names_no_vehicle(world: World) -> None:
    before = len(entries(world))
    refused = await world.gate.listing(request("rcp-insurer"))
    assert isinstance(refused, Denial) and refused.codes == ("sender_constraint_not_met",)
    denial = entry(world, refused.audit_seq)
    assert denial.decision == "denied" and denial.payload_digest == ""
    assert denial.grant_ids  # whose data it concerned
    assert len(entries(world)) == before + 1

    bound = await world.gate.listing(request("rcp-insurer", sender_constrained=True))
    assert isinstance(bound, Listing) and bound.audit_seq is not None
    assert "WMW" in json.dumps(bound.document)
    # The grants view names no vehicle: grant handles only, audited like any listing.
    grants = await world.gate.listing(request("rcp-insurer", view=ListingView.GRANTS))
    assert isinstance(grants, Listing) and grants.audit_seq is not None
    assert "WMW" not in json.dumps(grants.document)


async def test_a_suspended_recipient_is_told_nothing(world: World) -> None:
    suspend = (
        sa.update(RecipientRow).where(sa.column("id") == "rcp-dealer").values(status="suspended")
    )
    world.db.run_sync(lambda s: s.execute(suspend), write=True)
    refused = await world.gate.listing(request("rcp-dealer"))
    assert isinstance(refused, Denial) and refused.codes == ("recipient_suspended",)
    assert entry(world, refused.audit_seq).kind == "listing"


async def test_an_ended_contract_names_nothing(world: World) -> None:
    def end(document: dict[str, Any]) -> None:
        document["validity"]["until"] = "2026-03-01T00:00:00Z"

    amend(world, "dealer-service.json", end)
    refused = await world.gate.listing(request("rcp-dealer"))
    assert isinstance(refused, Denial) and refused.codes == ("contract_not_in_force",)


async def test_a_refused_destination_country_names_nothing(world: World) -> None:
    listed = await world.gate.listing(request("rcp-devpartner", channel=Channel.DATASPACE))
    assert isinstance(listed, Listing)
    handles = [v["vehicle"] for v in listed.document["vehicles"]]
    assert handles and all(h.startswith("psn_") for h in handles)
    assert COOPER not in json.dumps(listed.document) and CLUBMAN not in json.dumps(listed.document)
    no_scc = sa.delete(SccAgreementRow).where(sa.column("recipient_id") == "rcp-devpartner")
    world.db.run_sync(lambda s: s.execute(no_scc), write=True)
    refused = await world.gate.listing(request("rcp-devpartner", channel=Channel.DATASPACE))
    assert isinstance(refused, Denial) and refused.codes == ("transfer_not_allowed",)
    assert "IN" in refused.reasons[0].message


async def test_an_anonymised_recipient_learns_of_no_single_vehicle(world: World) -> None:
    for channel in (Channel.EXPORT, Channel.DATASPACE):
        refused = await world.gate.listing(request("rcp-maps", channel=channel))
        assert isinstance(refused, Denial) and refused.codes == ("anonymised_contract",)
    # The pull channel is not the maps provider's: it lists nothing and names nothing.
    empty = await world.gate.listing(request("rcp-maps", view=ListingView.GRANTS))
    assert isinstance(empty, Listing)
    assert empty.document == {"grants": []} and empty.audit_seq is None


async def test_an_ended_grant_is_not_listed(world: World) -> None:
    from broker.domain.grants import GrantAction

    listed = await world.gate.listing(request("rcp-dealer", view=ListingView.GRANTS))
    assert isinstance(listed, Listing)
    [grant] = [g["grant"] for g in listed.document["grants"]]
    world.db.run_sync(
        lambda s: world.grants.transition(
            s, grant, GrantAction.OBJECT, at=NOW, reason="the owner objects"
        ),
        write=True,
    )
    after = await world.gate.listing(request("rcp-dealer", view=ListingView.GRANTS))
    assert isinstance(after, Listing) and after.document == {"grants": []}


async def test_a_pseudonym_is_not_listed_beside_the_vin_it_stands_for(world: World) -> None:
    # The dealer gets a second, pseudonymised contract: a pull of the same vehicle by
    # both handles would join the pseudonym to the VIN.
    document = json.loads(
        (world.library.samples_dir / "development-partner.json").read_text(encoding="utf-8")
    )
    document.update(id="dealer-quality", recipient="rcp-dealer", channels=["pull"])
    document["processing_countries"] = ["NL"]
    contract = world.library.contract_from_document(document)

    def add(session: Any) -> None:
        contract_store.add(session, contract, at=NOW)
        world.grants.create(session, contract=contract, vin=COUNTRYMAN, at=NOW)
        world.grants.create(session, contract=contract, vin=COOPER, at=NOW)

    world.db.run_sync(add, write=True)
    world.clock.advance(timedelta(seconds=1))
    listing = await world.gate.listing(request("rcp-dealer"))
    assert isinstance(listing, Listing)
    by_contract = {(v["contract"], v["vehicle"][:4]) for v in listing.document["vehicles"]}
    # The Countryman by its VIN only; the Cooper (no identified grant) by its pseudonym.
    assert by_contract == {("dealer-service", "WMWX"), ("dealer-quality", "psn_")}
    assert [r.code for r in listing.withheld] == ["identified_elsewhere"]
    assert entry(world, listing.audit_seq or 0).decision == "partial"


async def test_a_forged_listing_is_refused(world: World) -> None:
    import dataclasses

    listing = await world.gate.listing(request("rcp-dealer"))
    assert isinstance(listing, Listing)
    altered = dataclasses.replace(listing, document={"vehicles": [{"vehicle": COOPER}]})
    with pytest.raises(ForgedRelease):
        verify_listing(altered)
    with pytest.raises(ForgedRelease):
        verify_listing(listing.document)
