"""A running broker web app on a test database, with the demo seed loaded (``ingest_app``)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace
from pathlib import Path

from aiohttp.test_utils import TestClient
from worlds import NOW, ROOT

from broker.bootstrap import RUNTIME, Broker, create_web_app
from broker.clock import ManualClock
from broker.services.seed import apply_seed, read_seed
from broker.settings import Settings

BACKEND = "Basic " + base64.b64encode(b"broker-backend:demo-secret-broker-backend").decode()


@dataclass
class App:
    client: TestClient  # type: ignore[type-arg]
    broker: Broker
    clock: ManualClock


async def start_app(
    database_url: str, tmp_path: Path, aiohttp_client: object, **overrides: object
) -> App:
    settings = replace(
        Settings(),
        database_url=database_url,
        master_key_file=tmp_path / "master.key",
        audit_key_file=tmp_path / "audit.key",
        max_ingest_bytes=2 * 1024 * 1024,
    )
    settings = replace(settings, **overrides)  # type: ignore[arg-type]
    clock = ManualClock(NOW)
    web_app = create_web_app(settings, clock=clock)
    assert callable(aiohttp_client)
    client = await aiohttp_client(web_app)
    broker = web_app[RUNTIME].require()
    seed = read_seed(broker.documents, ROOT / "examples" / "demo-seed.json")
    broker.database.run_sync(
        lambda s: apply_seed(s, seed, broker.grants, vault=broker.vault, now=NOW), write=True
    )
    return App(client, broker, clock)
