"""Encryption at rest: no clear position or e-mail address anywhere, and erasure shreds."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from ingest_app import App
from worlds import COOPER, NOW

from broker.audit.checkpoint import CheckpointSigner
from broker.clock import format_instant
from broker.domain.contracts import Channel
from broker.gate.release import Denial, Release, ReleaseRequest, VehicleTarget
from broker.services.erasure import erase_customer_and_end_grants
from broker.store import audit as audit_store
from broker.store.tables import metadata
from broker.vault.contacts import load_contact

LATITUDE = "52.123457"
LONGITUDE = "4.987653"
EMAIL = "anna.devries@example.nl"
SECRETS = (LATITUDE.encode(), LONGITUDE.encode(), EMAIL.encode(), b"Anna de Vries")


def position(
    record_id: str, vin: str = COOPER, category: str = "vehicle.position"
) -> dict[str, Any]:
    return {
        "record_id": record_id,
        "vin": vin,
        "category": category,
        "recorded_at": format_instant(NOW - timedelta(minutes=5)),
        "data": {"latitude": float(LATITUDE), "longitude": float(LONGITUDE), "speed_kmh": 42.0},
    }


def table_dump(app: App) -> bytes:
    """Every row of every table, as text."""

    def dump(session: Any) -> bytes:
        chunks = []
        for table in metadata.sorted_tables:
            for row in session.execute(sa.select(table)).all():
                chunks.append(repr(tuple(row)).encode())
        return b"\n".join(chunks)

    return bytes(app.broker.database.run_sync(dump))


def raw_files(app: App) -> bytes:
    if not app.broker.database.is_sqlite:
        return b""
    path = Path(app.broker.database.url.database or "")
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-journal")]
    return b"".join(f.read_bytes() for f in files if f.exists())


async def test_no_clear_position_or_email_in_any_table_or_file(app: App) -> None:
    batch = [
        position("pos-1"),
        position("pos-unknown-vehicle", vin="WMW00000000000000"),  # quarantined
        position("pos-bad-category", category="vehicle.teleport"),  # quarantined
    ]
    response = await app.client.post(
        "/v1/ingest/records", json=batch, headers={"Authorization": app.backend}
    )
    assert response.status == 207
    assert (await response.json())["summary"]["stored"] == 1
    # The data is there, and readable by the broker...
    contact = app.broker.database.run_sync(lambda s: load_contact(s, app.broker.vault, "cus-anna"))
    assert contact is not None and contact["email"] == EMAIL
    # ...but not in clear in any table, nor in the database files (SQLite: main file and WAL).
    for where, content in (("tables", table_dump(app)), ("files", raw_files(app))):
        for secret in SECRETS:
            assert secret not in content, f"{secret!r} in clear in the {where}"
    if app.broker.database.is_sqlite:
        assert raw_files(app), "the SQLite files must have been scanned"


async def test_erasure_shreds_and_the_audit_log_still_verifies(app: App, tmp_path: Path) -> None:
    body = await (
        await app.client.post(
            "/v1/ingest/records", json=[position("pos-2")], headers={"Authorization": app.backend}
        )
    ).json()
    assert body["summary"]["stored"] == 1
    request = ReleaseRequest(
        recipient_id="rcp-insurer",
        contract_id="insurer-ubi",
        channel=Channel.PULL,
        purpose="usage-based-insurance",
        target=VehicleTarget(COOPER),
        categories=frozenset({"vehicle.position"}),
        since=NOW - timedelta(hours=1),
        until=NOW,
    )
    before = await app.broker.gate.release(request)
    assert isinstance(before, Release) and len(before.payload.records) == 1
    signer = CheckpointSigner.from_file(app.broker.audit_key_file)
    app.broker.database.run_sync(lambda s: audit_store.write_checkpoint(s, signer, NOW), write=True)

    report = app.broker.database.run_sync(
        lambda s: erase_customer_and_end_grants(
            s, app.broker.vault, app.broker.grants, "cus-anna", NOW + timedelta(minutes=1)
        ),
        write=True,
    )
    assert report.data_keys_destroyed == 1
    assert (
        app.broker.database.run_sync(lambda s: load_contact(s, app.broker.vault, "cus-anna"))
        is None
    )
    # The stored ciphertext can no longer be decrypted, by anyone.
    app.broker.vault.clear_cache()
    owner_blob = app.broker.database.run_sync(
        lambda s: s.execute(
            sa.text("SELECT key_owner, ciphertext FROM telemetry_record WHERE id = 'pos-2'")
        ).one()
    )
    from broker.store.telemetry_write import telemetry_aad

    aad = telemetry_aad("pos-2", COOPER, "vehicle.position")
    decrypted = app.broker.database.run_sync(
        lambda s: app.broker.vault.decrypt(s, owner_blob[0], owner_blob[1], aad)
    )
    assert decrypted is None
    # The consent grant ended with the erasure: the insurer gets nothing, and was told to erase.
    after = await app.broker.gate.release(request)
    assert isinstance(after, Denial)
    result = app.broker.database.run_sync(lambda s: audit_store.verify(s, signer.verifier()))
    assert result.ok, result.problem
