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

BACKEND_BASIC = "Basic " + base64.b64encode(b"broker-backend:demo-secret-broker-backend").decode()


@dataclass
class App:
    client: TestClient  # type: ignore[type-arg]
    broker: Broker
    clock: ManualClock
    backend: str = ""  # "Bearer <token>" of the car maker's backend (scope ingest)

    async def token(self, client_id: str, secret: str, scope: str | None = None) -> str:
        """A client-credentials access token, as ``Bearer <token>``."""
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        form = {"grant_type": "client_credentials"} | ({"scope": scope} if scope else {})
        response = await self.client.post(
            "/oauth/token", data=form, headers={"Authorization": f"Basic {basic}"}
        )
        body = await response.json()
        assert response.status == 200, body
        return f"Bearer {body['access_token']}"


async def start_app(
    database_url: str,
    tmp_path: Path,
    aiohttp_client: object,
    *,
    port: int | None = None,
    **overrides: object,
) -> App:
    settings = replace(
        Settings(),
        database_url=database_url,
        master_key_file=tmp_path / "master.key",
        audit_key_file=tmp_path / "audit.key",
        oauth_keys_dir=tmp_path / "oauth-keys",
        max_ingest_bytes=2 * 1024 * 1024,
    )
    if port is not None:
        settings = replace(settings, public_url=f"http://127.0.0.1:{port}")
    settings = replace(settings, **overrides)  # type: ignore[arg-type]
    clock = ManualClock(NOW)
    web_app = create_web_app(settings, clock=clock)
    assert callable(aiohttp_client)
    server_kwargs = {"port": port} if port is not None else {}
    client = await aiohttp_client(web_app, server_kwargs=server_kwargs)
    broker = web_app[RUNTIME].require()
    seed = read_seed(broker.documents, ROOT / "examples" / "demo-seed.json")
    broker.database.run_sync(
        lambda s: apply_seed(s, seed, broker.grants, vault=broker.vault, now=NOW), write=True
    )
    app = App(client, broker, clock)
    app.backend = await app.token("broker-backend", "demo-secret-broker-backend", "ingest")
    return app


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
