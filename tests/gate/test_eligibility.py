"""The gate's eligibility decision: its checks come before the VIN is decoded, the answer
depends on the model only, and each decision is one audit entry naming the vehicle."""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa
from worlds import COOPER, COOPER_C, World

from broker.audit.entry import AuditEntry
from broker.domain.vehicle_models import VehicleModel, VehicleModels
from broker.gate.release import Denial, Eligibility
from broker.store import audit as audit_store
from broker.store.tables import RecipientRow


class Untouchable(VehicleModels):
    """A catalogue that fails the test if any VIN is decoded."""

    def __init__(self) -> None:
        super().__init__(1, [], [])

    def decode(self, vin: str) -> VehicleModel | None:
        raise AssertionError("the VIN was decoded")


def entries(world: World) -> list[AuditEntry]:
    found = world.db.run_sync(lambda s: audit_store.read(s, start=0, limit=10_000))
    return [e for e in found if e.kind == "eligibility"]


async def test_an_anonymised_contract_is_refused_before_any_vin_is_decoded(world: World) -> None:
    refused = await world.gate.eligibility(
        "rcp-maps", "map-provider-anonymised", COOPER, models=Untouchable()
    )
    assert isinstance(refused, Denial) and refused.codes == ("anonymised_contract",)
    [entry] = entries(world)
    assert entry.decision == "denied" and entry.categories == ()
    assert entry.subject_ref == world.gate.keyring.vehicle_ref(COOPER)


async def test_a_suspended_recipient_or_a_foreign_contract_decodes_nothing(world: World) -> None:
    foreign = await world.gate.eligibility(
        "rcp-dealer", "insurer-ubi", COOPER, models=Untouchable()
    )
    assert isinstance(foreign, Denial) and foreign.codes == ("unknown_contract",)
    suspend = (
        sa.update(RecipientRow).where(sa.column("id") == "rcp-dealer").values(status="suspended")
    )
    world.db.run_sync(lambda s: s.execute(suspend), write=True)
    suspended = await world.gate.eligibility(
        "rcp-dealer", "dealer-service", COOPER, models=Untouchable()
    )
    assert isinstance(suspended, Denial) and suspended.codes == ("recipient_suspended",)
    assert [e.subject_ref for e in entries(world)] == [world.gate.keyring.vehicle_ref(COOPER)] * 2


async def test_the_answer_is_one_entry_with_the_digest_of_the_document(world: World) -> None:
    models = world.library.vehicle_models
    answer = await world.gate.eligibility("rcp-fleet", "fleet-operator", COOPER_C, models=models)
    assert isinstance(answer, Eligibility)
    assert answer.document == {
        "contract": "fleet-operator",
        "eligible": True,
        "categories": ["vehicle.maintenance", "vehicle.position", "vehicle.status"],
    }
    canonical = json.dumps(answer.document, sort_keys=True, separators=(",", ":"))
    [entry] = entries(world)
    assert entry.seq == answer.audit_seq and entry.decision == "released"
    assert entry.payload_digest == answer.digest == hashlib.sha256(canonical.encode()).hexdigest()
    assert entry.subject_ref == world.gate.keyring.vehicle_ref(COOPER_C)
    assert entry.destination_countries and entry.legal_basis and entry.protection == "identified"
    assert COOPER_C not in entry.canonical_bytes().decode()  # no VIN in the audit log
