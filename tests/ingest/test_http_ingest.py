"""HTTP ingest over real HTTP: partial success, per-record errors, nothing else lost."""

from __future__ import annotations

import base64
import io
import json
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from ingest_app import App
from worlds import COOPER, COOPER_C, NOW

from broker.clock import format_instant
from broker.store.ingest import quarantined, withheld_counts

URL = "/v1/ingest/records"


def record(
    record_id: str,
    *,
    vin: str = COOPER,
    category: str = "vehicle.status",
    minutes_ago: int = 10,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "record_id": record_id,
        "vin": vin,
        "category": category,
        "recorded_at": format_instant(NOW - timedelta(minutes=minutes_ago)),
        "data": data if data is not None else {"mileage_km": 1234.5, "battery_voltage_v": 12.6},
    }


def stored_ids(app: App) -> set[str]:
    rows = app.broker.database.run_sync(
        lambda s: s.execute(sa.text("SELECT id FROM telemetry_record")).scalars().all()
    )
    return set(rows)


async def test_a_clean_batch_is_stored(app: App) -> None:
    batch = [record(f"ok-{i}", minutes_ago=i + 1) for i in range(5)]
    response = await app.client.post(URL, json=batch, headers={"Authorization": app.backend})
    assert response.status == 200
    body = await response.json()
    assert body["summary"] == {
        "received": 5,
        "stored": 5,
        "duplicates": 0,
        "withheld": 0,
        "rejected": 0,
    }
    assert [r["status"] for r in body["results"]] == ["stored"] * 5
    assert stored_ids(app) == {f"ok-{i}" for i in range(5)}


async def test_every_bad_record_gets_its_own_error_and_nothing_else_is_lost(app: App) -> None:
    await app.client.post(URL, json=[record("dup")], headers={"Authorization": app.backend})
    batch = [
        record("good-1"),
        record("wrong-type", data={"mileage_km": "lots"}),
        record("unknown-category", category="vehicle.teleport"),
        record("unknown-vin", vin="WMW00000000000000"),
        record("dup"),
        {"record_id": "missing-fields"},
        record("future", minutes_ago=-60),
        record("good-2", category="vehicle.maintenance", data={"oil_level_pct": 80.0}),
    ]
    response = await app.client.post(
        URL, json={"records": batch}, headers={"Authorization": app.backend}
    )
    assert response.status == 207
    body = await response.json()
    by_id = {r.get("record_id"): r for r in body["results"]}
    assert by_id["good-1"]["status"] == "stored"
    assert by_id["good-2"]["status"] == "stored"
    assert by_id["dup"]["status"] == "duplicate"
    assert by_id["wrong-type"]["code"] == "invalid_data"
    assert "$.data.mileage_km" in by_id["wrong-type"]["message"]
    assert "lots" not in by_id["wrong-type"]["message"]  # values are never echoed
    assert by_id["unknown-category"]["code"] in {"invalid_record", "unknown_category"}
    assert by_id["unknown-vin"]["code"] == "unknown_vehicle"
    assert by_id["missing-fields"]["code"] == "invalid_record"
    assert by_id["future"]["code"] == "recorded_in_future"
    assert body["summary"]["rejected"] == 5
    assert stored_ids(app) == {"dup", "good-1", "good-2"}
    # Every rejected record is quarantined with its reason; its input is kept encrypted.
    kept = app.broker.database.run_sync(lambda s: quarantined(s, app.broker.vault))
    assert {row.reason_code for row, _ in kept} >= {
        "invalid_data",
        "unknown_vehicle",
        "recorded_in_future",
    }
    raw_of = {row.record_id: raw for row, raw in kept}
    assert raw_of["wrong-type"] is not None and b"lots" in raw_of["wrong-type"]


async def test_a_retried_batch_stores_nothing_twice(app: App) -> None:
    batch = [record(f"r-{i}", minutes_ago=i + 1) for i in range(3)]
    first = await (
        await app.client.post(URL, json=batch, headers={"Authorization": app.backend})
    ).json()
    again = await (
        await app.client.post(URL, json=batch, headers={"Authorization": app.backend})
    ).json()
    assert first["summary"]["stored"] == 3
    assert again["summary"] == {
        "received": 3,
        "stored": 0,
        "duplicates": 3,
        "withheld": 0,
        "rejected": 0,
    }
    count = app.broker.database.run_sync(
        lambda s: s.execute(sa.text("SELECT count(*) FROM telemetry_record")).scalar_one()
    )
    assert count == 3


async def test_malformed_json_is_one_clear_request_error(app: App) -> None:
    response = await app.client.post(
        URL,
        data=b'[{"record_id": "x",',
        headers={"Authorization": app.backend, "Content-Type": "application/json"},
    )
    assert response.status == 400
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert "not valid JSON" in problem["detail"] and "nothing was stored" in problem["detail"]
    assert stored_ids(app) == set()


async def test_ndjson_reports_a_malformed_line_and_keeps_the_others(app: App) -> None:
    lines = [json.dumps(record("n-1")), "{not json", "", json.dumps(record("n-2", minutes_ago=3))]
    response = await app.client.post(
        URL,
        data="\n".join(lines).encode(),
        headers={"Authorization": app.backend, "Content-Type": "application/x-ndjson"},
    )
    assert response.status == 207
    body = await response.json()
    assert body["summary"]["stored"] == 2
    [bad] = body["results"]
    assert bad["position"] == 2 and bad["code"] == "malformed"
    assert stored_ids(app) == {"n-1", "n-2"}


async def test_an_oversized_batch_is_refused_whole(app: App) -> None:
    too_many = [record(f"big-{i}") for i in range(5001)]
    response = await app.client.post(URL, json=too_many, headers={"Authorization": app.backend})
    assert response.status == 413
    problem = await response.json()
    assert "5001 records" in problem["detail"] and "x-ndjson" in problem["detail"]
    too_big = io.BytesIO(b"[" + b" " * (2 * 1024 * 1024 + 1) + b"]")
    response = await app.client.post(
        URL,
        data=too_big,
        headers={"Authorization": app.backend, "Content-Type": "application/json"},
    )
    assert response.status == 413
    assert stored_ids(app) == set()


async def test_only_the_backends_ingest_token_may_ingest(app: App) -> None:
    insurer = await app.token("insurer-demo", "demo-secret-insurer-demo")
    for header in (
        None,
        "Basic " + base64.b64encode(b"broker-backend:demo-secret-broker-backend").decode(),
        "Bearer not-a-token",
        insurer,  # a recipient token on the ingest API: refused (authorization matrix)
        app.backend[:-4] + "AAAA",  # a tampered signature
    ):
        headers = {"Authorization": header} if header else {}
        response = await app.client.post(URL, json=[record("sneaky")], headers=headers)
        assert response.status == 401, header
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.content_type == "application/problem+json"
    assert stored_ids(app) == set()


async def test_a_vehicle_with_location_off_stores_no_position(app: App) -> None:
    position = {"latitude": 52.37403, "longitude": 4.88969, "speed_kmh": 30.0}
    batch = [
        record("pos-off", vin=COOPER_C, category="vehicle.position", data=position),
        record("status-off", vin=COOPER_C),
        record("pos-on", vin=COOPER, category="vehicle.position", data=position),
    ]
    body = await (
        await app.client.post(URL, json=batch, headers={"Authorization": app.backend})
    ).json()
    statuses = {r["record_id"]: r["status"] for r in body["results"]}
    assert statuses == {"pos-off": "withheld", "status-off": "stored", "pos-on": "stored"}
    assert stored_ids(app) == {"status-off", "pos-on"}
    counts = app.broker.database.run_sync(lambda s: withheld_counts(s, COOPER_C))
    assert counts == {"vehicle.position": 1}


async def test_unsupported_media_type(app: App) -> None:
    response = await app.client.post(
        URL, data=b"x", headers={"Authorization": app.backend, "Content-Type": "text/csv"}
    )
    assert response.status == 415
