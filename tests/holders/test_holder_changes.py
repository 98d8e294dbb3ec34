"""``POST /v1/holders/changes`` over real HTTP, on both databases (issue 14).

The car maker's backend reports who holds a vehicle: a sale, a driver period's start
and end, a fleet join and leave. Each is applied once per change id (a repeat changes
nothing and answers the same), refused without the ``holders`` scope, and audited as
one entry that names the vehicle by its audit reference, never its VIN.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from ingest_app import App
from worlds import CLUBMAN, COOPER, NOW

from broker.audit.entry import AuditEntry
from broker.clock import format_instant
from broker.domain.grants import GrantState
from broker.store import audit as audit_store
from broker.store import grants as grant_store
from broker.store import parties as party_store
from broker.store.tables import AuditEntryRow, HolderChangeRow, VehiclePartyRow

URL = "/v1/holders/changes"
ANNA_INSURER = "gr-677f38bc93017473"  # anna's consent to the insurer, on her Cooper
FLEET_CLUBMAN = "gr-81ac3a06b35dc15c"  # rcp-fleet's clearance for carla's Clubman
ANNA_DEV_PARTNER = "gr-47f24d04d1060da9"  # vehicle-linked (legitimate interest), on the Cooper


def ago(hours: float) -> str:
    return format_instant(NOW - timedelta(hours=hours))


def change(change_id: str, kind: str, hours_ago: float = 1, **party: str) -> dict[str, Any]:
    return {"change_id": change_id, "kind": kind, "vin": COOPER, "at": ago(hours_ago), **party}


def sale(change_id: str = "sale-0001", to: str = "cus-carla") -> dict[str, Any]:
    return change(change_id, "sale", customer=to)


async def post(app: App, body: Any, token: str | None = "") -> tuple[int, Any]:
    headers = {"Authorization": app.backend if token == "" else token} if token is not None else {}
    response = await app.client.post(URL, json=body, headers=headers)
    return response.status, await response.json(content_type=None)


def holder_entries(app: App) -> list[AuditEntry]:
    rows = app.broker.database.run_sync(
        lambda s: (
            s.execute(
                sa.select(AuditEntryRow.entry)
                .where(AuditEntryRow.kind == "holder_change")
                .order_by(AuditEntryRow.seq)
            )
            .scalars()
            .all()
        )
    )
    return [AuditEntry.from_json(row) for row in rows]


def parties(app: App, vin: str) -> list[tuple[str, str, str | None]]:
    rows = app.broker.database.run_sync(
        lambda s: (
            s.execute(
                sa.select(VehiclePartyRow)
                .where(VehiclePartyRow.vin == vin)
                .order_by(VehiclePartyRow.id)
            )
            .scalars()
            .all()
        )
    )
    return [(r.customer_id, r.role, r.until and format_instant(r.until)) for r in rows]


def grant_state(app: App, grant_id: str) -> GrantState:
    grant = app.broker.database.run_sync(lambda s: grant_store.get(s, grant_id))
    assert grant is not None
    return grant.state


def stored_changes(app: App) -> int:
    return app.broker.database.run_sync(
        lambda s: s.execute(sa.select(sa.func.count()).select_from(HolderChangeRow)).scalar_one()
    )


async def test_a_sale_ends_the_previous_owners_consent_and_a_repeat_changes_nothing(
    app: App,
) -> None:
    assert grant_state(app, ANNA_INSURER) is GrantState.ACTIVE
    status, body = await post(app, sale())
    assert status == 201, body
    assert body == {
        "change_id": "sale-0001",
        "kind": "sale",
        "applied_at": format_instant(NOW),
        "ended_grants": 1,
    }
    assert grant_state(app, ANNA_INSURER) is GrantState.REVOKED
    assert grant_state(app, ANNA_DEV_PARTNER) is GrantState.ACTIVE  # the vehicle's, goes on
    owner = app.broker.database.run_sync(lambda s: party_store.current_owner_row(s, COOPER))
    assert owner is not None and owner.customer_id == "cus-carla"
    holders_before = parties(app, COOPER)

    app.clock.advance(timedelta(minutes=5))  # a retry, later: the first answer, unchanged
    again_status, again = await post(app, sale())
    assert (again_status, again) == (200, body)
    offset = dict(sale(), at=sale()["at"].replace("Z", "+00:00"))  # the same instant
    assert await post(app, offset) == (200, body)
    assert parties(app, COOPER) == holders_before
    entries = holder_entries(app)
    assert len(entries) == 1
    assert entries[0].grant_ids == (ANNA_INSURER,)


async def test_the_same_change_id_with_another_change_is_a_conflict(app: App) -> None:
    assert (await post(app, sale()))[0] == 201
    holders_before = parties(app, COOPER)
    for other in (sale(to="cus-bram"), change("sale-0001", "driver_started", customer="cus-bram")):
        status, problem = await post(app, other)
        assert status == 409, problem
        assert problem["type"] == "urn:vehicle-data-broker:problem:change_id_reused"
        assert problem["status"] == 409
    assert parties(app, COOPER) == holders_before
    assert len(holder_entries(app)) == 1


async def test_refused_without_the_holders_scope_or_without_a_token(app: App) -> None:
    ingest_only = await app.token("broker-backend", "demo-secret-broker-backend", "ingest")
    response = await app.client.post(URL, json=sale(), headers={"Authorization": ingest_only})
    assert response.status == 403
    assert response.content_type == "application/problem+json"
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    assert 'scope="holders"' in response.headers["WWW-Authenticate"]
    assert (await response.json())["type"].endswith(":insufficient_scope")

    assert (await post(app, sale(), token=None))[0] == 401
    recipient = await app.token("insurer-demo", "demo-secret-insurer-demo")
    assert (await post(app, sale(), token=recipient))[0] == 401  # not the backend's kind
    assert grant_state(app, ANNA_INSURER) is GrantState.ACTIVE
    assert stored_changes(app) == 0
    assert holder_entries(app) == []


async def test_every_change_is_one_audit_entry_naming_no_vin_and_no_customer(app: App) -> None:
    changes = [
        change("c-1", "driver_started", 5, customer="cus-carla"),
        change("c-2", "driver_ended", 4, customer="cus-carla"),
        change("c-3", "fleet_joined", 3, operator="rcp-fleet"),
        change("c-4", "fleet_left", 2, operator="rcp-fleet"),
        change("c-5", "sale", 1, customer="cus-carla"),
    ]
    for one in changes:
        status, body = await post(app, one)
        assert status == 201, (one["kind"], body)
    entries = holder_entries(app)
    assert [e.details["change"] for e in entries] == [c["kind"] for c in changes]
    assert [e.details["change_id"] for e in entries] == [c["change_id"] for c in changes]
    reference = app.broker.keyring.vehicle_ref(COOPER)
    for entry in entries:
        assert entry.kind == "holder_change" and entry.decision == "recorded"
        assert entry.subject_ref == reference
        text = json.dumps(entry.to_json())
        assert COOPER not in text
        assert "cus-" not in text
    assert entries[-1].grant_ids == (ANNA_INSURER,)
    assert all(e.grant_ids == () for e in entries[:-1])
    verified = app.broker.database.run_sync(lambda s: audit_store.verify(s, None))
    assert verified.ok, verified.problem


async def test_fleet_joins_and_leaves_change_the_membership(app: App) -> None:
    def memberships(vin: str) -> list[tuple[str, str | None]]:
        found = app.broker.database.run_sync(lambda s: party_store.fleet_memberships(s, vin))
        return [(m.fleet_operator_id, m.period.end and format_instant(m.period.end)) for m in found]

    assert memberships(COOPER) == []
    assert (await post(app, change("j-1", "fleet_joined", 3, operator="rcp-fleet")))[0] == 201
    assert memberships(COOPER) == [("rcp-fleet", None)]
    twice = await post(app, change("j-2", "fleet_joined", 2, operator="rcp-fleet"))
    assert twice[0] == 409, twice
    left = await post(app, change("l-1", "fleet_left", 2, operator="rcp-fleet"))
    assert left[0] == 201 and left[1]["ended_grants"] == 0
    assert memberships(COOPER) == [("rcp-fleet", ago(2))]
    assert (await post(app, change("l-2", "fleet_left", 1, operator="rcp-fleet")))[0] == 404

    clubman = dict(change("l-3", "fleet_left", 1, operator="rcp-fleet"), vin=CLUBMAN)
    status, body = await post(app, clubman)
    assert (status, body["ended_grants"]) == (201, 1)
    assert grant_state(app, FLEET_CLUBMAN) is GrantState.EXPIRED
    assert holder_entries(app)[-1].grant_ids == (FLEET_CLUBMAN,)

    unknown = await post(app, change("j-3", "fleet_joined", operator="rcp-nobody"))
    assert unknown[0] == 404
    insurer = await post(app, change("j-4", "fleet_joined", operator="rcp-insurer"))
    assert insurer[0] == 409  # only a fleet operator has a fleet


async def test_a_driver_period_starts_and_ends(app: App) -> None:
    started = await post(app, change("d-1", "driver_started", 3, customer="cus-carla"))
    assert started[0] == 201, started
    assert ("cus-carla", "secondary_driver", None) in parties(app, COOPER)
    ended = await post(app, change("d-2", "driver_ended", 2, customer="cus-carla"))
    assert ended[0] == 201, ended
    assert ("cus-carla", "secondary_driver", ago(2)) in parties(app, COOPER)
    again = await post(app, change("d-3", "driver_ended", 1, customer="cus-carla"))
    assert again[0] == 404  # no open period left
    early = await post(app, change("d-4", "driver_ended", 24 * 365 * 3, customer="cus-bram"))
    assert early[0] == 409  # before bram's period started


async def test_a_change_that_cannot_apply_is_refused_and_nothing_is_kept(app: App) -> None:
    missing = dict(sale())
    del missing["customer"]
    status, problem = await post(app, missing)
    assert status == 422
    assert [e["path"] for e in problem["errors"]] == ["$"]
    bad_vin = dict(sale(), vin="WMWXR31002TA1000I")  # an I: never in a VIN
    status, problem = await post(app, bad_vin)
    assert status == 422
    assert "WMWXR31002TA1000I" not in json.dumps(problem)
    assert (await post(app, dict(sale(), vin="WMW00000000000000")))[0] == 404
    assert (await post(app, dict(sale(), customer="cus-nobody")))[0] == 404
    assert (await post(app, dict(sale(), at=ago(-1))))[0] == 422  # in the future
    assert (await post(app, sale(to="cus-anna")))[0] == 409  # she owns it already
    assert stored_changes(app) == 0
    assert holder_entries(app) == []
    # Nothing was kept, so the id is still free for the change the backend meant.
    assert (await post(app, sale()))[0] == 201
