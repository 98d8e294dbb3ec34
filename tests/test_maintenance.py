"""Housekeeping in one round: retention purge, sessions, and a signed audit checkpoint."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from ingest_app import App, start_app
from worlds import COOPER, NOW

from broker.audit.checkpoint import CheckpointSigner
from broker.maintenance import housekeeping
from broker.store import audit as audit_store
from broker.store import rate_limits


async def test_housekeeping_purges_checkpoints_and_cleans_sessions(
    database_url: str, tmp_path: Path, aiohttp_client: object
) -> None:
    app: App = await start_app(database_url, tmp_path, aiohttp_client)
    old = {
        "record_id": "old-1", "vin": COOPER, "category": "vehicle.status",
        "recorded_at": (NOW - timedelta(days=40)).isoformat().replace("+00:00", "Z"),
        "data": {"mileage_km": 1.0},
    }  # fmt: skip
    response = await app.client.post(
        "/v1/ingest/records", json=[old], headers={"Authorization": app.backend}
    )
    assert (await response.json())["summary"]["stored"] == 1
    # A rate-limit window that has ended, and one still open.
    for at in (NOW - timedelta(hours=2), app.broker.clock.now()):
        app.broker.database.run_sync(
            lambda s, at=at: rate_limits.take(
                s, "contract:x", limit=5, per=timedelta(minutes=1), now=at
            ),
            write=True,
        )
    done = housekeeping(app.broker)
    assert done["rate_windows_dropped"] == 1
    assert done["purged"]["telemetry:vehicle.status"]["count"] == 1
    size = app.broker.database.run_sync(audit_store.size)
    assert done["audit_checkpoint"]["size"] == size
    verifier = CheckpointSigner.from_file(app.broker.audit_key_file).verifier()
    result = app.broker.database.run_sync(lambda s: audit_store.verify(s, verifier))
    assert result.ok and result.checkpoint_size == size
