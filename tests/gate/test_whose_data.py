"""Every gate entry names whose data it concerns, so the customer's history can show it.

Before issue 13 a pull asking for no category the grant covers, or refused before any
grant was read (suspended recipient, ended contract), was audited with no grant ids
and an empty subject: no customer could ever see it.
"""

from __future__ import annotations

import sqlalchemy as sa
from gate.test_gate import HOUR, insurer
from worlds import COOPER, NOW, World

from broker.audit.entry import AuditEntry
from broker.domain.contracts import Channel
from broker.gate.release import Denial, ReleaseRequest, VehicleTarget
from broker.store import audit as audit_store
from broker.store.tables import RecipientRow

#: Nobody's vehicle: not in the seed.
UNKNOWN = "WMWXX00000XX00000"


def entry(world: World, seq: int) -> AuditEntry:
    [found] = world.db.run_sync(lambda s: audit_store.read(s, start=seq, limit=1))
    return found


async def test_a_pull_of_no_covered_category_names_the_grant(world: World) -> None:
    outcome = await world.gate.release(insurer({"vehicle.sensor"}))  # not in the contract
    assert isinstance(outcome, Denial)
    found = entry(world, outcome.audit_seq)
    assert found.grant_ids == ("gr-677f38bc93017473",)
    assert found.subject_ref == "gr-677f38bc93017473"


async def test_a_pull_with_zero_categories_names_the_grant(world: World) -> None:
    outcome = await world.gate.release(insurer(set()))
    found = entry(world, outcome.audit_seq)
    assert found.grant_ids == ("gr-677f38bc93017473",)
    assert found.subject_ref == "gr-677f38bc93017473"


async def test_a_refusal_before_any_grant_names_the_grants_concerned(world: World) -> None:
    update = sa.update(RecipientRow).where(sa.column("id") == "rcp-insurer")
    world.db.run_sync(lambda s: s.execute(update.values(status="suspended")), write=True)
    outcome = await world.gate.release(insurer({"vehicle.status"}))
    assert isinstance(outcome, Denial)
    found = entry(world, outcome.audit_seq)
    assert found.grant_ids == ("gr-677f38bc93017473",)
    assert found.subject_ref == "gr-677f38bc93017473"


async def test_a_vehicle_without_a_grant_is_named_by_its_audit_reference(world: World) -> None:
    outcome = await world.gate.release(insurer({"vehicle.status"}, vin=UNKNOWN))
    assert isinstance(outcome, Denial)
    found = entry(world, outcome.audit_seq)
    assert found.grant_ids == ()
    assert found.subject_ref == world.gate.keyring.vehicle_ref(UNKNOWN)
    assert UNKNOWN not in str(found.to_json())


async def test_a_refused_channel_names_the_grant(world: World) -> None:
    request = ReleaseRequest(
        recipient_id="rcp-maps", contract_id="map-provider-anonymised", channel=Channel.PULL,
        purpose="map-improvement", target=VehicleTarget(COOPER),
        categories=frozenset({"vehicle.position"}), since=NOW - HOUR, until=NOW,
    )  # fmt: skip
    outcome = await world.gate.release(request)
    assert isinstance(outcome, Denial)  # the channel is not the contract's
    found = entry(world, outcome.audit_seq)
    assert found.subject_ref == "gr-8e6171f0a9406b32"
    assert found.grant_ids == ("gr-8e6171f0a9406b32",)
