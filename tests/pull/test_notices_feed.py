"""The notices feed names grants and vehicles: each page that lists one is one audit entry.

It is the written exception (GDPR Art. 17(2), 19): a suspended recipient still reads
the notices of the grants it received data under, and the entry records the
destination countries and the transfer mechanism's state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from ingest_app import App, start_app
from worlds import COOPER

from broker.audit.entry import AuditEntry
from broker.domain.grants import GrantAction
from broker.gate.release import document_digest
from broker.store import audit as audit_store
from broker.store.tables import RecipientRow

INSURER = ("insurer-demo", "demo-secret-insurer-demo")


@pytest.fixture
async def app(database_url: str, tmp_path: Path, aiohttp_client: Any) -> App:
    return await start_app(database_url, tmp_path, aiohttp_client, webhook_worker=False)


def entries(app: App, kind: str) -> list[AuditEntry]:
    found = app.broker.database.run_sync(lambda s: audit_store.read(s, start=0, limit=10**6))
    return [e for e in found if e.kind == kind]


async def feed(app: App, token: str, **params: str) -> dict[str, Any]:
    response = await app.client.get(
        "/v1/recipient/notices", params=params, headers={"Authorization": token}
    )
    body: dict[str, Any] = await response.json()
    assert response.status == 200, body
    return body


async def test_each_page_naming_a_notice_is_one_audit_entry(app: App) -> None:
    token = await app.token(*INSURER, "vehicle.status:read")
    broker = app.broker
    broker.database.run_sync(
        lambda s: broker.grants.transition(
            s, "gr-677f38bc93017473", GrantAction.WITHDRAW, at=broker.clock.now(), reason="t"
        ),
        write=True,
    )
    suspend = (
        sa.update(RecipientRow)
        .where(sa.column("id") == "rcp-insurer")
        .values(status="suspended", processing_countries=["NL", "US"])
    )
    broker.database.run_sync(lambda s: s.execute(suspend), write=True)

    before = len(entries(app, "notice_feed"))
    first = await feed(app, token, limit="1")
    [notice] = first["notices"]
    assert notice["grant"] == "gr-677f38bc93017473" and notice["vehicle"] == COOPER
    [entry] = entries(app, "notice_feed")[before:]
    assert first["release"] == {"audit_seq": entry.seq, "digest": entry.payload_digest}
    assert entry.payload_digest == document_digest(first["notices"])
    assert (
        entry.grant_ids == ("gr-677f38bc93017473",) and entry.subject_ref == "gr-677f38bc93017473"
    )
    assert entry.channel == "pull" and entry.legal_basis == "6(1)(a)"
    assert entry.destination_countries == ("NL", "US")
    assert entry.details["transfer"] == "not_allowed" and entry.details["recipient"] == "suspended"

    again = await feed(app, token, limit="1")
    assert len(entries(app, "notice_feed")) == before + 2  # every answer that names one
    assert again["release"]["audit_seq"] != first["release"]["audit_seq"]

    ack = await app.client.post(
        f"/v1/recipient/notices/{notice['id']}/acknowledgement", headers={"Authorization": token}
    )
    answered = await ack.json()
    assert ack.status == 200
    [acked] = [e for e in entries(app, "notice_ack") if e.subject_ref == "gr-677f38bc93017473"]
    assert acked.payload_digest == document_digest(answered)
    empty = await feed(app, token)
    assert empty["notices"] == [] and "release" not in empty  # names no one: not audited
    assert len(entries(app, "notice_feed")) == before + 2
