"""The location switches: effective for ingest and every channel at once, audited, and
only an owner can switch location back on."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from worlds import COOPER, NOW

from broker.audit.entry import AuditEntry
from broker.domain.contracts import Channel
from broker.gate.release import Release
from broker.store import audit as audit_store

OFF = {"collection": False, "sharing": False}
ON = {"collection": True, "sharing": True}


def released_categories(outcome: Any) -> set[str]:
    assert isinstance(outcome, Release), outcome
    return {r["category"] for r in outcome.payload.records}


async def test_switching_location_off_stops_every_position_at_once(kit: Any) -> None:
    at = NOW - timedelta(hours=1)
    stored = kit.ingest(
        [
            kit.record("p-before", COOPER, "vehicle.position", at, kit.POSITION),
            kit.record("s-before", COOPER, "vehicle.status", at, kit.STATUS),
        ]
    )
    assert stored.stored == 2
    assert released_categories(await kit.release()) == {"vehicle.position", "vehicle.status"}

    token = await kit.token("anna")
    status, body, _ = await kit.api("PUT", f"/v1/me/vehicles/{COOPER}/location", token, json=OFF)
    assert status == 200, body
    assert body["location"] == OFF

    # Ingest keeps no new position ...
    later = kit.ingest([kit.record("p-after", COOPER, "vehicle.position", NOW, kit.POSITION)])
    assert [r.status for r in later.results] == ["withheld"]
    # ... and no recipient receives one, even those stored before: pull ...
    assert released_categories(await kit.release()) == {"vehicle.status"}
    # ... and the anonymised maps export (a population release) alike.
    maps = await kit.release(
        recipient="rcp-maps",
        contract="map-provider-anonymised",
        purpose="maps-and-traffic",
        channel=Channel.EXPORT,
        categories=frozenset({"vehicle.position"}),
        vin=None,
    )
    assert not isinstance(maps, Release) or "vehicle.position" not in released_categories(maps)

    # The change is audited, without the VIN.
    def entries(session: Any) -> list[AuditEntry]:
        return audit_store.read(session, limit=10_000)

    logged = [e for e in kit.site.broker.database.run_sync(entries) if e.kind == "location_setting"]
    assert len(logged) == 1
    assert logged[0].details == {"collection": False, "sharing": False,
                                 "previous": {"collection": True, "sharing": True}}  # fmt: skip
    assert COOPER not in str(logged[0].to_json())

    # Switched back on, new positions are kept and shared again.
    status, body, _ = await kit.api("PUT", f"/v1/me/vehicles/{COOPER}/location", token, json=ON)
    assert status == 200 and body["location"] == ON
    again = kit.ingest(
        [kit.record("p-on", COOPER, "vehicle.position", NOW + timedelta(minutes=1), kit.POSITION)]
    )
    assert [r.status for r in again.results] == ["stored"]


async def test_sharing_off_alone_keeps_collecting_but_shares_nothing(kit: Any) -> None:
    token = await kit.token("anna")
    body = {"collection": True, "sharing": False}
    assert (await kit.api("PUT", f"/v1/me/vehicles/{COOPER}/location", token, json=body))[0] == 200
    stored = kit.ingest(
        [kit.record("p-1", COOPER, "vehicle.position", NOW - timedelta(minutes=5), kit.POSITION)]
    )
    assert [r.status for r in stored.results] == ["stored"]
    outcome = await kit.release(categories=frozenset({"vehicle.position", "vehicle.status"}))
    assert not isinstance(outcome, Release) or "vehicle.position" not in released_categories(
        outcome
    )


async def test_a_driver_can_switch_location_off_but_only_the_owner_on(kit: Any) -> None:
    bram = await kit.token("bram")  # secondary driver of anna's Cooper
    path = f"/v1/me/vehicles/{COOPER}/location"
    assert (await kit.api("PUT", path, bram, json=OFF))[0] == 200
    status, problem, _ = await kit.api("PUT", path, bram, json=ON)
    assert status == 403, problem
    anna = await kit.token("anna")
    _, vehicles, _ = await kit.api("GET", "/v1/me/vehicles", anna)
    assert vehicles["vehicles"][0]["location"] == OFF
    assert (await kit.api("PUT", path, anna, json=ON))[0] == 200


async def test_a_malformed_body_is_refused(kit: Any) -> None:
    token = await kit.token("anna")
    path = f"/v1/me/vehicles/{COOPER}/location"
    for body in ({"collection": "no", "sharing": False}, {"collection": False}, [False, False]):
        assert (await kit.api("PUT", path, token, json=body))[0] == 400
    assert (await kit.api("PUT", path, token, data="collection=0"))[0] == 400
